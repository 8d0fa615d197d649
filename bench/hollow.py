"""Hollow discoro nodes: many nodes in a few processes, to load one real scheduler.

Run by hand: `python bench/hollow.py --nodes 1024 --servers 8 --procs 4
--peer 127.0.0.1:PORT` (or `--scheduler 127.0.0.1`: a UDP ping instead of a
connection). It prints `hollow ready nodes=... pids=...` once every node
listens, then the nodes announce themselves; SIGTERM or SIGINT ends them
all, as a real node ends (its computation closed, goodbyes said).

What a hollow node is: a discoro node with no processes of its own. Node i
has an address of its own (127.16.0.1, 127.16.0.2, ...: on Linux every
127.x.y.z is the loopback's), listens on it (node and servers alike, the
ports of --tcp_ports or any) and speaks the real wire and service protocol
to the real scheduler, because it *is* the package's node and server code:

- each node is asyncoro.node's NodeService and each server asyncoro.server's
  server service, subclassed where the real ones fork, run user code or read
  /proc (the hooks `start_processes`, `kill_processes`, `availability`,
  `start_job`); what they send and answer, and when, is theirs;
- each node and server is a runtime of its own (`HollowRuntime`): its
  listener, and the package's peer table (asyncoro.peers: connections,
  introductions, requests and replies) and receive path (the distributed
  runtime's own frame dispatch into asyncoro.handlers); its service's
  coroutine is a coroutine of this process whose reference names that
  runtime, so the scheduler's calls come to its address;
- a server's job runs nothing: its stand-in (`HollowJob`) is a coroutine
  reference at the server that ends after --job_time seconds, and its end
  goes to its monitors as a real job's does, with the result of --result.

What differs from real nodes, and why: no broadcast (loopback only: a node
pings the --scheduler hosts where a real one broadcasts, and its UDP socket
listens on its own address only); node_setup, server_setup and the jobs'
code are not run, so a computation whose results matter is out of scope;
a node and its servers talk in-process (a real server connects to its node
over TCP: nothing the scheduler sees); the figures of a node's pulses are
this host's, read once a second for all the nodes of a process.

Any option not listed by --help is discoronode.py's, given to every node
(-c is --servers; --min_pulse_interval, --zombie_period, --secret, ...).
"""

import argparse
import copy
import ipaddress
import itertools
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gevent                                           # noqa: E402
import gevent.pool                                      # noqa: E402

from asyncoro import core, disasyncoro, netio, server   # noqa: E402
from asyncoro.discovery import Discovery                # noqa: E402
from asyncoro.discoronode import options_of             # noqa: E402
from asyncoro.failure import in_thread, run_guarded, spawn     # noqa: E402
from asyncoro.handlers import SEND                      # noqa: E402
from asyncoro.netio import Location                     # noqa: E402
from asyncoro.node import NodeService                   # noqa: E402
from asyncoro.peers import Peers                        # noqa: E402
from asyncoro.records import DiscoroNodeAvailInfo       # noqa: E402
from asyncoro.remote import SysCoro                     # noqa: E402
from asyncoro.transfers import Transfers                # noqa: E402

log = logging.getLogger('asyncoro.hollow')

FIRST_ADDR = '127.16.0.1'
_FIGURES_EVERY = 1.0        # seconds: the host's figures are read this often per process
_ANNOUNCING = 32            # nodes of a process that connect to their --peer at once


def node_addresses(first, count):
    """`count` addresses from `first` on, skipping those ending in .0 and
    .255; ValueError if they leave 127.0.0.0/8."""
    addr, found = ipaddress.ip_address(first), []
    while len(found) < count:
        if addr not in ipaddress.ip_network('127.0.0.0/8'):
            raise ValueError('%d node addresses from %s leave 127.0.0.0/8' % (count, first))
        if str(addr).split('.')[-1] not in ('0', '255'):
            found.append(str(addr))
        addr += 1
    return found


