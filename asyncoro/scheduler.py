"""asyncoro.scheduler: the discoro scheduler.

What it owns: `Scheduler` (the scheduler in a client process, or the heart
of the discoro.py program) and its service, `discoro_scheduler`: the I/O
shell around asyncoro.schedstate, which knows the nodes, the computation
running (one at a time; later ones wait in order), its servers and jobs.
asyncoro.discoro is the public home of `Scheduler`.

How it works: the shell turns what comes in (a peer's status, a node's or
server's request, a job's end, a timer) into one stimulus of the state
(`SchedState`), and asyncoro.schedio carries out the effects the state
gives back, in order: calls and tells to nodes and servers, status messages
for the client and the monitors, answers to the client's run() calls, log
lines. The shell decides nothing itself: it keeps the computations that
wait their turn, the watchers, and the timers (the state's clock, the
client's zombie check), and closes a computation step by step.

- Nodes: the scheduler hears of peers through `peer_status`, asks each new
  one whether it runs `discoro_node`, and asks every node to serve the
  computation running: reserve, files, node_setup, servers. A node that
  cannot serve it now (busy with another computation, out of its service
  window) is waited for; one that cannot at all is left out of it, once,
  with one WARNING saying why.
- Jobs: a CPU job takes a free server (one CPU job per server), first come
  first served; an async job goes to the least busy server. The job's end
  frees the server, answers run_result* and goes on to status_coro.
- Faults: a node reports a server that died at once, and the scheduler sees
  a server's or node's connection go; a node whose pulses stop for 5 of its
  pulse intervals is lost. A job bound to a node or server ends when that
  node or server is lost or left out.
"""

import collections
import logging
import os
import shutil
import time

import gevent
import gevent.event

from asyncoro import schedstate as st
from asyncoro.core import _msg_timeout
from asyncoro.disasyncoro import AsynCoro, PeerStatus, Singleton, env_port
from asyncoro.failure import Failure, spawn
from asyncoro.programs import claim_folder
from asyncoro.records import (DEFAULT_NODE_PORT, DiscoroError, DiscoroNodeAvailInfo, DiscoroStatus,
                              MaxPulseInterval, upload_dir)
