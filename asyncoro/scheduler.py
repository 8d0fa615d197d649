"""asyncoro.scheduler: the discoro scheduler.

What it owns: `Scheduler` (the scheduler in a client process, or the heart
of the discoro.py program) and its service, `discoro_scheduler`: the nodes it
knows, the computation it runs (one at a time; later ones wait in order),
that computation's servers and jobs. asyncoro.discoro is its public home.

How it works:

- Nodes: the scheduler hears of peers through `peer_status`, asks each new
  one whether it runs `discoro_node`, and uses every node for the
  computation it runs: reserve it, send it the component files, have it set
  up (node_setup, server processes). Each server introduces itself; when it
  is set up (server_setup) it takes jobs.
- A node that cannot take the computation (it refuses, a file is too large,
  node_setup fails, its servers cannot start, ...) is left out of it, once,
  with one WARNING saying why and NodeClosed for the client if it had been
  announced; it is not asked again for that computation. When every node
  known has been left out, requests for servers fail at once, naming the
  reasons; with no node at all they wait (the client says why after a
  while: `WAITING`).
- Jobs: a CPU job takes a free server (one CPU job per server), first come
  first served; an async job goes to the least busy server. The server
  starts the coroutine with the scheduler as its monitor; the job's end
  frees the server, answers run_result* and goes on to status_coro.
- Faults: a node reports a server that died at once, and the scheduler sees
  a server's or node's connection go; a node whose pulses stop for 5 of its
  pulse intervals is dropped.
"""

import collections
import logging
import os
import random
import shutil
import time

import gevent
import gevent.event

from asyncoro.core import _msg_timeout
from asyncoro.disasyncoro import (AsynCoro, Coro, Location, MonitorException, PeerStatus,
                                  Singleton, SysCoro, env_port)
from asyncoro.failure import Failure, NoAnswer, spawn
from asyncoro.programs import claim_folder
from asyncoro.placement import Placement
from asyncoro.records import (DEFAULT_NODE_PORT, DiscoroCoroInfo, DiscoroError, DiscoroJobLost,
                              DiscoroStatus,
                              JobNotCreated, MaxPulseInterval, ServerLost, servers_for,
                              upload_dir)
from asyncoro.service import (CLOSE, ENABLE_NODE, ENABLE_SERVER, ENDS_HEARD, JOB, NODE_AVAILABLE,
                              NODE_CLOSE, NODE_CLOSED, NODE_DRAINING, NODE_INFO, NODE_SETUP, NODES,
                              PEERS, PING, PULSE, RESERVE, RESULT, RUN, SCHEDULE, SERVER_CLOSE,
                              SERVER_CLOSED, SERVER_SETUP, SERVER_UP, SERVERS, UNWATCH, WAITING,
                              WATCH, Service, answers)

__all__ = ['Scheduler']

log = logging.getLogger(__name__)