def raise_fd_limit(want=1048576):
    """Raise this process's open-file limit to `want` (root), else as far as
    the hard limit goes: each node and server holds a listener and a few
    connections. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((want, want), (max(hard, soft), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):       # not root: the next, lower, try
            continue
    return soft


# ---------------------------------------------------------------- one hollow runtime

class HollowRuntime:
    """The runtime of one hollow node or server: a listener at its own
    address and port, the package's peer table, and the distributed
    runtime's own receive path. It runs in the hub of this process's
    runtime (`hollows.rt`), whose coroutines its services are."""

    # the distributed runtime's own code: a frame is read, authenticated,
    # unpickled and handled here as in any runtime
    on_frames = disasyncoro.AsynCoro.on_frames
    _dispatch = disasyncoro.AsynCoro._dispatch
    _accept_loop = disasyncoro.AsynCoro._accept_loop
    _serve_incoming = disasyncoro.AsynCoro._serve_incoming
    registered = disasyncoro.AsynCoro.registered

    def __init__(self, hollows, addr, port, name):
        rt, opts = hollows.rt, hollows.options
        self.hollows = hollows
        self._tid, self._run_here, self._run_after = rt._tid, rt._run_here, rt._run_after
        self._xq = ()                   # (the calls from other threads on_frames runs first)
        self._closing = False
        self._registry = {}             # ('syscoro', name) -> a service's HollowCoro
        self.coros = {}                 # id -> (reference name, object): what frames may name
        self._key, self._certfile, self._keyfile = hollows.key, opts.certfile, opts.keyfile
        self.max_file_size = opts.max_file_size or 0
        self._name = name
        listener = netio.listen(addr, port)
        self._location = Location(addr, listener.getsockname()[1])
        self.peer_table = Peers(self, self._key, opts.certfile, opts.keyfile,
                                opts.max_frame_size, self.on_frames, _no_news, _no_news,
                                self._connection_closed)
        self.send_frame = self.peer_table.send_frame
        self.request = self.peer_table.request
        self.request_then = self.peer_table.request_then
        self.reply = self.peer_table.reply
        self.discovery = None           # a node's (HollowDiscovery)
        self._transfers = None
        self._listener = netio.AsyncSocket(listener)
        hollows.here.add(self._location)
        spawn(self._accept_loop)

    def __repr__(self):
        return '<HollowRuntime %s %s>' % (self._name, self._location)

    location = property(lambda self: self._location)
    name = property(lambda self: self._name)

    @property
    def dest_path(self):
        """Where files sent to it go (made at the first)."""
        path = os.path.join(self.hollows.work, '%s-%s' % (self._location.addr,
                                                          self._location.port))
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def transfers(self):
        if self._transfers is None:
            self._transfers = Transfers(self)
        return self._transfers

    def _connection_closed(self, conn, reason):
        if self._transfers is not None:
            self._transfers.cut(conn, reason)

    # ------------------------------------------------ what handlers and services ask

    def local_coro(self, coro_id, name):
        entry = self.coros.get(coro_id)
        return entry[1] if entry is not None and entry[0] == name else None

    def channel(self, name):
        return None

    def register(self, coro, name):
        self._registry[('syscoro', name)] = coro
        self.coros[coro._id] = (coro.reference()[0], coro)
        return 0

    def unregister(self, coro, name):
        if self._registry.get(('syscoro', name)) is coro:
            del self._registry[('syscoro', name)]
            return 0
        return -1

    def peer_status(self, coro):
        return self.peer_table.status_to(coro)

    def peer(self, loc, udp_port=0, stream_send=False, broadcast=False):
        """Pair with the runtime at `loc`; the hollow runtimes of this
        process talk in-process, not over TCP."""
        if not isinstance(loc, Location) or loc in self.hollows.here:
            return 0
        return self.peer_table.pair(loc, stream_send)

    def discover_peers(self, port=None):
        if self.discovery is not None:
            self.discovery.broadcast(port)

    def send_to(self, coro, message):
        """Send `message` to `coro` as a runtime does: at once to one of this
        process, else a SEND frame to its runtime."""
        if not getattr(coro, '_remote', True):
            return coro.send(message)
        name, coro_id, _, _ = coro.__reduce__()[1]
        return self.send_frame(coro.location, (SEND, coro_id, name, message), what=coro)

    def stop(self, goodbye):
        """Close: with `goodbye` as a runtime that ends (what is queued goes,
        then a goodbye to each peer), else at once, as a process killed."""
        if self._closing:
            return
        if goodbye:
            self.peer_table.close_all(core._msg_timeout())
        self._closing = True
        self.peer_table.close_connections('runtime finished' if goodbye else 'killed')
        self._listener.close()
        if self.discovery is not None:
            self.discovery.stop()
        self.hollows.here.discard(self._location)


def _no_news(location):
    """(A peer came or went: a hollow runtime has no locate() or channel to tell.)"""


class HollowCoro(SysCoro):
    """The coroutine of a hollow node's or server's service: a coroutine of
    this process whose reference names that node's or server's runtime
    (`hollow`), where it registers."""

    __slots__ = ('hollow',)

    def reference(self):
        """(prefixed name, id, addr, port) naming it at its hollow runtime."""
        name, coro_id, _, _ = super().__reduce__()[1]
        where = self.hollow.location
        return name, coro_id, where.addr, where.port

    def process_reference(self):
        """The reference that names it in this process (it unpickles here to itself)."""
        return super().__reduce__()[1]

    def __reduce__(self):
        return core._rebuild_coro, self.reference()

    @property
    def location(self):
        where = self.hollow.location
        return Location(where.addr, where.port)

    def __repr__(self):
        return '%s/%s@%s' % (self.reference()[:2] + (self.hollow.location,))

    def register(self, name=None):
        return self.hollow.register(self, name or self.name)

    def unregister(self, name=None):
        return self.hollow.unregister(self, name or self.name)


netio.plain_type(HollowCoro)


class HollowDiscovery(Discovery):
    """A hollow node's discovery: its UDP socket listens on the node's own
    address, and where a real node broadcasts it pings the --scheduler hosts."""

    def __init__(self, rt, udp_port, schedulers, scheduler_port):
        super().__init__(rt, rt.peer_table, rt._key, rt.location.addr, udp_port,
                         bind_addr=rt.location.addr)
        self.schedulers = schedulers
        self.scheduler_port = scheduler_port

    def broadcast(self, port=None):
        for host in self.schedulers:
            self.ping(host, port or self.scheduler_port, False)


# ---------------------------------------------------------------- servers and their jobs

class HollowJob:
    """A hollow server's job: what the scheduler sees of a real job's
    coroutine (a reference at the server; its monitors; its end, as
    MonitorException(it, (StopIteration, result)) to each) with nothing run:
    it ends after `seconds`, or when terminated."""

    __slots__ = ('server', '_id', 'ref_name', 'monitors', 'timer')

    def __init__(self, server, name, result, seconds):
        self.server = server
        self._id = next(server.hollows.job_ids)
        self.ref_name = '~' + name
        self.monitors = []
        loop = gevent.get_hub().loop
        if seconds > 0:
            self.timer = loop.timer(seconds)
            self.timer.start(run_guarded, self.end, result)
        else:
            self.timer = loop.run_callback(run_guarded, self.end, result)
        server.hollow_rt.coros[self._id] = (self.ref_name, self)

    def __reduce__(self):
        where = self.server.hollow_rt.location
        return core._rebuild_coro, (self.ref_name, self._id, where.addr, where.port)

    def __repr__(self):
        return '%s/%s@%s' % (self.ref_name, self._id, self.server.hollow_rt.location)

    def notify(self, monitor):
        self.monitors.append(monitor)
        return 0

    def terminate(self):
        self.end(None)          # (a terminated coroutine ends with (StopIteration, None))
        return 0

    def cancel(self):
        """Its server is killed: it just goes."""
        self.monitors = None
        self.timer.stop()
        self.server.hollow_rt.coros.pop(self._id, None)

    def end(self, value):
        monitors = self.monitors
        if monitors is None:
            return
        self.cancel()
        msg = core.MonitorException(self, (StopIteration, value))
        rt = self.server.hollow_rt
        for monitor in monitors:
            rt.send_to(monitor, msg)


netio.plain_type(HollowJob)


class _Exit:
    """A hollow server's stand-in for a real server's `done` lock: its
    close() releases it, and the server ends as a real server's process
    does (goodbyes, then its node hears it exited)."""

    def __init__(self, server):
        self.server = server
        self.held = True

    def locked(self):
        return self.held

    def release(self):
        self.held = False
        spawn(self.server.exit)


class _InHollowRuntime:
    """A service of the package living in a hollow runtime (`hollow_rt`):
    its runtime is that one, and its coroutine a HollowCoro of it."""

    def runtime(self):
        return self.hollow_rt

    def make_coro(self):
        coro = HollowCoro(self._mailbox)
        coro.hollow = self.hollow_rt
        return coro


class HollowServer(_InHollowRuntime, server._ServerService):
    """A server of a hollow node: the package's server service, in runtime
    `rt`; its jobs are HollowJobs."""

    def __init__(self, node, spec, index, rt):
        self.hollow_rt = rt
        self.hollows = node.hollows
        self.hollow_node = node
        self.killed = False
        super().__init__(spec, index, {}, _Exit(self))

    def start_job(self, name, source, args, kwargs):
        settings = self.hollows.settings
        result = (args[0] if args else None) if settings.result == 'echo' else None
        return HollowJob(self, name, result, settings.job_time)

    def exit(self):
        """It ends after close(): goodbyes to its peers, then its node hears
        that it exited (status 0)."""
        if self.killed:
            return
        self.killed = True
        self.stop('the server ended')
        self.hollow_rt.stop(goodbye=True)
        self.hollow_node.server_exited(self)

    def kill(self):
        """Its process is killed: its jobs and connections just go."""
        if self.killed:
            return
        self.killed = True
        for job in list(self.jobs):
            job.cancel()
        self.stop('killed')
        self.hollow_rt.stop(goodbye=False)


# ---------------------------------------------------------------- nodes

class HollowNode(_InHollowRuntime, NodeService):
    """A hollow node: the package's node service in runtime `rt`, whose
    computations' servers are HollowServers of this process."""

    def __init__(self, hollows, rt, options):
        self.hollow_rt = rt
        self.hollows = hollows
        self.hollow_servers = {}        # index -> HollowServer of the computation
        super().__init__(options, (None, None, None))

    def _read_reports(self):
        """(No zygote: its servers are in this process, and report by calls.)"""

    def availability(self):
        return self.hollows.availability(self.hollow_rt.location, [
            srv.hollow_rt.location for srv in self.hollow_servers.values() if not srv.killed])

    def start_processes(self, comp, spec):
        # node_setup is not run (a hollow node runs no user code); the servers
        # reach their node in-process: the reference to it that unpickles here
        comp.setup_result.set(0)
        spec = dict(spec, node=self.coro.process_reference())
        addr = self.hollow_rt.location.addr
        for index, port in spec['servers']:
            try:
                rt = HollowRuntime(self.hollows, addr, port,
                                   '%s_proc-%d' % (self.options.name, index))
            except OSError as exc:      # as a real server whose port is taken
                self._report_server_failed(comp, index, 'server %d: %s' % (index, exc))
                continue
            comp.servers[index] = os.getpid()
            self.hollow_servers[index] = HollowServer(self, spec, index, rt)

    def kill_processes(self, comp):
        servers, self.hollow_servers = self.hollow_servers, {}
        for srv in servers.values():
            srv.kill()

    def _clean(self):
        path = os.path.join(self.hollows.work, '%s-%s' % (self.hollow_rt.location.addr,
                                                          self.hollow_rt.location.port))
        if os.path.isdir(path):
            in_thread(shutil.rmtree, path, True)

    def server_exited(self, srv):
        """A server of it ended by itself (closed): as the report of a real
        server's exit."""
        if self.hollow_servers.get(srv._index) is srv:
            del self.hollow_servers[srv._index]
            comp = self.comp
            if comp is not None and comp.key == srv._spec['key']:
                self._report_server_exit(comp, srv._index, os.getpid(), 0)

    def stop_node(self):
        """The program ends: the computation here ends, goodbyes are said."""
        self.quitting = True
        if self.comp is not None:
            self._end_computation(self.comp, 'the node quits')
        self.stop('the node quits')
        self.hollow_rt.stop(goodbye=True)