from asyncoro.schedio import Calm, Effects, Held
from asyncoro.service import (CLOSE, ENABLE_NODE, ENABLE_SERVER, ENDS_HEARD, NODE_AVAILABLE,
                              NODE_CLOSED, NODE_DRAINING, NODES, PING, PULSE, RUN, SCHEDULE,
                              SERVER_CLOSED, SERVER_NOT_STARTED, SERVER_UP, SERVERS, UNWATCH, WAITING,
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
    :param pulse_interval: look at the nodes at least every this many
        seconds (a node silent for 5 of its pulse intervals is dropped, a
        lost one asked whether it is back, one busy with another computation
        asked again); None: as often as the computation's pulse_interval
        (and the shortest a node keeps) asks.

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
        self._pulse_interval = kwargs.pop('pulse_interval', None)
        if self._pulse_interval is not None and not self._pulse_interval >= 1:
            raise DiscoroError('pulse_interval must be at least 1 second, or None, not %r'
                               % (self._pulse_interval,))
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

    @property
    def node_port(self):
        """The UDP port it looks for nodes on (`discoronode_port`)."""
        return self._node_port

    def node_addresses(self):
        """The addresses of the nodes it knows (any state).

        :returns: a list of str.
        """
        return self._rt._run_here(lambda: list(self._service.nodes))

    def shut_down(self):
        """End the scheduler (the discoro.py program quits): computations
        that wait their turn are refused, the running one is closed with its
        jobs terminated. Blocks until it is closed.
        """
        self._rt._run_here(self._service.shut_down)

    def close(self):
        """Close the current computation (its CPU-bound jobs are waited for).

        :returns: 0.
        """
        service = self._service
        package = service.package
        if package is None:
            return 0
        return self._rt._run_here(service.close, package, False, 'closed by the scheduler')


class _SchedulerService(Service):
    """`discoro_scheduler`: the I/O shell (see the module docstring)."""

    def __init__(self, scheduler):
        super().__init__('discoro_scheduler')
        self._scheduler = scheduler
        self.state = st.SchedState()
        self.fx = Effects(self, Scheduler)
        self.calm = Calm()          # a big cluster's records out of full collections
        self.queue = collections.deque()    # (Package, AsyncResult of its turn) in order
        self.package = None                 # the Package of the computation running
        self.ended = None                   # gevent Event: set when it has closed
        self.last_contact = self.last_active = 0.0     # its client answered; it was used
        self.watchers = set()               # monitors (httpd.py) that get every status message
        self.held = Held(self._notify)      # nodes' availability, sent a moment later together
        self.starting = False               # _advance is choosing the next computation

    @property
    def nodes(self):
        """{addr: schedstate.Node} of every node known."""
        return self.state.cluster.nodes

    # ================================================================ status

    def status(self):
        package, cluster = self.package, self.state.cluster
        return {'Client': package.client_location if package else None,
                'Pending': len(self.queue),
                'Nodes': [node.info for node in cluster.nodes.values()],
                'Servers': {str(loc): len(server.jobs) for loc, server in cluster.servers.items()}}

    def notify(self, msg, client=True, details=False):
        """A status message for every watcher and (unless `client` is
        false: news for monitors only) the computation's status_coro;
        `details` (StatusDetail, JobsWaiting) only for one that asked. A
        node's availability (every pulse's news) is held a moment, to go
        with others (schedio.Held); what was held goes before any other."""
        if type(msg) is DiscoroNodeAvailInfo:
            self.held.hold(msg)
            return
        if self.held.held:
            self.held.flush()
        self._notify(msg, client, details)

    def _notify(self, msg, client=True, details=False):
        package = self.package
        if client and package is not None and package.status_coro is not None and \
                (package.status_details or not details):
            package.status_coro.send(msg)
        if self.watchers:
            for watcher in list(self.watchers):
                watcher.send(msg)

    @answers(WATCH)
    def watch(self, watcher):
        """Send `watcher` every status message from now on; the state so far
        is the answer."""
        self.watchers.add(watcher)
        package, cluster, work = self.package, self.state.cluster, self.state.work
        return {'computation': package.id if package else None,
                'client': package.client_location if package else None,
                'queue': [(queued.id, queued.client_location) for queued, _ in self.queue],
                'nodes': [node.info for node in cluster.nodes.values() if node.announced],
                'servers': cluster.ready_servers(),
                'jobs': [(job.info, job.spec[0]) for job in work.jobs.values()
                         if job.state is st.JobState.RUNNING],
                'waiting': work.waiting_count()}

    @answers(UNWATCH, inline=True)
    def unwatch(self, watcher):
        self.watchers.discard(watcher)
        return 0

    @answers(WAITING)
    def waiting(self, comp_id):
        """Why a request of computation `comp_id` still waits, in words."""
        package = self.package
        if package is None or package.id != comp_id:
            ahead = next((i for i, (queued, _) in enumerate(self.queue)
                          if queued.id == comp_id), None)
            if ahead is None:
                return 'the scheduler at %s does not know it' % self.rt.location
            return ('it waits in the queue of the scheduler at %s: %d computation(s) ahead of '
                    'it' % (self.rt.location, ahead + (package is not None)))
        rt, cluster = self.rt, self.state.cluster
        probing = ', '.join(sorted(str(key) for key in cluster.probing))
        parts = []
        if not cluster.nodes:
            parts.append('no discoro node has answered the scheduler at %s, which looks for '
                         'them on UDP port %s%s (is discoronode.py running, with the same '
                         'secret and ports?)' % (rt.location, self._scheduler._node_port,
                                                 ' and at %s' % probing if probing else ''))
        elif probing:
            parts.append('being asked whether they are nodes: %s' % probing)
        parts += self.state.why_waiting()
        for addr, why in sorted(rt.auth_failures.items()):
            parts.append('%s: %s' % (addr, why))
        return '; '.join(parts) or 'no server is ready yet'

    # ================================================================ peers and nodes

    def on_peer(self, status):
        location, cluster = status.location, self.state.cluster
        if status.status == PeerStatus.Online:
            cluster.peer_online(location)
        else:
            self.watchers = {w for w in self.watchers if w.location != location}
            cluster.server_gone(location, st.DISCONNECTED, 'its connection was lost (its '
                                'process died, or the network failed)')
            cluster.node_gone(location, 'went away (its connection was lost)')
        self.fx.apply()

    def on_monitor(self, msg):
        self.state.work.job_ended(msg.args[0], msg)
        self.fx.apply()

    @answers(NODE_DRAINING, inline=True)
    def node_draining(self, comp_id, addr):
        """The node finishes the jobs it runs and takes no more."""
        if self._is_current(comp_id):
            self.fx.feed(self.state.cluster.node_draining, addr)
        return 0

    @answers(ENDS_HEARD)
    def ends_heard(self, comp_id):
        """A server that drains asks before it tells its node it is idle:
        the ends of its jobs, sent before, are handled by then, so that the
        node's word that the computation ended there cannot overtake them
        (they would be taken for jobs lost)."""
        self.caught_up(_msg_timeout())
        return 0

    @answers(NODE_CLOSED, inline=True)
    def node_closed(self, comp_id, addr, why, final, failed):
        """The node ended the computation (its servers are gone), saying why:
        `final`, it will not serve it again (it is left out of it); `failed`,
        it could not serve it."""
        if self._is_current(comp_id):
            self.fx.feed(self.state.cluster.node_closed, addr, why, final, failed)
        return 0

    @answers(NODE_AVAILABLE, inline=True)
    def node_available(self, addr, coro=None):
        """The node takes computations again (its service window opened, it
        ended another computation, or it is back after it was dropped)."""
        if coro is not None:
            node = self.state.cluster.nodes.get(addr)
            self.fx.feed(self.state.cluster.node_available, addr, coro.location, coro,
                         self.fx.cpus(node.info) if node is not None else 0)
        return 0

    @answers(PULSE, inline=True)
    def pulse(self, comp_id, addr, avail_info):
        cluster = self.state.cluster
        node = cluster.nodes.get(addr)
        info = node.info._replace(avail_info=avail_info) \
            if node is not None and avail_info is not None else None
        running = cluster.pulse(addr, comp_id, time.monotonic(), info)
        if running is None:
            raise Failure('pulse', 'computation %x is not run here with node %s'
                          % (comp_id, addr))
        if avail_info is not None:
            self.notify(avail_info)
        return running

    def rebroadcast(self, interval):
        """Ask for nodes again every `interval` seconds (ping_interval): on
        this network, and at each host of `nodes`."""
        port = self._scheduler._node_port
        while True:
            gevent.sleep(interval)
            self.rt.discover_peers(port=port)
            for host in self._scheduler._nodes:
                self.rt.peer(host, udp_port=port, broadcast=True)

    def _watch_nodes(self, package, ended):
        """The state's clock: nodes silent for 5 pulse intervals are lost,
        lost ones asked whether they are back, waiting ones whether they are
        free (a node whose process hangs or whose host is cut off closes no
        connection: only the missing pulses tell)."""
        while self.package is package:
            if ended.wait(self.state.next_tick(self._scheduler._pulse_interval)):
                return
            self.fx.feed(self.state.tick, time.monotonic())
            self.calm.servers(len(self.state.cluster.servers))

    # ================================================================ servers

    @answers(SERVER_UP, inline=True)
    def server_up(self, comp_id, part, location, node_addr, coro):
        self._current(comp_id)
        why = self.state.cluster.server_up(node_addr, part, location, coro)
        self.fx.apply()
        self.calm.servers(len(self.state.cluster.servers))
        if why is not None:
            raise Failure('server %s' % location, why)
        return 0

    @answers(SERVER_CLOSED, inline=True)
    def server_closed(self, comp_id, location, why=None):
        """The node says a server of it died (or closed)."""
        if self._is_current(comp_id) and location in self.state.cluster.servers:
            if why:
                log.warning('server %s of computation %x: %s', location, comp_id, why)
            self.fx.feed(self.state.cluster.server_gone, location, st.DIED, why or 'it closed')
        return 0

    @answers(SERVER_NOT_STARTED, inline=True)
    def server_not_started(self, comp_id, part, addr, index, location, why):
        """The node says a server could not start."""
        if self._is_current(comp_id):
            self.fx.feed(self.state.cluster.server_failed, addr, part, index, location, why)
        return 0

    @answers(ENABLE_NODE, inline=True)
    def enable_node(self, comp_id, addr, args):
        if self._is_current(comp_id):
            self.fx.feed(self.state.cluster.enable_node, addr, args)
        return 0

    @answers(ENABLE_SERVER, inline=True)
    def enable_server(self, comp_id, location, args):
        if self._is_current(comp_id):
            self.fx.feed(self.state.cluster.enable_server, location, args)
        return 0

    @answers(NODES, inline=True)
    def nodes_ready(self, comp_id):
        self._current(comp_id)
        return [addr for addr, node in self.state.cluster.nodes.items()
                if node.state is st.NodeState.UP]

    @answers(SERVERS, inline=True)
    def servers_ready(self, comp_id):
        self._current(comp_id)
        return self.state.cluster.ready_servers()

    # ================================================================ jobs

    @answers(RUN)
    def run(self, comp_id, kind, where, name, source, args, kwargs, want_result):
        """Run a job: its remote Coro once it has started (or why not)."""
        waiter = gevent.event.AsyncResult()
        self._submit(comp_id, kind, where, (name, source, args, kwargs), want_result,
                     waiter.set)
        return waiter.get()

    def submit(self, comp_id, kind, where, spec, want_result, then):
        """RUN for a client in this process that waits for many jobs at once
        (run_results): ``then(answer)`` gets what RUN would answer, in the
        hub, with no greenlet waiting for it. `spec`: (name, source, args,
        kwargs). Never blocks."""
        if self.stopped:
            then(Failure(RUN, '%s has stopped (%s)' % (self.coro, self.stopped),
                         self.rt.location))
            return
        try:
            self._submit(comp_id, kind, where, spec, want_result, then)
        except Failure as failure:          # a refusal
            then(failure)
        except Exception as exc:            # a bug: its caller must not wait for ever
            log.error('%s: %s failed', self.coro, RUN, exc_info=True)
            then(Failure.from_exception(RUN, exc, self.rt.location))

    def _submit(self, comp_id, kind, where, spec, want_result, then):
        self._current(comp_id)
        work = self.state.work
        job = work.new_job(kind, where, want_result, spec)
        self.fx.waiters[job.id] = then
        work.ask(job)
        self.fx.apply()

    # ================================================================ computations

    @answers(SCHEDULE)
    def schedule(self, package):
        if package.client_location != self.rt.location:     # its files came ahead of it
            folder = os.path.join(self.rt.dest_path, upload_dir(package.id))
            package.files = [(os.path.join(folder, rel, os.path.basename(path)), rel)
                             for path, rel in package.files]
        turn = gevent.event.AsyncResult()
        self.queue.append((package, turn))
        self._log(package, 'queued, %d ahead of it'
                  % (len(self.queue) - 1 + (self.package is not None)))
        self._next()
        return turn.get()

    def _log(self, package, what):
        """A computation's progress: news in a scheduler program, detail in a client."""
        log.log(logging.INFO if package.client_location != self.rt.location else logging.DEBUG,
                'computation %x of %s: %s', package.id, package.client_location, what)

    def _is_current(self, comp_id):
        return self.package is not None and self.package.id == comp_id

    def _current(self, comp_id):
        """The computation running, which must be `comp_id`: its client was
        heard of now."""
        package = self.package
        if package is None or package.id != comp_id:
            raise Failure('computation %x' % comp_id, 'it is not the one the scheduler runs',
                          self.rt.location)
        self.last_contact = self.last_active = time.monotonic()
        return package

    def _next(self):
        if self.package is None and self.queue and not self.starting:
            self.starting = True
            spawn(self._advance)

    def _advance(self):
        """Start the first queued computation whose client still answers."""
        try:
            while self.queue and self.package is None:
                package, turn = self.queue.popleft()
                if package.client_location != self.rt.location and isinstance(
                        self.call(package.client, PING, timeout=_msg_timeout()), Failure):
                    log.warning('client %s of computation %x is gone; skipped',
                                package.client_location, package.id)
                    self._remove_files(package)
                    turn.set(Failure('schedule', 'its client is gone'))
                    continue
                self._begin(package)
                turn.set(0)
        finally:
            self.starting = False

    def _begin(self, package):
        self.last_contact = self.last_active = time.monotonic()
        self.package = package
        self.ended = ended = gevent.event.Event()
        self._log(package, 'starts')
        self.notify(DiscoroStatus(Scheduler.ComputationScheduled,
                                  (package.id, package.client_location)), client=False)
        comp = st.Comp(package.id, package.pulse_interval, package.retry_lost,
                       package.disable_nodes, package.disable_servers,
                       package.server_setup is not None, package.peers_communicate,
                       package.public_id)
        self.fx.feed(self.state.begin, comp, lambda node: self.fx.cpus(node.info))
        spawn(self._watch_nodes, package, ended)
        if self._scheduler._zombie_period:
            spawn(self._watch_client, package, ended, self._scheduler._zombie_period)

    def _watch_client(self, package, ended, zombie_period):
        """Close the computation when its client has not answered, or it has
        had no job and no request, for zombie_period seconds."""
        remote = package.client_location != self.rt.location
        check = max(1.0, min(package.pulse_interval, zombie_period / 5.0))
        while self.package is package:
            if ended.wait(check):
                return
            now = time.monotonic()
            if remote and not isinstance(self.call(package.client, PING, timeout=check),
                                         Failure):
                self.last_contact = time.monotonic()
            if self.state.work.jobs:
                self.last_active = now
            silent = now - self.last_contact
            idle = now - self.last_active
            if silent > zombie_period or idle > zombie_period:
                log.warning('computation %x of %s closed: %s for %.0f s (zombie_period %s)',
                            package.id, package.client_location,
                            'client unreachable' if silent > zombie_period else 'idle',
                            max(silent, idle), zombie_period)
                self.close(package, False, 'zombie', wait=False)
                return

    # ================================================================ closing

    @answers(CLOSE)
    def close_asked(self, comp_id, await_async):
        return self.close(self._current(comp_id), await_async, 'closed by its client')

    def shut_down(self):
        """The scheduler program ends: queued computations are refused, the
        current one is closed with its jobs terminated."""
        while self.queue:
            package, turn = self.queue.popleft()
            turn.set(Failure('schedule', 'the scheduler quits'))
        if self.package is not None:
            self.close(self.package, False, 'the scheduler quits', wait=False)

    def _remove_files(self, package):
        if package.client_location != self.rt.location:
            shutil.rmtree(os.path.join(self.rt.dest_path, upload_dir(package.id)),
                          ignore_errors=True)

    def _wait_ends(self, busy, limit):
        """Wait while `busy()`: False if `limit` seconds passed with no job
        ending while it still is."""
        job_ended = self.fx.job_ended
        while busy():
            job_ended.clear()
            if not job_ended.wait(limit):
                return not busy()
        return True

    def close(self, package, await_async, why, wait=True):
        """Close `package` (the current computation): wait for its CPU-bound
        jobs (with `wait`; and the async ones with `await_async`), terminate
        the rest, release every node."""
        state, fx = self.state, self.fx
        if self.package is not package or state.comp is None or \
                state.comp.state is not st.CompState.RUNNING:
            return 0
        self._log(package, why)
        state.closing(why)
        work = state.work
        if wait:
            kinds = (st.CPU, st.ASYNC) if await_async else (st.CPU,)
            while not self._wait_ends(lambda: work.busy(kinds), 5):
                log.info('waiting for %d remote coroutines to finish', work.busy(kinds))
        fx.feed(work.terminate, (st.CPU, st.ASYNC))
        self._wait_ends(lambda: work.busy((st.CPU, st.ASYNC)), _msg_timeout())
        fx.feed(state.end, why)
        releases, fx.releases = fx.releases, []
        gevent.joinall(releases, timeout=_msg_timeout() * 2 + 1)
        fx.feed(state.closed)
        self.calm.thaw()
        self._remove_files(package)
        self.held.flush()
        self.package = None
        self.ended.set()
        self._next()
        return 0