class Scheduler(metaclass=Singleton):
    """The discoro scheduler inside this process: call ``Scheduler()`` once,
    before ``computation.schedule()``. It is a singleton: later calls give
    the same scheduler and ignore their arguments.

    It takes :class:`~asyncoro.disasyncoro.AsynCoro`'s options (ignored if a
    runtime exists already; its name is always ``discoro_scheduler``), and:

    :param ping_interval: ask for nodes again (on this network, and at the
        hosts of `nodes`) every this many seconds (0: only at the start).
    :param zombie_period: close a computation whose client is unreachable,
        or that has run no job, for this many seconds (0: never).
    :param discoronode_port: the UDP port nodes listen on
        (``$ASYNCORO_DISCORONODE_PORT``, else 51351).
    :param clean: empty the scheduler's folder first.
    :param nodes: node hosts to ask directly (in other networks).
    :param pulse_interval: accepted, as in asyncoro 4.5, and not used.

    Its files go to a folder of its own under ``<dest_path>/discoro``
    (``scheduler-<n>``, claimed for this process alone), which becomes the
    runtime's dest_path. The status codes (``Scheduler.NodeDiscovered`` ...)
    are the ``status`` of :class:`~asyncoro.discoro.DiscoroStatus` messages.
    """

    NodeDiscovered = 1
    NodeInitialized = 2
    NodeClosed = 3
    NodeIgnore = 4
    NodeDisconnected = 5
    ServerDiscovered = 11
    ServerInitialized = 12
    ServerClosed = 13
    ServerIgnore = 14
    ServerDisconnected = 15
    CoroCreated = 20
    ComputationScheduled = 23
    ComputationClosed = 25

    def __init__(self, **kwargs):
        self._node_port = (kwargs.pop('discoronode_port', None) or
                           env_port('ASYNCORO_DISCORONODE_PORT', DEFAULT_NODE_PORT))
        kwargs.pop('pulse_interval', None)     # the timer period before a computation: unused
        self._ping_interval = kwargs.pop('ping_interval', 0) or 0
        self._zombie_period = kwargs.pop('zombie_period', 100 * MaxPulseInterval) or 0
        clean = kwargs.pop('clean', False)
        nodes = kwargs.pop('nodes', None) or []
        if isinstance(nodes, str):
            nodes = [nodes]
        kwargs['name'] = 'discoro_scheduler'
        rt = AsynCoro.instance(**kwargs)
        if not isinstance(rt, AsynCoro):
            raise DiscoroError('the runtime of this process was started without networking; '
                               'call Scheduler() (or asyncoro.disasyncoro.AsynCoro) before '
                               'creating coroutines')
        # a folder of its own: never one a node (or another scheduler) cleans
        rt.dest_path = claim_folder(os.path.join(rt.root_dest_path, 'discoro'), 'scheduler')
        if clean:
            for entry in os.listdir(rt.dest_path):
                path = os.path.join(rt.dest_path, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        self._rt = rt
        self._nodes = nodes
        self._service = rt._run_here(_SchedulerService, self)
        rt.peer_status(self._service.coro)
        rt.discover_peers(port=self._node_port)
        for node in nodes:
            rt.peer(node, udp_port=self._node_port, broadcast=True)
        if self._ping_interval:
            rt._run_here(spawn, self._service.rebroadcast, self._ping_interval)

    def status(self):
        """What the scheduler is doing.

        :returns: a dict: ``Client`` (the current computation's client
            Location, or None), ``Pending`` (computations queued), ``Nodes``
            (a DiscoroNodeInfo for each node known), ``Servers``
            (``{location: jobs running}``).
        """
        return self._rt._run_here(self._service.status)

    def print_status(self):
        """Print :meth:`status`."""
        print(self.status())

    def close(self):
        """Close the current computation (its CPU-bound jobs are waited for).

        :returns: 0.
        """
        service = self._service
        if service.current is None:
            return 0
        return self._rt._run_here(service.close, service.current, False, 'closed by the scheduler')


class _Node:
    __slots__ = ('info', 'coro', 'location', 'servers', 'cpus', 'status', 'enabled',
                 'last_pulse', 'draining', 'pulse_interval', 'setting_up', 'slot', 'part')

    def __init__(self, info, coro, slot):
        self.slot = slot                    # its placement.NodeSlot
        self.info = info
        self.coro = coro                    # the node's service
        self.location = coro.location
        self.servers = {}                   # Location -> _Server
        self.cpus = 0                       # servers used for the current computation
        self.status = None
        self.enabled = None                 # AsyncResult while waiting for enable_node
        self.last_pulse = time.monotonic()
        self.draining = False               # finishing its jobs: give it no more
        self.pulse_interval = None          # what the node keeps for the computation
        self.setting_up = False             # being reserved and set up now
        self.part = None                    # the token of its latest setup


class _Server:
    __slots__ = ('location', 'coro', 'node', 'jobs', 'enabled', 'slot', 'waiting', 'gone')

    def __init__(self, location, coro, node, slot):
        self.location = location
        self.coro = coro
        self.node = node
        self.jobs = {}                      # remote Coro -> _Job
        self.enabled = None
        self.slot = slot                    # its placement.Slot: ready, busy, jobs
        self.waiting = collections.deque()  # CPU jobs waiting for this server (run_at)
        self.gone = None                    # why, once it is gone


class _Job:
    __slots__ = ('kind', 'server', 'want_result', 'name', 'info', 'spec', 'where', 'retries',
                 'attempts', 'origin')

    def __init__(self, kind, server, want_result, name, info, spec, where, retries,
                 attempts=(), origin=None):
        self.kind = kind
        self.server = server
        self.want_result = want_result
        self.name = name
        self.info = info                    # DiscoroCoroInfo
        self.spec = spec                    # (name, source, args, kwargs): to run it again
        self.where = where                  # None, a node address, or a server Location
        self.retries = retries              # how many more times it is run again if lost
        self.attempts = attempts            # the DiscoroJobLost of each earlier attempt
        self.origin = origin or info.coro   # the coroutine run_result* waits for


class _Bounded(collections.OrderedDict):
    """A dict that forgets its oldest entries beyond a bound (the ends of
    jobs that may never be asked for)."""

    LIMIT = 10000

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if len(self) > self.LIMIT:
            self.popitem(last=False)


class _SchedulerService(Service):

    def __init__(self, scheduler):
        super().__init__('discoro_scheduler')
        self._scheduler = scheduler
        self.nodes = {}                     # addr -> _Node (every node known)
        self.servers = {}                   # Location -> _Server (current computation)
        self.jobs = {}                      # remote Coro -> _Job
        self.early_ends = _Bounded()        # MonitorExceptions of jobs not yet recorded
        self.abandoned = _Bounded()         # lost jobs whose late end is not theirs to tell
        self.lost_nodes = {}                # addr -> service of a node dropped (it may be back)
        self.rejoining = set()              # addrs of lost nodes being asked now
        self.queue = collections.deque()    # (package, AsyncResult) waiting their turn
        self.current = None                 # the package running now
        self.left_out = {}                  # addr -> why that node does not serve `current`
        self.placement = Placement()
        self.waiting = collections.deque()  # AsyncResults of CPU jobs waiting for any server
        self.probing = set()
        self.server_ready = gevent.event.Event()    # set while some server is ready
        self.watchers = set()               # monitors (httpd.py) that get every status message
        self.starting = False               # _advance is choosing the next computation
        self.job_ended = gevent.event.Event()

    # ---------------- status

    def status(self):
        current = self.current
        return {'Client': current.client_location if current else None,
                'Pending': len(self.queue),
                'Nodes': [node.info for node in self.nodes.values()],
                'Servers': {str(loc): len(server.jobs) for loc, server in self.servers.items()}}

    def _status(self, status, info):
        self._notify(DiscoroStatus(status, info))

    def _notify(self, msg, client=True):
        """A status message for every watcher and (unless `client` is false:
        news for monitors only) the current computation's status_coro."""
        current = self.current
        if client and current is not None and current.status_coro is not None:
            current.status_coro.send(msg)
        for watcher in list(self.watchers):
            watcher.send(msg)

    @answers(WATCH)
    def watch(self, watcher):
        """Send `watcher` every status message from now on; the state so far
        is the answer."""
        self.watchers.add(watcher)
        current = self.current
        return {'computation': current.id if current else None,
                'client': current.client_location if current else None,
                'queue': [(package.id, package.client_location) for package, _ in self.queue],
                'nodes': [node.info for node in self.nodes.values() if node.status],
                'servers': [loc for loc, server in self.servers.items() if server.slot.ready],
                'jobs': [(job.info, job.name) for job in self.jobs.values()]}

    @answers(UNWATCH)
    def unwatch(self, watcher):
        self.watchers.discard(watcher)
        return 0

    @answers(WAITING)
    def waiting(self, comp_id):
        """Why a request of computation `comp_id` still waits, in words."""
        current = self.current
        if current is None or current.id != comp_id:
            ahead = next((i for i, (package, _) in enumerate(self.queue)
                          if package.id == comp_id), None)
            if ahead is None:
                return 'the scheduler at %s does not know it' % self.rt.location
            return ('it waits in the queue of the scheduler at %s: %d computation(s) ahead of '
                    'it' % (self.rt.location, ahead + (current is not None)))
        return self._why_no_server()

    def _why_no_server(self):
        rt = self.rt
        working = [node for node in self.nodes.values()
                   if node.status and not node.draining and node.info.addr not in self.left_out]
        parts = []
        if not self.nodes:
            parts.append('no discoro node has answered the scheduler at %s, which looks for '
                         'them on UDP port %s%s (is discoronode.py running, with the same '
                         'secret and ports?)' % (rt.location, self._scheduler._node_port,
                                                 ' and at %s' % ', '.join(sorted(self.probing))
                                                 if self.probing else ''))
        for addr, why in sorted(self.left_out.items()):
            parts.append('node %s does not serve it: %s' % (addr, why))
        for addr, why in sorted(rt.auth_failures.items()):
            parts.append('%s: %s' % (addr, why))
        starting = [node.info.addr for node in self.nodes.values() if node.setting_up]
        if starting:
            parts.append('being set up: %s' % ', '.join(starting))
        if working:
            ready = [s for s in self.servers.values() if s.slot.ready]
            parts.append('%d server(s) of %d node(s) ready, %d busy with CPU jobs'
                         % (len(ready), len(working), sum(1 for s in ready if s.slot.busy)))
        return '; '.join(parts) or 'no server is ready yet'

    # ---------------- peers and nodes

    def on_peer(self, status):
        location = status.location
        if status.status == PeerStatus.Online:
            if location not in self.probing and not any(
                    node.location == location for node in self.nodes.values()):
                self.probing.add(location)
                spawn(self._probe, location)
        else:
            self.watchers = {w for w in self.watchers if w.location != location}
            server = self.servers.get(location)
            if server is not None:
                self._server_gone(server, Scheduler.ServerDisconnected, 'its connection was lost (its '
                                  'process died, or the network failed)')
            for node in list(self.nodes.values()):
                if node.location == location:
                    self._node_gone(node, 'its node %s went away' % node.info.addr)

    def _probe(self, location):
        """Is the new peer at `location` a node? If so, use it."""
        node = None
        try:
            coro = SysCoro.locate('discoro_node', location, _msg_timeout())
            if coro is not None:
                info = self.call(coro, NODE_INFO, timeout=_msg_timeout())
                if isinstance(info, Failure):
                    log.warning('node at %s did not describe itself: %s', location, info)
                else:
                    node = self.nodes[info.addr] = _Node(info, coro,
                                                         self.placement.node_slot(None))
                    node.slot.node = node
                    self.lost_nodes.pop(info.addr, None)
                    log.debug('node %s (%s) with %d servers discovered', info.name, info.addr,
                              info.cpus)
        finally:
            self.probing.discard(location)
        if node is not None and self.current is not None:
            self._use_node(node)
        else:
            self._place()       # what waits may have waited for this peer

    def _leave_out(self, node, package, why, tell_node=True, failed=True):
        """`node` does not serve `package`: one line (a WARNING when it
        `failed` to), NodeClosed for the client if it heard of the node, and
        it is not asked again."""
        if package is not self.current or node.info.addr in self.left_out:
            return
        self._record_left_out(node.info.addr, package, why, failed)
        if tell_node:
            self.tell(node.coro, NODE_CLOSE, package.id)
        for server in list(node.servers.values()):
            self._server_gone(server, Scheduler.ServerClosed, 'its node %s: %s'
                              % (node.info.addr, why))
        if node.status:
            self._status(Scheduler.NodeClosed, node.info)
        node.status = None
        node.draining = False
        self._refresh(node)

    def _record_left_out(self, addr, package, why, failed):
        """Node `addr` is out of `package` for good: one line says so (a
        WARNING when it `failed` to serve it)."""
        self.left_out[addr] = why
        if failed:
            log.warning('node %s is left out of computation %x: %s', addr, package.id, why)
        else:
            self._log(package, 'node %s ended its part: %s' % (addr, why))

    def _refresh(self, node):
        """After a change to `node` (set up, draining, closed, left out,
        gone): is it usable now; then what waits gets a server, or fails."""
        self.placement.set_usable(node.slot, node.status == Scheduler.NodeInitialized and
                                  not node.draining and node.info.addr not in self.left_out and
                                  self.nodes.get(node.info.addr) is node)
        self._place()

    def _use_node(self, node):
        package = self.current
        if package is None or node.info.addr in self.left_out or node.status or \
                node.setting_up:
            return
        cpus = servers_for(package.allocations, node.info)
        if cpus <= 0:
            log.debug('node %s not used for computation %x', node.info.addr, package.id)
            return
        node.setting_up = True
        try:
            self._set_up(node, package, cpus)
        finally:
            node.setting_up = False
            self._place()

    def _set_up(self, node, package, cpus):
        answer = self.call(node.coro, RESERVE, package.id, package.client_location,
                           package.pulse_interval, cpus, self.coro, timeout=_msg_timeout())
        if isinstance(answer, Failure):
            self._leave_out(node, package, 'it refused: %s' % answer.reason, tell_node=False)
            return
        node.pulse_interval = answer
        node.cpus = cpus
        node.status = Scheduler.NodeDiscovered
        if package.disable_nodes:       # before the client hears of it: it may answer at once
            node.enabled = gevent.event.AsyncResult()
        self._status(Scheduler.NodeDiscovered, node.info)
        for path, rel in package.files:
            failed = self.rt.transfer_file(node.location, path, dir=rel or None, overwrite=True,
                                           timeout=_msg_timeout())
            if failed:
                self._leave_out(node, package, 'file %s could not be sent to it: %s'
                                % (os.path.basename(path), failed))
                return
        args = ()
        if package.disable_nodes:
            args = node.enabled.get()
            node.enabled = None
            if package is not self.current:
                return
        node.part = random.getrandbits(63)      # its servers say which setup they belong to
        answer = self.call(node.coro, NODE_SETUP, package.id, package.code, package.node_setup,
                           args, self.coro, package.client, package.client_location,
                           package.server_setup, node.part)
        if isinstance(answer, Failure):
            self._leave_out(node, package, answer.reason)
            return
        if package is not self.current or node.info.addr in self.left_out:
            return
        node.status = Scheduler.NodeInitialized
        node.last_pulse = time.monotonic()
        self._status(Scheduler.NodeInitialized, node.info)
        for server in list(node.servers.values()):     # ready before their node
            if server.slot.ready:
                self._status(Scheduler.ServerInitialized, server.location)
        self._refresh(node)
        for server in list(node.servers.values()):
            self._give(server)

    def _node_gone(self, node, cause):
        """`node` is gone (`cause`, in words): its jobs are lost; it is asked
        now and then whether it is back (a partition that heals)."""
        if self.nodes.get(node.info.addr) is node:
            del self.nodes[node.info.addr]
            self.lost_nodes[node.info.addr] = node.coro
        for server in list(node.servers.values()):
            self._server_gone(server, Scheduler.ServerDisconnected, cause)
        if node.status:
            self._status(Scheduler.NodeClosed, node.info)
        node.status = None
        self._refresh(node)

    # ---------------- computations

    @answers(SCHEDULE)
    def schedule(self, package):
        if package.client_location != self.rt.location:     # its files came ahead of it
            folder = os.path.join(self.rt.dest_path, upload_dir(package.id))
            package.files = [(os.path.join(folder, rel, os.path.basename(path)), rel)
                             for path, rel in package.files]
        package.ended = gevent.event.Event()     # made here: a package travels pickled
        turn = gevent.event.AsyncResult()
        self.queue.append((package, turn))
        self._log(package, 'queued, %d ahead of it'
                  % (len(self.queue) - 1 + (self.current is not None)))
        self._next()
        return turn.get()

    def _log(self, package, what):
        """A computation's progress: news in a scheduler program, detail in a client."""
        log.log(logging.INFO if package.client_location != self.rt.location else logging.DEBUG,
                'computation %x of %s: %s', package.id, package.client_location, what)

    def _next(self):
        if self.current is None and self.queue and not self.starting:
            self.starting = True
            spawn(self._advance)

    def _advance(self):
        """Start the first queued computation whose client still answers."""
        try:
            while self.queue and self.current is None:
                package, turn = self.queue.popleft()
                if package.client_location != self.rt.location and isinstance(
                        self.call(package.client, PING, timeout=_msg_timeout()), Failure):
                    log.warning('client %s of computation %x is gone; skipped',
                                package.client_location, package.id)
                    self._remove_files(package)
                    turn.set(Failure('schedule', 'its client is gone'))
                    continue
                package.last_contact = package.last_active = time.monotonic()
                self.current = package
                self.left_out = {}
                self._log(package, 'starts')
                self._notify(DiscoroStatus(Scheduler.ComputationScheduled,
                                           (package.id, package.client_location)), client=False)
                turn.set(0)
                for node in list(self.nodes.values()):
                    spawn(self._use_node, node)
                spawn(self._watch_nodes, package)
                if self._scheduler._zombie_period:
                    spawn(self._watch_client, package, self._scheduler._zombie_period)
        finally:
            self.starting = False

    def rebroadcast(self, interval):
        """Ask for nodes again every `interval` seconds (ping_interval): on
        this network, and at each host of `nodes`."""
        port = self._scheduler._node_port
        while True:
            gevent.sleep(interval)
            self.rt.discover_peers(port=port)
            for host in self._scheduler._nodes:
                self.rt.peer(host, udp_port=port, broadcast=True)

    def _watch_client(self, package, zombie_period):
        """Close the computation when its client has not answered, or it has
        had no job and no request, for zombie_period seconds."""
        remote = package.client_location != self.rt.location
        check = max(1.0, min(package.pulse_interval, zombie_period / 5.0))
        while self.current is package:
            if package.ended.wait(check):
                return
            now = time.monotonic()
            if remote and not isinstance(self.call(package.client, PING, timeout=check),
                                         Failure):
                package.last_contact = time.monotonic()
            if self.jobs:
                package.last_active = now
            silent = now - package.last_contact
            idle = now - package.last_active
            if silent > zombie_period or idle > zombie_period:
                log.warning('computation %x of %s closed: %s for %.0f s (zombie_period %s)',
                            package.id, package.client_location,
                            'client unreachable' if silent > zombie_period else 'idle',
                            max(silent, idle), zombie_period)
                self.close(package, False, 'zombie', wait=False)
                return

    def _watch_nodes(self, package):
        """Drop the nodes of this computation that stay silent (no pulse) for
        5 of their pulse intervals: a node whose process hangs or whose host
        is cut off closes no connection, so only the missing pulses tell."""
        while self.current is package:
            intervals = [node.pulse_interval for node in self.nodes.values()
                         if node.pulse_interval]
            if package.ended.wait(min(intervals + [package.pulse_interval])):
                return
            now = time.monotonic()
            for node in list(self.nodes.values()):
                limit = 5 * (node.pulse_interval or package.pulse_interval)
                if node.status == Scheduler.NodeInitialized and now - node.last_pulse > limit:
                    silent = now - node.last_pulse
                    log.warning('node %s sent no pulse for %.0f s (5 pulse intervals); dropped',
                                node.info.addr, silent)
                    for server in node.servers.values():
                        for rcoro in server.jobs:
                            rcoro.terminate()   # it may still run, cut off: not for long
                    self._node_gone(node, 'its node %s sent no pulse for %.0f s'
                                    % (node.info.addr, silent))
            for addr, coro in list(self.lost_nodes.items()):
                if addr not in self.rejoining:
                    spawn(self._rejoin, addr, coro, package.pulse_interval)

    def _current(self, comp_id):
        current = self.current
        if current is None or current.id != comp_id:
            raise Failure('computation %x' % comp_id, 'it is not the one the scheduler runs',
                          self.rt.location)
        current.last_contact = current.last_active = time.monotonic()
        return current

    # ---------------- servers

    @answers(SERVER_UP)
    def server_up(self, comp_id, part, location, node_addr, coro):
        package = self._current(comp_id)
        node = self.nodes.get(node_addr)
        if node is None or node_addr in self.left_out:
            raise Failure('server %s' % location, 'its node %s does not serve computation %x'
                          % (node_addr, comp_id))
        if part != node.part:
            raise Failure('server %s' % location, 'it belongs to an earlier setup of node %s'
                          % node_addr)
        server = _Server(location, coro, node, self.placement.server_slot(None, node.slot))
        server.slot.server = server
        node.servers[location] = server
        self.servers[location] = server
        self._status(Scheduler.ServerDiscovered, location)
        args = ()
        if package.disable_servers:
            server.enabled = gevent.event.AsyncResult()
            args = server.enabled.get()
            server.enabled = None
        if package.server_setup is not None:
            answer = self.call(coro, SERVER_SETUP, args)
            if answer != 0:
                log.warning('server %s not used: server_setup gave %s', location, answer)
                self.tell(coro, SERVER_CLOSE)
                self._server_gone(server, Scheduler.ServerClosed, 'server_setup failed')
                return 0
        if location not in self.servers:        # it went while it was set up
            return 0
        self.placement.set_ready(server.slot, True)
        if node.status == Scheduler.NodeInitialized:
            self._status(Scheduler.ServerInitialized, location)
        if package.peers_communicate:
            others = [s.location for s in self.servers.values() if s is not server]
            self.tell(coro, PEERS, others)
        self._give(server)
        self._place()
        return 0

    def _server_gone(self, server, status, cause):
        """`server` is gone (`cause`, in words): its jobs end as lost, and
        the jobs that waited for it alone fail."""
        if self.servers.pop(server.location, None) is None:
            return
        server.gone = cause
        server.node.servers.pop(server.location, None)
        self.placement.forget(server.slot)
        if not self.placement.ready:
            self.server_ready.clear()
        while server.waiting:
            server.waiting.popleft().set(Failure('run', 'server %s is gone: %s'
                                                 % (server.location, cause)))
        for rcoro in list(server.jobs):
            self._job_end(MonitorException(rcoro, (Scheduler.ServerClosed,
                                                   DiscoroJobLost(server.location, cause))))
        self._status(status, server.location)

    @answers(SERVER_CLOSED)
    def server_closed(self, comp_id, location, why=None):
        server = self.servers.get(location)
        if server is not None:
            if why:
                log.warning('server %s of computation %x: %s', location, comp_id, why)
            self._server_gone(server, Scheduler.ServerClosed, why or 'it closed')
        return 0

    @answers(ENABLE_NODE)
    def enable_node(self, comp_id, addr, args):
        node = self.nodes.get(addr)
        if node is not None and node.enabled is not None:
            node.enabled.set(args)
        return 0

    @answers(ENABLE_SERVER)
    def enable_server(self, comp_id, location, args):
        server = self.servers.get(location)
        if server is not None and server.enabled is not None:
            server.enabled.set(args)
        return 0

    @answers(NODES)
    def nodes_ready(self, comp_id):
        self._current(comp_id)
        return [addr for addr, node in self.nodes.items()
                if node.status == Scheduler.NodeInitialized and not node.draining]

    @answers(SERVERS)
    def servers_ready(self, comp_id):
        self._current(comp_id)
        return [loc for loc, server in self.servers.items()
                if server.slot.ready and not server.node.draining]

    # ---------------- a node ends its part on its own (its console, service window, zombie)

    @answers(NODE_DRAINING)
    def node_draining(self, comp_id, addr):
        """The node finishes the jobs it runs and takes no more."""
        node = self.nodes.get(addr)
        if node is not None and self.current is not None and self.current.id == comp_id:
            node.draining = True
            self._refresh(node)
        return 0

    @answers(ENDS_HEARD)
    def ends_heard(self, comp_id):
        """A server that drains asks before it tells its node it is idle:
        the ends of its jobs, sent before, are handled by then, so that the
        node's word that the computation ended there cannot overtake them
        (they would be taken for jobs lost)."""
        self.caught_up(_msg_timeout())
        return 0

    @answers(NODE_CLOSED)
    def node_closed(self, comp_id, addr, why, final, failed):
        """The node ended the computation (its servers are gone), saying why:
        `final`, it will not serve it again (it is left out of it); `failed`,
        it could not serve it."""
        node = self.nodes.get(addr)
        package = self.current
        if package is None or package.id != comp_id:
            return 0
        if node is None:
            if final and self.lost_nodes.pop(addr, None) is not None:
                # its connection's end came first (it quit): it was dropped
                # as if cut off; it is not waited for
                self._record_left_out(addr, package, why, failed)
                self._place()
            return 0
        if final:
            self._leave_out(node, package, why, tell_node=False, failed=failed)
            return 0
        for server in list(node.servers.values()):
            self._server_gone(server, Scheduler.ServerClosed, 'its node %s ended the computation'
                              % addr)
        if node.status:
            self._status(Scheduler.NodeClosed, node.info)
        node.status = None
        node.draining = False
        self._refresh(node)
        return 0

    @answers(NODE_AVAILABLE)
    def node_available(self, addr, coro=None):
        """The node takes computations again (its service window opened, or
        it is back after it was dropped)."""
        node = self.nodes.get(addr)
        if node is None and coro is not None and addr not in self.rejoining:
            spawn(self._rejoin, addr, coro, _msg_timeout())
        elif node is not None and self.current is not None and not node.status and \
                addr not in self.left_out:
            spawn(self._use_node, node)
        return 0

    def _rejoin(self, addr, coro, timeout):
        """Is the node at `addr` (dropped, or not known yet) there? Then it
        is known again, and set up for the computation running (a node set
        up again ends what it still ran of it first)."""
        self.rejoining.add(addr)
        try:
            info = self.call(coro, NODE_INFO, timeout=timeout)
            if isinstance(info, Failure) or addr in self.nodes:
                return
            self.lost_nodes.pop(addr, None)
            node = self.nodes[addr] = _Node(info, coro, self.placement.node_slot(None))
            node.slot.node = node
            log.info('node %s (%s) is back', addr, info.name)
            if self.current is not None:
                self._use_node(node)
        finally:
            self.rejoining.discard(addr)

    @answers(PULSE)
    def pulse(self, comp_id, addr, avail_info):
        node = self.nodes.get(addr)
        if self.current is None or self.current.id != comp_id or node is None or \
                addr in self.left_out:
            raise Failure('pulse', 'computation %x is not run here with node %s'
                          % (comp_id, addr))
        node.last_pulse = time.monotonic()
        if avail_info is not None:
            node.info = node.info._replace(avail_info=avail_info)
            self._notify(avail_info)
        return sum(len(server.jobs) for server in node.servers.values())

    # ---------------- jobs

    def _known_where(self, where):
        """Whether a job may wait for `where` (a node address or a server
        Location) of this computation."""
        if isinstance(where, Location):
            server = self.servers.get(where)
            return server is not None and not server.node.draining
        node = self.nodes.get(where)
        return node is not None and node.slot.usable

    def _hopeless(self):
        """Why no server will come for this computation (every node known has
        been left out of it, including those gone since, such as a node that
        quit), or None while one may (a node being probed, or dropped and
        maybe coming back)."""
        if self.probing or self.rejoining or any(addr not in self.left_out
                                                 for addr in self.lost_nodes):
            return None
        if any((node.status and not node.draining) or node.setting_up
               for node in self.nodes.values() if node.info.addr not in self.left_out):
            return None
        if not self.left_out:
            return None     # nodes this computation does not use (node_allocations)
        return 'no node can run it: %s' % '; '.join(
            'node %s: %s' % item for item in sorted(self.left_out.items()))

    def _place(self):
        """Give the CPU jobs that wait for any server the free ones; fail
        them all when no node will serve this computation. After a change of
        nodes or servers (a job's end only calls _give)."""
        placement = self.placement
        if placement.ready:
            self.server_ready.set()
        else:
            self.server_ready.clear()
        while self.waiting:
            slot = placement.cpu()
            if slot is None:
                break
            self.waiting.popleft().set(slot.server)
        if self.waiting:
            hopeless = self._hopeless()
            if hopeless:
                while self.waiting:
                    self.waiting.popleft().set(Failure('run', hopeless))

    def _give(self, server):
        """`server` may be free: to the CPU job waiting for it alone, else to
        one waiting for any server (which goes where placement says)."""
        slot = server.slot
        if server.waiting and slot.ready and not slot.busy and slot.node.usable:
            self.placement.reserve(slot)
            server.waiting.popleft().set(server)
        elif self.waiting:
            slot = self.placement.cpu()
            if slot is not None:
                self.waiting.popleft().set(slot.server)

    def _server_for(self, kind, where, what):
        """The server for a job, reserved for it (a CPU job waits for one);
        raises Failure if there is none."""
        placement = self.placement
        if kind == 'cpu':
            if isinstance(where, Location):
                server = self.servers.get(where)
                if server is None or server.node.draining:
                    raise Failure(what, 'server %s is not running this computation' % where)
                slot = server.slot
                if slot.ready and not slot.busy and slot.node.usable and not server.waiting:
                    placement.reserve(slot)
                    return server
                queue = server.waiting
            elif where is not None:
                node = self.nodes.get(where)
                if node is None or not node.slot.usable:
                    raise Failure(what, 'node %s is not running this computation' % where)
                slot = placement.cpu_on(node.slot)
                if slot is None:
                    raise Failure(what, 'no free server on node %s' % where)   # as asyncoro 4.5
                return slot.server
            else:
                slot = placement.cpu() if not self.waiting else None
                if slot is not None:
                    return slot.server
                queue = self.waiting
            waiter = gevent.event.AsyncResult()
            queue.append(waiter)
            if queue is self.waiting:
                self._place()       # hopeless already?
            server = waiter.get()
            if isinstance(server, Failure):
                raise server
            return server
        if isinstance(where, Location):
            server = self.servers.get(where)
            slot = server.slot if server is not None and not server.node.draining else None
        else:
            node = None
            if where is not None:
                node = self.nodes.get(where)
                if node is None:
                    raise Failure(what, 'node %s is not running this computation' % where)
            slot = placement.least_busy(node and node.slot)
            if slot is None and where is None:      # the computation's servers are starting
                self.server_ready.wait(_msg_timeout())
                slot = placement.least_busy()
        if slot is None or not slot.ready:
            raise Failure(what, self._hopeless() or 'no server available%s'
                          % (' at %s' % where if where else ''))
        placement.started(slot, False)
        return slot.server

    @answers(RUN)
    def run(self, comp_id, kind, where, name, source, args, kwargs, want_result):
        package = self._current(comp_id)
        what = 'job %s' % name
        server = self._server_for(kind, where, what)
        cpu = kind == 'cpu'
        if package is not self.current:
            self._unreserve(server, cpu)
            raise Failure(what, 'the computation was closed')
        answer = self.call(server.coro, JOB, name, source, args, kwargs, self.coro)
        if not isinstance(answer, Coro):
            self._not_started(server, cpu, answer)
            if server.location not in self.servers:
                # it died (or its connection did: then _not_started forgot
                # it) while it started the job
                return DiscoroJobLost(server.location, 'it went away while job %s started (%s)'
                                      % (name, answer))
            if isinstance(answer, JobNotCreated):
                return answer
            raise Failure(what, 'server %s: %s' % (server.location, answer))
        retries = package.retry_lost if cpu and not isinstance(where, Location) else 0
        self._started(_Job(kind, server, want_result, name,
                           DiscoroCoroInfo(answer, args, kwargs, time.time()),
                           (name, source, args, kwargs), where, retries))
        return answer

    def _started(self, job):
        rcoro = job.info.coro
        job.server.jobs[rcoro] = job
        self.jobs[rcoro] = job
        # from here, so that it reaches status_coro before the job's end (same sender)
        self._notify(DiscoroStatus(Scheduler.CoroCreated, job.info))
        early = self.early_ends.pop(rcoro, None)
        if early is not None:
            self._job_end(early)
        elif job.server.gone is not None:
            # its server was told gone while its answer was on the way (the
            # node's word and the server's answer travel apart): nothing
            # else would end the job
            self._job_end(MonitorException(rcoro, (Scheduler.ServerClosed, DiscoroJobLost(
                job.server.location, job.server.gone))))

    def _run_again(self, job, lost):
        """A CPU job lost with its server (`lost`): start it again on another
        server, or give up with every attempt's reason."""
        attempts = job.attempts + (lost,)
        package = self.current
        name, source, args, kwargs = job.spec
        log.info('job %s lost (%s); it is run again (%d more time(s) at most)', job.info.coro,
                 lost.cause, job.retries - 1)
        try:
            if package is None or package.closing:
                raise Failure('job %s' % name, 'the computation was closed')
            server = self._server_for('cpu', job.where, 'job %s' % name)
            answer = self.call(server.coro, JOB, name, source, args, kwargs, self.coro)
            if not isinstance(answer, Coro):
                self._not_started(server, True, answer)
                raise Failure('job %s' % name, 'server %s: %s' % (server.location, answer))
        except Failure as failure:
            log.warning('job %s lost for good: %s', job.info.coro, failure)
            if job.want_result and package is not None:
                final = DiscoroJobLost(lost.server, '%s; not run again: %s'
                                       % (lost.cause, failure.reason), job.attempts)
                self.tell(package.client, RESULT, job.origin, final)
            return
        if package is not self.current:
            answer.terminate()
            return
        self._started(_Job('cpu', server, job.want_result, name,
                           DiscoroCoroInfo(answer, args, kwargs, time.time()), job.spec,
                           job.where, job.retries - 1, attempts, job.origin))

    def _not_started(self, server, cpu, answer):
        """The job for `server` did not start there (`answer` is not a Coro).
        No answer to a call without a timeout means the server's connection
        is gone: the server is forgotten now, not when its peer's end is
        told, so that no job goes to it in between."""
        if isinstance(answer, NoAnswer):
            self._server_gone(server, Scheduler.ServerDisconnected,
                              'its connection was lost (%s)' % answer.reason)
        else:
            self._unreserve(server, cpu)

    def _unreserve(self, server, cpu):
        """A job counted on `server` did not start there."""
        if server.location in self.servers and self.placement.ended(server.slot, cpu):
            self._give(server)

    def on_monitor(self, msg):
        rcoro = msg.args[0]
        if rcoro not in self.jobs:
            if self.abandoned.pop(rcoro, None) is not None:
                # an attempt already ended as lost (and maybe run again): the
                # end that counts is the one told then, not this late one
                log.info('job %s ended after it was given up as lost; its end is not used',
                         rcoro)
                return
            self.early_ends[rcoro] = msg      # its run() answer is still on its way
            return
        self._job_end(msg)

    def _job_end(self, msg):
        rcoro, (kind, value) = msg.args[0], msg.args[1]
        job = self.jobs.pop(rcoro, None)
        if job is None:
            return
        server = job.server
        server.jobs.pop(rcoro, None)
        self.job_ended.set()
        if server.location in self.servers and self.placement.ended(server.slot,
                                                                    job.kind == 'cpu'):
            self._give(server)
        current = self.current
        if kind == Scheduler.ServerClosed and isinstance(value, DiscoroJobLost):
            self.abandoned[rcoro] = True
            if current is not None and job.retries > 0 and not current.closing:
                self._notify(msg)
                spawn(self._run_again, job, value)
                return
            if job.attempts:
                value = DiscoroJobLost(value.server, value.cause, job.attempts)
                msg = MonitorException(rcoro, (kind, value))
        if current is not None:
            self._notify(msg)
            if job.want_result:
                if kind is StopIteration:
                    result = value
                elif kind == Scheduler.ServerClosed:
                    result = value if isinstance(value, ServerLost) else DiscoroJobLost(
                        job.server.location, 'its server closed')
                elif isinstance(value, BaseException):
                    result = value
                else:       # the exception could not travel: its type did
                    result = kind(value) if isinstance(kind, type) else value
                self.tell(current.client, RESULT, job.origin, result)

    # ---------------- closing

    @answers(CLOSE)
    def close_asked(self, comp_id, await_async):
        return self.close(self._current(comp_id), await_async, 'closed by its client')

    def shut_down(self):
        """The scheduler program ends: queued computations are refused, the
        current one is closed with its jobs terminated."""
        while self.queue:
            package, turn = self.queue.popleft()
            turn.set(Failure('schedule', 'the scheduler quits'))
        if self.current is not None:
            self.close(self.current, False, 'the scheduler quits', wait=False)

    def _remove_files(self, package):
        if package.client_location != self.rt.location:
            shutil.rmtree(os.path.join(self.rt.dest_path, upload_dir(package.id)),
                          ignore_errors=True)

    def close(self, package, await_async, why, wait=True):
        """Close `package` (the current computation): wait for its CPU-bound
        jobs (with `wait`; and the async ones with `await_async`), terminate
        the rest, close it on every node."""
        if self.current is not package or package.closing:
            return 0
        package.closing = True
        self._log(package, why)

        def pending(kinds):
            return [rcoro for rcoro, job in self.jobs.items() if job.kind in kinds]

        def wait_for(kinds, limit):
            while pending(kinds):
                self.job_ended.clear()
                if not self.job_ended.wait(limit):
                    return
        if wait:
            waiting = ('cpu', 'async') if await_async else ('cpu',)
            while pending(waiting):
                log.info('waiting for %d remote coroutines to finish', len(pending(waiting)))
                wait_for(waiting, 5)
        for rcoro in pending(('cpu', 'async')):
            rcoro.terminate()
        wait_for(('cpu', 'async'), _msg_timeout())
        for node in list(self.nodes.values()):
            if node.status:
                # closed before the node kills them: their connections closing
                # then is no news (it would say ServerDisconnected)
                for server in list(node.servers.values()):
                    self._server_gone(server, Scheduler.ServerClosed, 'the computation was closed')
                answer = self.call(node.coro, NODE_CLOSE, package.id,
                                   timeout=_msg_timeout() * 2)
                if isinstance(answer, Failure):
                    log.warning('node %s did not close computation %x: %s', node.info.addr,
                                package.id, answer)
                node.status = None
                node.servers.clear()
        for rcoro, job in list(self.jobs.items()):
            self._job_end(MonitorException(rcoro, (Scheduler.ServerClosed, DiscoroJobLost(
                job.server.location, 'the computation was closed'))))
        self._status(Scheduler.ComputationClosed, package.public_id)
        self._remove_files(package)
        self.current = None
        package.ended.set()
        while self.waiting:
            self.waiting.popleft().set(Failure('run', 'the computation was closed'))
        self.early_ends.clear()
        self.left_out = {}
        for node in self.nodes.values():
            node.draining = False
            node.pulse_interval = None
            self.placement.set_usable(node.slot, False)
        self._next()
        return 0