# ---------------------------------------------------------------- the nodes of one process

class Hollows:
    """The hollow nodes of this process (made in the hub of its runtime
    `rt`), and what they share: the secret's key, the settings, the host's
    figures, the ids of their jobs, the Locations of their runtimes."""

    def __init__(self, rt, settings, options, work):
        self.rt = rt
        self.settings = settings
        self.options = options          # discoronode.py's, for every node
        self.work = work
        secret = options.secret if options.secret not in ('', None) else \
            os.environ.get('ASYNCORO_SECRET', '')
        self.key = netio.secret_key(secret)
        self.here = set()               # Locations of the runtimes of this process
        self.job_ids = itertools.count(1 << 40)
        self.nodes = []
        self._figures = None            # (when, (cpu, memory, disk, swap, rss per runtime))
        self._measuring = None

    def start(self, addresses, first_index):
        """Make a node at each address (a runtime and its service)."""
        opts = self.options
        for i, addr in enumerate(addresses, first_index):
            options = copy.copy(opts)
            options.ip_addr = addr
            options.name = '%s-%d' % (self.settings.name, i)
            options.node_dir = os.path.join(self.work, 'node-%s' % addr)
            rt = HollowRuntime(self, addr, opts.node_port, '%s_proc-0' % options.name)
            rt.discovery = HollowDiscovery(rt, opts.udp_port, self.settings.scheduler,
                                           opts.scheduler_port)
            rt.discovery.start(False)
            self.nodes.append(HollowNode(self, rt, options))

    def announce(self):
        """Each node says it is there, as a real one does at its start: a
        ping to the schedulers (where a real node broadcasts), and a
        connection to each --peer; a few nodes at a time."""
        pool = gevent.pool.Pool(_ANNOUNCING)
        for node in self.nodes:
            node.hollow_rt.discover_peers(self.options.scheduler_port)
            for peer in self.options.peer:
                pool.spawn(node.hollow_rt.peer, Location(*peer.rsplit(':', 1)))
            gevent.sleep(0.001 if self.settings.scheduler else 0)
        pool.join()

    def stop(self):
        gevent.joinall([spawn(node.stop_node) for node in self.nodes],
                       timeout=core._msg_timeout() * 3)

    # ---------------- the host's figures, shared by the nodes' pulses

    def availability(self, location, servers):
        """A DiscoroNodeAvailInfo for node `location` with `servers`, from
        this host's figures (read in the thread pool at most once a second)."""
        figures = self._figures
        now = time.monotonic()
        if figures is None:
            self._figures = figures = (now, in_thread(self._measure))
        elif now - figures[0] > _FIGURES_EVERY and self._measuring is None:
            self._measuring = spawn(self._remeasure)
        cpu, memory, disk, swap, rss = figures[1]
        pid = os.getpid()
        return DiscoroNodeAvailInfo(location, cpu, memory, disk, swap, [
            {'location': loc, 'pid': pid, 'cpu': 0.0, 'rss': rss} for loc in servers])

    def _remeasure(self):
        try:
            self._figures = (time.monotonic(), in_thread(self._measure))
        finally:
            self._measuring = None

    def _measure(self):
        import psutil
        return (100.0 - psutil.cpu_percent(), psutil.virtual_memory().available,
                psutil.disk_usage(self.work).free, 100.0 - psutil.swap_memory().percent,
                psutil.Process().memory_info().rss // max(len(self.here), 1))


# ---------------------------------------------------------------- the program

def _parser():
    parser = argparse.ArgumentParser(
        prog='hollow.py', description=__doc__.split('\n\n')[0],
        epilog='A hollow job runs nothing: it ends after --job_time with the result of '
        '--result, so a computation whose results matter is out of scope (and so are '
        'node_setup and server_setup, which are not run). Other options are discoronode.py\'s, '
        'given to every node.')
    add = parser.add_argument
    add('--nodes', type=int, default=1, help='how many nodes (default %(default)s)')
    add('--servers', type=int, default=8, help='servers per node (default %(default)s)')
    add('--procs', type=int, default=1, help='processes the nodes are spread over '
        '(default %(default)s)')
    add('--job_time', type=float, default=0.0,
        help='seconds a job takes before its server answers its end (default 0)')
    add('--result', choices=('none', 'echo'), default='none',
        help="a job's result: None, or its first argument (default none)")
    add('--first_addr', default=FIRST_ADDR,
        help='the first node\'s address; the next ones follow, in 127.0.0.0/8 (default '
        '%(default)s)')
    add('--scheduler', action='append', default=[], metavar='HOST',
        help='ping the scheduler at this host (on --scheduler_port), where a real node '
        'broadcasts; repeatable')
    add('--name', default='hollow', help="the nodes' names: NAME-<i> (default %(default)s)")
    add('--work', default=None, help='a folder for files sent to the nodes (default: a '
        'temporary one)')
    return parser


def options(argv):
    """(hollow settings, discoronode options for every node)."""
    settings, rest = _parser().parse_known_args(argv)
    if settings.nodes < 1 or settings.servers < 1 or settings.procs < 1:
        raise SystemExit('hollow.py: --nodes, --servers and --procs must be at least 1')
    node_options = options_of(['-c', str(settings.servers)] + rest)
    return settings, node_options


def serve(settings, node_options, addresses, first_index, ready):
    """Run the nodes at `addresses` in this process until SIGTERM or SIGINT;
    `ready(line)` once they listen."""
    import tempfile
    raise_fd_limit()
    disasyncoro.logger.setLevel(logging.DEBUG if node_options.debug else logging.WARNING)
    disasyncoro.MsgTimeout = node_options.msg_timeout
    work = settings.work or tempfile.mkdtemp(prefix='asyncoro-hollow-')
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(('127.0.0.1', 0))
    udp_port = probe.getsockname()[1]       # its own runtime's, which no one pings
    probe.close()
    rt = disasyncoro.AsynCoro(node='127.0.0.1', udp_port=udp_port, discover_peers=False,
                              name='hollow-%d' % os.getpid(), dest_path=work,
                              secret=node_options.secret, certfile=node_options.certfile,
                              keyfile=node_options.keyfile,
                              max_frame_size=node_options.max_frame_size)
    rt.ignore_peers(True)
    hollows = rt._run_here(Hollows, rt, settings, node_options, work)
    rt._run_here(hollows.start, addresses, first_index)
    ready('ready %d %d' % (len(addresses), os.getpid()))
    rt._run_here(spawn, hollows.announce)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1):
        pass
    rt._run_here(hollows.stop)
    rt.terminate()
    if not settings.work:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    """Fork --procs processes, each with its share of the nodes; print the
    ready line once all listen; end them all on SIGTERM or SIGINT.

    :returns: the exit status (1 if a process died or did not start).
    """
    settings, node_options = options(argv)
    try:
        addresses = node_addresses(settings.first_addr, settings.nodes)
    except ValueError as exc:
        raise SystemExit('hollow.py: %s' % exc)
    procs = min(settings.procs, settings.nodes)
    share = -(-settings.nodes // procs)
    children = {}
    for k in range(procs):
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                serve(settings, node_options, addresses[k * share:(k + 1) * share], k * share,
                      lambda line: os.write(write_end, (line + '\n').encode()))
            except BaseException:     # the process's edge: say why, then go
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        children[pid] = read_end
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    failed = _wait_ready(children)
    if not failed:
        print('hollow ready nodes=%d servers=%d procs=%d pids=%s addrs=%s-%s' % (
            settings.nodes, settings.nodes * settings.servers, procs,
            ','.join(str(pid) for pid in children), addresses[0], addresses[-1]), flush=True)
        while not done.is_set():
            pid, _ = _reap(children)
            if pid:
                print('hollow.py: process %d ended by itself' % pid, file=sys.stderr)
                failed = True
                break
            done.wait(0.5)
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            children.pop(pid)
    deadline = time.monotonic() + 30
    while children and time.monotonic() < deadline:
        if not _reap(children)[0]:
            time.sleep(0.1)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 1 if failed else 0


def _wait_ready(children):
    """Read each process's ready line: True if one fails to say it within
    two minutes."""
    deadline = time.monotonic() + 120
    for pid, fd in children.items():
        line = b''
        while not line.endswith(b'\n'):
            import select
            if not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
                print('hollow.py: process %d did not start within 120 s' % pid,
                      file=sys.stderr)
                return True
            chunk = os.read(fd, 256)
            if not chunk:
                print('hollow.py: process %d ended as it started' % pid, file=sys.stderr)
                return True
            line += chunk
    return False


def _reap(children):
    for pid in list(children):
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            os.close(children.pop(pid))
            return pid, status
    return 0, None


if __name__ == '__main__':
    sys.exit(main())
