"""asyncoro.schedstate: what the discoro scheduler knows, and nothing it does.

What it owns: the states of the nodes, servers, jobs and computation the
scheduler knows (`NodeState`, `ServerState`, `JobState`, `CompState`: one
field of one record each, `Node`, `Server`, `Job`, `Comp`), the tables of
the moves allowed between them, and `SchedState`: the computation running
and its life, with two books: `Cluster` (every node known, the computation's
servers) and `Work` (its jobs, the queues of those that wait for a server),
and the placement (asyncoro.placement) that picks servers.

How it works: the scheduler's I/O shell (asyncoro.scheduler) turns each
message, answer and timer into one call of a *stimulus* method here (a node
was found, refused, set up, went silent; a server came up or went; a job was
asked for, started, ended; time passed). The method changes states, only
through `Cluster._node_to`, `Cluster._server_to`, `Work._job_to` and
`SchedState._comp_to`, which refuse a move the tables do not allow, and
appends *effects* to `SchedState.effects`: tuples whose first item (a
constant below) says what the shell must do: start this job there, answer
that call, tell the client this status. The shell takes them with `take()`
and carries them out in order (asyncoro.schedio). Nothing here blocks,
sends, reads the clock or imports gevent, sockets or time: times come in as
arguments, so every transition is tested as a table, without processes.

Answers from other processes carry what they are about (a node's setup
`part`, a job's start `token`): a late one, about a setup or a start that is
over, changes nothing (a job that started too late is terminated).

Words: a node is *engaged* while it is reserved for the computation (from
RESERVING to DRAINING); a server is *free* while it is ready, its node is
UP and it runs no CPU job; a job *waits* while it is WAITING or RETRYING.
"""

import collections
import enum
import itertools

from asyncoro.placement import Placement

__all__ = []


class _State(enum.Enum):
    """A state: its members are singletons, so they hash by identity (in C:
    enum's own hash is Python code, and the tables look states up at every
    move of every job)."""
    __hash__ = object.__hash__


class NodeState(_State):
    """A node's part in the computation running (IDLE or LOST with none)."""
    IDLE = 'idle'               # known; not (yet) asked to serve the computation
    RESERVING = 'reserving'     # asked to reserve itself for it
    SENDING = 'sending'         # reserved; the computation's files go to it
    ENABLING = 'enabling'       # waits for the client's enable_node (disable_nodes)
    SETTING_UP = 'setting up'   # runs node_setup and starts its servers
    UP = 'up'                   # serves the computation: its ready servers take jobs
    DRAINING = 'draining'       # finishes the jobs it runs; takes no more
    WAITING = 'waiting'         # cannot serve it now (busy with another computation, out
                                #   of its service window): asked again when it is available
    UNUSED = 'unused'           # node_allocations give it no server
    LEFT_OUT = 'left out'       # cannot serve this computation, for good (the reason is kept)
    LOST = 'lost'               # gone (its connection, or its pulses): it may come back
    REJOINING = 'rejoining'     # lost, and being asked whether it is back


class ServerState(_State):
    """A server of the computation."""
    ENABLING = 'enabling'       # waits for the client's enable_server (disable_servers)
    SETTING_UP = 'setting up'   # runs server_setup
    READY = 'ready'             # takes jobs (while its node is UP)
    GONE = 'gone'               # closed or lost; in no table any more


class JobState(_State):
    """A job of the computation."""
    WAITING = 'waiting'         # for a server: any, or the one it asked for
    STARTING = 'starting'       # sent to its server; the answer is awaited
    RUNNING = 'running'         # started there; its end is awaited
    RETRYING = 'retrying'       # lost with its server; waits to be started again
    ENDED = 'ended'             # over (`outcome`, or its end, says how)


class CompState(_State):
    """The computation running."""
    RUNNING = 'running'         # its nodes are set up and run its jobs
    CLOSING = 'closing'         # waits for its jobs (and still takes new ones)
    ENDING = 'ending'           # its nodes are being released
    CLOSED = 'closed'           # over: the next computation may start


N, S, J, C = NodeState, ServerState, JobState, CompState
ENGAGED = frozenset((N.RESERVING, N.SENDING, N.ENABLING, N.SETTING_UP, N.UP, N.DRAINING))
# the states of a node that may yet serve the computation: a job waiting is not hopeless
_HOPEFUL = frozenset((N.IDLE, N.RESERVING, N.SENDING, N.ENABLING, N.SETTING_UP, N.UP,
                      N.WAITING, N.LOST, N.REJOINING))
_GONE = (N.LOST, N.REJOINING)

# the moves each state allows (tests/test_schedstate.py walks every one)
NODE_MOVES = {
    N.IDLE: {N.RESERVING, N.UNUSED, N.LOST},
    N.RESERVING: {N.SENDING, N.WAITING, N.LEFT_OUT, N.LOST, N.IDLE},
    N.SENDING: {N.ENABLING, N.SETTING_UP, N.LEFT_OUT, N.LOST, N.IDLE},
    N.ENABLING: {N.SETTING_UP, N.LEFT_OUT, N.LOST, N.IDLE},
    N.SETTING_UP: {N.UP, N.DRAINING, N.WAITING, N.LEFT_OUT, N.LOST, N.IDLE},
    N.UP: {N.DRAINING, N.WAITING, N.LEFT_OUT, N.LOST, N.IDLE},
    N.DRAINING: {N.WAITING, N.LEFT_OUT, N.LOST, N.IDLE},
    N.WAITING: {N.RESERVING, N.LEFT_OUT, N.LOST, N.IDLE},
    N.UNUSED: {N.IDLE},
    N.LEFT_OUT: {N.IDLE},
    N.LOST: {N.REJOINING, N.LEFT_OUT, N.IDLE},
    N.REJOINING: {N.LOST, N.LEFT_OUT, N.IDLE},
}
SERVER_MOVES = {
    S.ENABLING: {S.SETTING_UP, S.READY, S.GONE},
    S.SETTING_UP: {S.READY, S.GONE},
    S.READY: {S.GONE},
    S.GONE: set(),
}
JOB_MOVES = {
    None: {J.WAITING},
    J.WAITING: {J.STARTING, J.ENDED},
    J.STARTING: {J.RUNNING, J.WAITING, J.RETRYING, J.ENDED},
    J.RUNNING: {J.RETRYING, J.ENDED},
    J.RETRYING: {J.STARTING, J.ENDED},
    J.ENDED: set(),
}
COMP_MOVES = {
    C.RUNNING: {C.CLOSING},
    C.CLOSING: {C.ENDING},
    C.ENDING: {C.CLOSED},
    C.CLOSED: set(),
}

CPU, ASYNC = 'cpu', 'async'

# Why a node, server or job went: the code of a loss or a close (the text
# says the rest). The first three are losses (something died or was cut
# off); the others are closes.
DIED = 'died'                   # its process died
DISCONNECTED = 'disconnected'   # its connection was lost (its process died or the network failed)
SILENT = 'silent'               # its node sent no pulse for 5 pulse intervals
NODE_ENDED = 'node ended'       # its node ended its part (quit, service window, left out)
SETUP_FAILED = 'setup failed'   # server_setup did not give 0
NOT_STARTED = 'not started'     # a server that could not start
CLOSED = 'closed'               # the computation was closed
LOSSES = frozenset((DIED, DISCONNECTED, SILENT))

# The effects: (TAG, ...) tuples for the shell, to carry out in order. Each
# line: the tag, then what follows it in the tuple.
PROBE = 'probe'             # key, coro: ask the peer at `key` whether it is a node (`coro`:
                            #   its node service if known, else None)
REJOIN = 'rejoin'           # node: ask a lost node whether it is back
RESERVE = 'reserve'         # node, part: reserve the node (node.cpus servers)
SEND_FILES = 'send files'   # node, part: send it the computation's files
SET_UP = 'set up'           # node, part, args: node_setup(*args) there, then its servers
CLOSE_NODE = 'close node'   # node: tell it to end its part (no answer awaited)
RELEASE = 'release'         # node: ask it to end its part (awaited, at the computation's end)
SERVER_SETUP = 'server setup'   # server, args: run server_setup(*args) there
CLOSE_SERVER = 'close server'   # server: tell it to end
PEERS = 'peers'             # server, [Location]: it pairs with these servers
STATUS = 'status'           # name, subject, code, text: DiscoroStatus(Scheduler.<name>,
                            #   subject) for the client and the monitors; code and text (or
                            #   None) say why a node or server went, for the monitors
LOG = 'log'                 # level, text, client: one line ('warning', 'info', 'debug', or
                            #   'news': a computation's progress, INFO where the client is
                            #   elsewhere, DEBUG in it); with `client`, a client elsewhere is
                            #   told the line too
START = 'start'             # job, server, token: send the job to the server
ANSWER = 'answer'           # job: its start is over: its run() gets job.outcome (its rcoro,
                            #   a Refused, a Lost, or the shell's failure object)
CREATED = 'created'         # job, first: it runs (CoroCreated for the client and the
                            #   monitors); with `first`, its run() is answered too (ANSWER)
ENDED = 'ended'             # job, msg, lost: it ended: its MonitorException `msg`, or None
                            #   and `lost`, a Lost: it went with its server; its result
LOST_TRY = 'lost try'       # job, lost: this attempt was lost (its end for status_coro); it
                            #   is run again
TERMINATE = 'terminate'     # rcoro: terminate this remote coroutine
WAITING = 'waiting'         # (nothing): the count of jobs that wait for a server changed;
                            #   the monitors are to hear it (then Work.waiting_heard)


class Lost(collections.namedtuple('Lost', 'server code cause')):
    """Why a job went with its server: the server's Location, a code
    (DIED, ...) and the cause in words."""
    __slots__ = ()


class Refused(collections.namedtuple('Refused', 'reason')):
    """The outcome of a job that was not run: why, in words."""
    __slots__ = ()


class StateError(RuntimeError):
    """A move the tables do not allow: a bug of the scheduler."""


class Node:
    """A node the scheduler knows."""

    __slots__ = ('addr', 'key', 'info', 'coro', 'state', 'why', 'part', 'cpus',
                 'pulse_interval', 'last_pulse', 'servers', 'slot', 'announced', 'enable_args',
                 'failed')

    def __init__(self, addr, key, info, coro, slot):
        self.addr = addr            # its IP address: the node's key
        self.key = key              # its process's Location (the peer it is)
        self.info = info            # DiscoroNodeInfo (opaque here)
        self.coro = coro            # its node service (opaque here)
        self.state = N.IDLE
        self.why = None             # WAITING, LEFT_OUT, LOST: why, in words
        self.part = None            # the token of its latest setup
        self.cpus = 0               # servers asked of it for the computation
        self.pulse_interval = None  # what it keeps for the computation
        self.last_pulse = None      # when it last pulsed (the shell's clock)
        self.servers = {}           # Location -> Server of the computation
        self.slot = slot            # its placement.NodeSlot
        self.announced = False      # the client heard NodeDiscovered of this part
        self.enable_args = None     # enable_node's arguments, once given
        self.failed = {}            # server index -> why it could not start

    def __repr__(self):
        return '<Node %s %s>' % (self.addr, self.state.value)


class Server:
    """A server of the computation."""

    __slots__ = ('location', 'node', 'coro', 'state', 'slot', 'jobs', 'waiting')

    def __init__(self, location, node, coro, slot):
        self.location = location
        self.node = node
        self.coro = coro            # its server service (opaque here)
        self.state = S.ENABLING
        self.slot = slot            # its placement.Slot
        self.jobs = {}              # job id -> Job STARTING or RUNNING here
        self.waiting = ()           # CPU jobs that wait for this server alone (a deque once any)

    def __repr__(self):
        return '<Server %s %s>' % (self.location, self.state.value)


class Job:
    """A job of the computation, from its run() to its end."""

    __slots__ = ('id', 'kind', 'where', 'want_result', 'retries', 'spec', 'state', 'server',
                 'token', 'rcoro', 'origin', 'attempts', 'outcome', 'answered', 'info')

    def __init__(self, job_id, kind, where, want_result, retries, spec):
        self.id = job_id
        self.kind = kind            # CPU or ASYNC
        self.where = where          # None, a node's address, or a server's Location
        self.want_result = want_result
        self.retries = retries      # how many more times it is run again when lost
        self.spec = spec            # what the shell sends to the server (opaque here)
        self.state = None           # a JobState once asked for
        self.server = None          # the Server it starts or runs on
        self.token = 0              # which of its starts an answer is about
        self.rcoro = None           # its remote coroutine while it runs
        self.origin = None          # the rcoro its run() answered (its result goes to it)
        self.attempts = ()          # the Lost of each earlier attempt
        self.outcome = None         # what its run() is answered (see ANSWER)
        self.answered = False
        self.info = None            # the shell's DiscoroCoroInfo of its latest start

    def __repr__(self):
        return '<Job %s %s %s>' % (self.id, self.kind, self.state and self.state.value)


class Comp:
    """The computation the scheduler runs (what it needs of it)."""

    __slots__ = ('id', 'state', 'pulse_interval', 'retry_lost', 'disable_nodes',
                 'disable_servers', 'server_setup', 'peers_communicate', 'public_id', 'why')

    def __init__(self, comp_id, pulse_interval, retry_lost=0, disable_nodes=False,
                 disable_servers=False, server_setup=False, peers_communicate=False,
                 public_id=None):
        self.id = comp_id
        self.state = C.RUNNING
        self.pulse_interval = pulse_interval
        self.retry_lost = retry_lost
        self.disable_nodes = disable_nodes
        self.disable_servers = disable_servers
        self.server_setup = server_setup        # whether it has one
        self.peers_communicate = peers_communicate
        self.public_id = public_id              # id(computation), for ComputationClosed
        self.why = None                         # why it closes


class _Bounded(collections.OrderedDict):
    """A dict that forgets its oldest entries beyond LIMIT."""

    LIMIT = 10000

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if len(self) > self.LIMIT:
            self.popitem(last=False)


def _listed(items, most=8):
    """'a, b, c' of at most `most` items, and how many more."""
    items = list(items)
    shown = ', '.join(str(item) for item in items[:most])
    return shown + (' and %d more' % (len(items) - most) if len(items) > most else '')


def _is_server(where):
    """Whether a job's `where` names one server (a Location), not a node (an address)."""
    return where is not None and not isinstance(where, str)


class SchedState:
    """Everything the scheduler knows (see the module docstring): the
    computation running and its life, the effects, and two books, `cluster`
    (nodes and servers) and `work` (jobs and their queues), whose stimulus
    methods the shell calls too. The shell reads the tables for its views
    and changes nothing in them."""

    def __init__(self):
        self.effects = []
        self.placement = Placement()
        self.comp = None                # the Comp running, or None
        self.cluster = Cluster(self)
        self.work = Work(self)

    def take(self):
        """The effects so far, in order; they are cleared (the list stays
        the same object: the books append to it directly)."""
        effects = self.effects[:]
        del self.effects[:]
        return effects

    def emit(self, *effect):
        self.effects.append(effect)

    def log(self, level, text, client=False):
        self.effects.append((LOG, level, text, client))

    def running(self):
        """Whether a computation runs and takes nodes."""
        return self.comp is not None and self.comp.state is C.RUNNING

    def _comp_to(self, state):
        comp = self.comp
        if state not in COMP_MOVES[comp.state]:
            raise StateError('computation %x: %s -> %s' % (comp.id, comp.state.value,
                                                           state.value))
        comp.state = state

    # ---------------- the computation's life

    def begin(self, comp, cpus_of):
        """`comp` starts: every node known is asked to serve it
        (`cpus_of(node)`: how many of the node's servers it uses)."""
        if self.comp is not None:
            raise StateError('computation %x begins while %x runs' % (comp.id, self.comp.id))
        self.comp = comp
        self.cluster.use_all(cpus_of)

    def closing(self, why):
        """The computation is closed: it waits for its jobs (and still
        takes new ones), then `end`."""
        comp = self.comp
        if comp is not None and comp.state is C.RUNNING:
            comp.why = why
            self._comp_to(C.CLOSING)

    def end(self, why):
        """The computation ends now: what waits is refused, its nodes are
        released (RELEASE), its servers close and what they ran is lost."""
        comp = self.comp
        if comp is None or comp.state in (C.ENDING, C.CLOSED):
            return
        comp.why = comp.why or why
        self._comp_to(C.ENDING)
        self.work.refuse_all('the computation was closed')
        self.cluster.release_all()

    def closed(self):
        """Its nodes are released: the computation is over."""
        comp = self.comp
        if comp is None:
            return
        self._comp_to(C.CLOSED)
        self.cluster.idle_all()
        self.work.early.clear()
        self.comp = None
        self.emit(STATUS, 'ComputationClosed', comp.public_id, CLOSED, comp.why)

    def tick(self, now):
        """Time passed (`now`, the shell's clock): see Cluster.tick."""
        if self.comp is not None:
            self.cluster.tick(now)

    def next_tick(self, limit=None):
        """Seconds until `tick` is due: the shortest pulse interval kept
        (`limit` at most: the scheduler's own pulse_interval)."""
        intervals = [node.pulse_interval for node in self.cluster.nodes.values()
                     if node.pulse_interval and node.state in ENGAGED]
        intervals.append(self.comp.pulse_interval if self.comp else 10)
        if limit is not None:
            intervals.append(limit)
        return min(intervals)

    # ---------------- views

    def hopeless(self):
        """Why no server will come for the computation (every node known
        has been left out of it), or None while one may."""
        cluster = self.cluster
        counts = cluster.node_counts
        if cluster.probing or not counts[N.LEFT_OUT] or any(counts[s] for s in _HOPEFUL):
            return None
        return 'no node can run it: %s' % '; '.join(
            'node %s: %s' % (node.addr, node.why)
            for node in sorted(cluster.nodes.values(), key=lambda n: n.addr)
            if node.state is N.LEFT_OUT)

    def why_waiting(self):
        """Why a job of the computation waits for a server, in words: the
        parts about nodes and servers (the shell adds the network's)."""
        by_state = collections.defaultdict(list)
        for node in sorted(self.cluster.nodes.values(), key=lambda n: n.addr):
            by_state[node.state].append(node)
        parts = ['node %s does not serve it: %s' % (node.addr, node.why)
                 for node in by_state[N.LEFT_OUT][:8]]
        parts += ['node %s cannot serve it now: %s (it is asked again when it is available)'
                  % (node.addr, node.why) for node in by_state[N.WAITING][:8]]
        lost = by_state[N.LOST] + by_state[N.REJOINING]
        if lost:
            parts.append('lost, asked now and then whether they are back: %s'
                         % _listed('%s (%s)' % (node.addr, node.why) for node in lost))
        starting = [node.addr for state in (N.RESERVING, N.SENDING, N.SETTING_UP)
                    for node in by_state[state]]
        if starting:
            parts.append('being set up: %s' % _listed(starting))
        if by_state[N.ENABLING]:
            parts.append('waiting for enable_node: %s'
                         % _listed(node.addr for node in by_state[N.ENABLING]))
        failed = ['server %d of node %s: %s' % (index, node.addr, why)
                  for node in self.cluster.nodes.values()
                  for index, why in sorted(node.failed.items())]
        if failed:
            parts.append('servers that could not start: %s' % _listed(failed, 4))
        up = by_state[N.UP]
        if up:
            ready = [s for node in up for s in node.servers.values() if s.state is S.READY]
            parts.append('%d server(s) of %d node(s) ready, %d busy with CPU jobs'
                         % (len(ready), len(up), sum(1 for s in ready if s.slot.busy)))
        if by_state[N.DRAINING]:
            parts.append('draining (no new jobs): %s'
                         % _listed(node.addr for node in by_state[N.DRAINING]))
        return parts

    def check(self):
        """Raise AssertionError naming the first invariant that does not
        hold (the tests call it after every stimulus)."""
        _check_counts(self)
        _check_jobs(self)
        _check_servers(self)
        _check_waiting(self)


class Cluster:
    """The nodes known and the computation's servers: their states and
    the stimuli about them (a part of SchedState: `state`)."""

    def __init__(self, state):
        self.state = state
        self.nodes = {}                 # addr -> Node
        self.by_key = {}                # a node's peer key (Location) -> Node
        self.probing = set()            # peer keys being asked whether they are nodes
        self.servers = {}               # Location -> Server of the computation
        self.node_counts = dict.fromkeys(NodeState, 0)
        self._parts = itertools.count(1)

    def _node_to(self, node, state, why=None):
        """The one place a node changes state."""
        if state is not node.state:
            if state not in NODE_MOVES[node.state]:
                raise StateError('node %s: %s -> %s' % (node.addr, node.state.value,
                                                        state.value))
            self.node_counts[node.state] -= 1
            self.node_counts[state] += 1
            node.state = state
            self.state.placement.set_usable(node.slot, state is N.UP)
        node.why = why

    def _server_to(self, server, state):
        """The one place a server changes state."""
        if state not in SERVER_MOVES[server.state]:
            raise StateError('server %s: %s -> %s' % (server.location, server.state.value,
                                                       state.value))
        server.state = state
        if state is S.READY:
            self.state.placement.set_ready(server.slot, True)
        elif state is S.GONE:
            self.state.placement.forget(server.slot)

    # ================================================================ peers and nodes

    def peer_online(self, key, coro=None):
        """A peer appeared at `key` (with `coro`, a node service it says it
        runs): ask it whether it is a node, once."""
        node = self.by_key.get(key)
        if key in self.probing or (node is not None and node.state not in _GONE):
            return
        self.probing.add(key)
        self.state.emit(PROBE, key, coro)

    def probe_done(self, key, addr=None, info=None, coro=None, cpus=0):
        """The peer at `key` was asked: it is node `addr` (its `info`, its
        service `coro`; `cpus`: how many of its servers the computation
        uses), or (addr None) not a node."""
        self.probing.discard(key)
        if addr is not None:
            node = self.nodes.get(addr)
            if node is not None and node.state in _GONE:
                self.state.log('info', 'node %s (%s) is back'
                               % (addr, getattr(info, 'name', addr)))
            self._known(addr, key, info, coro, cpus)
        self.state.work.check_hope()

    def _known(self, addr, key, info, coro, cpus):
        """Node `addr` is there: found, or back after it was lost (its
        process may be a new one, at another port)."""
        node = self.nodes.get(addr)
        if node is None:
            node = Node(addr, key, info, coro, self.state.placement.node_slot(None))
            node.slot.node = node
            self.nodes[addr] = node
            self.node_counts[N.IDLE] += 1
        elif node.state in _GONE:
            del self.by_key[node.key]
            node.key, node.info, node.coro = key, info, coro
            self._node_to(node, N.IDLE)
        else:
            return
        self.by_key[key] = node
        self._use(node, cpus)

    def use_all(self, cpus_of):
        for node in list(self.nodes.values()):
            if node.state is N.IDLE:
                self._use(node, cpus_of(node))

    def _use(self, node, cpus):
        """Ask `node` to serve the computation with `cpus` servers."""
        state = self.state
        if not state.running():
            return
        if cpus <= 0:
            self._node_to(node, N.UNUSED)
            state.log('debug', 'node %s not used for computation %x' % (node.addr,
                                                                       state.comp.id))
            return
        node.cpus = cpus
        node.part = next(self._parts)
        node.enable_args = None
        node.failed = {}
        self._node_to(node, N.RESERVING)
        state.emit(RESERVE, node, node.part)

    def _setup_of(self, addr, part):
        """The engaged node whose setup is `part`; None for a late answer."""
        node = self.nodes.get(addr)
        if node is None or node.part != part or node.state not in ENGAGED or \
                not self.state.running():
            return None
        return node

    def node_reserved(self, addr, part, pulse_interval, now):
        """The node took the computation; it pulses every `pulse_interval`."""
        node = self._setup_of(addr, part)
        if node is None or node.state is not N.RESERVING:
            node = self.nodes.get(addr)
            if node is not None and node.part == part and self.state.comp is not None:
                self.state.emit(CLOSE_NODE, node)    # reserved for a setup that is over
            return
        node.pulse_interval = pulse_interval
        node.last_pulse = now
        node.announced = True
        self._node_to(node, N.SENDING)
        self.state.emit(STATUS, 'NodeDiscovered', node.info, None, None)
        self.state.emit(SEND_FILES, node, part)

    def files_sent(self, addr, part):
        node = self._setup_of(addr, part)
        if node is None or node.state is not N.SENDING:
            return
        if self.state.comp.disable_nodes and node.enable_args is None:
            self._node_to(node, N.ENABLING)
        else:
            self._set_up(node)

    def enable_node(self, addr, args):
        """The client enables node `addr` (disable_nodes) with node_setup's
        `args`: it is set up once its files are there."""
        node = self.nodes.get(addr)
        if node is None or not self.state.running() or node.enable_args is not None:
            return
        if node.state in (N.RESERVING, N.SENDING):
            node.enable_args = tuple(args)
        elif node.state is N.ENABLING:
            node.enable_args = tuple(args)
            self._set_up(node)

    def _set_up(self, node):
        self._node_to(node, N.SETTING_UP)
        self.state.emit(SET_UP, node, node.part, node.enable_args or ())

    def node_set_up(self, addr, part, now):
        """node_setup ran there and the node's servers are starting."""
        node = self._setup_of(addr, part)
        if node is None or node.state is not N.SETTING_UP:
            return
        node.last_pulse = now
        self._node_to(node, N.UP)
        emit, work = self.state.emit, self.state.work
        emit(STATUS, 'NodeInitialized', node.info, None, None)
        servers = [s for s in node.servers.values() if s.state is S.READY]
        for server in servers:              # ready before their node
            emit(STATUS, 'ServerInitialized', server.location, None, None)
        for server in servers:
            work.serve(server)
        work.place_queues()

    def node_refused(self, addr, part, why, lasting=True):
        """The node did not take or set up the computation: `lasting`, it
        cannot serve it at all (it is left out, once); else it cannot now
        (busy with another computation, out of its service window): it
        waits, and is asked again when it is available."""
        node = self._setup_of(addr, part)
        if node is None:
            return
        if lasting:
            self._leave_out(node, why, tell_node=node.state is not N.RESERVING)
        else:
            self.state.log('news', 'node %s cannot serve computation %x now: %s; it is asked '
                           'again when it is available' % (addr, self.state.comp.id, why))
            self._end_part(node, N.WAITING, why, NODE_ENDED, 'its node %s: %s' % (addr, why))
        self.state.work.check_hope()

    def node_unreachable(self, addr, part, why):
        """A call for the node's setup got no answer: it is gone."""
        node = self._setup_of(addr, part)
        if node is not None:
            self._lose(node, DISCONNECTED, why)

    def _leave_out(self, node, why, tell_node=True, failed=True):
        """`node` cannot serve the computation, for good: one line says why
        (a WARNING when it `failed` to), and it is not asked again."""
        state = self.state
        if failed:
            state.log('warning', 'node %s is left out of computation %x: %s'
                      % (node.addr, state.comp.id, why), True)
        else:
            state.log('news', 'computation %x: node %s ended its part: %s'
                      % (state.comp.id, node.addr, why))
        if tell_node and node.state in ENGAGED:
            state.emit(CLOSE_NODE, node)
        self._end_part(node, N.LEFT_OUT, why, NODE_ENDED, 'its node %s: %s' % (node.addr, why))

    def _end_part(self, node, to, why, code, cause):
        """The node's part in the computation ends (it goes to state `to`):
        its servers go (`code`, `cause`); NodeClosed if the client heard of
        this part."""
        for server in list(node.servers.values()):
            self._server_gone(server, code, cause)
        announced, node.announced = node.announced, False
        self._node_to(node, to, why)
        if announced:
            self.state.emit(STATUS, 'NodeClosed', node.info, code, cause)

    def node_draining(self, addr):
        """The node finishes its jobs and takes no more (quit, service window).
        Only a node that has set the computation up says so (before, it has
        no scheduler to tell); from another state it is a late word."""
        node = self.nodes.get(addr)
        if node is not None and self.state.comp is not None and \
                node.state in (N.SETTING_UP, N.UP):
            self._node_to(node, N.DRAINING)
            self.state.work.check_hope()

    def node_closed(self, addr, why, final, failed):
        """The node ended the computation on its own (its servers are gone):
        `final`, it will not serve it again (left out); `failed`, it could
        not serve it; else it is waited for (a service window). A node says
        so only once it has set the computation up (before, it has no
        scheduler to tell): from another state it is a late word."""
        node = self.nodes.get(addr)
        comp = self.state.comp
        if node is None or comp is None or comp.state in (C.ENDING, C.CLOSED):
            return
        if final:
            if node.state in ENGAGED or node.state in _GONE or node.state is N.WAITING:
                self._leave_out(node, why, tell_node=False, failed=failed)
        elif node.state in (N.SETTING_UP, N.UP, N.DRAINING):
            self.state.log('news', 'computation %x: node %s ended its part: %s; it is asked '
                           'again when it is available' % (comp.id, addr, why))
            self._end_part(node, N.WAITING, why, NODE_ENDED,
                           'its node %s ended the computation' % addr)
        self.state.work.check_hope()

    def node_available(self, addr, key, coro, cpus):
        """The node at `key` (service `coro`) says it takes computations."""
        node = self.nodes.get(addr)
        if node is None:
            self.peer_online(key, coro)
        elif node.state is N.LOST:
            self._node_to(node, N.REJOINING, node.why)
            self.state.emit(REJOIN, node)
        elif node.state in (N.IDLE, N.WAITING):
            self._use(node, cpus)

    def node_gone(self, key, why):
        """The connection to the peer at `key` is gone: if it is a node's
        that may serve the computation, the node is lost."""
        node = self.by_key.get(key)
        if node is not None and node.state not in (N.LOST, N.REJOINING, N.LEFT_OUT,
                                                   N.UNUSED):
            self._lose(node, DISCONNECTED, why)     # (left out and unused stay so)

    def _lose(self, node, code, why):
        """`node` is gone (`why`, in words): its jobs are lost; it is asked
        now and then whether it is back (a partition that heals)."""
        serving = self.state.comp is not None and node.state in ENGAGED
        self.state.log('warning' if serving else 'debug', 'node %s is lost: %s'
                       % (node.addr, why))
        self._end_part(node, N.LOST, why, code, 'its node %s %s' % (node.addr, why))
        self.state.work.check_hope()

    def rejoined(self, addr, key, info, coro, cpus):
        """The lost node `addr` answered: it is known again, and used."""
        node = self.nodes.get(addr)
        if node is not None and node.state is N.REJOINING:
            self.state.log('info', 'node %s (%s) is back' % (addr, getattr(info, 'name', addr)))
            self._known(addr, key, info, coro, cpus)
            self.state.work.check_hope()

    def rejoin_failed(self, addr):
        node = self.nodes.get(addr)
        if node is not None and node.state is N.REJOINING:
            self._node_to(node, N.LOST, node.why)
            self.state.work.check_hope()

    def pulse(self, addr, comp_id, now, info=None):
        """The node pulsed (`info`: its DiscoroNodeInfo with the new
        figures): the jobs running there, or None if it does not serve
        computation `comp_id` here."""
        node = self.nodes.get(addr)
        comp = self.state.comp
        if node is None or comp is None or comp.id != comp_id or node.state not in ENGAGED:
            return None
        node.last_pulse = now
        if info is not None:
            node.info = info
        return sum(len(server.jobs) for server in node.servers.values())

    def server_failed(self, addr, part, index, location, why):
        """Server `index` of the node could not start (`location`: where it
        was to listen): the computation runs on the others, and says so."""
        node = self._setup_of(addr, part)
        if node is None:
            return
        node.failed[index] = why
        self.state.log('warning', 'computation %x: server %d of node %s could not start (%s); '
                       'the node runs it on its other servers'
                       % (self.state.comp.id, index, addr, why), True)
        self.state.emit(STATUS, 'ServerIgnore', location, NOT_STARTED, why)

    def tick(self, now):
        """A node silent for 5 pulse intervals is lost (its jobs terminated
        first: they may still run, cut off); lost nodes are asked whether
        they are back; waiting ones whether they are free."""
        state = self.state
        for node in list(self.nodes.values()):
            if node.state in (N.UP, N.DRAINING) and node.last_pulse is not None:
                silent = now - node.last_pulse
                if silent > 5 * (node.pulse_interval or state.comp.pulse_interval):
                    for server in node.servers.values():
                        for job in server.jobs.values():
                            if job.rcoro is not None:
                                state.emit(TERMINATE, job.rcoro)
                    self._lose(node, SILENT, 'sent no pulse for %.0f s (5 pulse intervals)'
                               % silent)
            elif node.state is N.LOST:
                self._node_to(node, N.REJOINING, node.why)
                state.emit(REJOIN, node)
            elif node.state is N.WAITING:
                self._use(node, node.cpus)

    def release_all(self):
        """The computation ends: each engaged node is released, its servers
        closed (before the node kills them: their connections closing then
        is no news; it would say ServerDisconnected)."""
        for node in list(self.nodes.values()):
            if node.state in ENGAGED:
                self.state.emit(RELEASE, node)
            for server in list(node.servers.values()):
                self._server_gone(server, CLOSED, 'the computation was closed')

    def idle_all(self):
        for node in self.nodes.values():
            if node.state not in _GONE:
                self._node_to(node, N.IDLE)
            node.pulse_interval = None
            node.announced = False

    # ================================================================ servers

    def server_up(self, addr, part, location, coro):
        """A server of the node introduces itself: None, or why it is not
        taken (its node does not serve the computation; an earlier setup's)."""
        node = self.nodes.get(addr)
        state = self.state
        if node is None or node.state not in ENGAGED or not state.running():
            return 'its node %s does not serve computation %x' % (
                addr, state.comp.id if state.comp else 0)
        if part != node.part:
            return 'it belongs to an earlier setup of node %s' % addr
        old = self.servers.get(location)
        if old is not None:
            self._server_gone(old, DISCONNECTED, 'a new server took its place')
        server = Server(location, node, coro, state.placement.server_slot(None, node.slot))
        server.slot.server = server
        node.servers[location] = server
        self.servers[location] = server
        state.emit(STATUS, 'ServerDiscovered', location, None, None)
        if not state.comp.disable_servers:
            self._server_enabled(server, ())
        return None

    def enable_server(self, location, args):
        server = self.servers.get(location)
        if server is not None and server.state is S.ENABLING:
            self._server_enabled(server, tuple(args))

    def _server_enabled(self, server, args):
        if self.state.comp.server_setup:
            self._server_to(server, S.SETTING_UP)
            self.state.emit(SERVER_SETUP, server, args)
        else:
            self._ready(server)

    def server_set_up(self, location, result):
        """server_setup gave `result` there (0: the server takes jobs)."""
        server = self.servers.get(location)
        if server is None or server.state is not S.SETTING_UP:
            return
        if result == 0:
            self._ready(server)
            return
        self.state.log('warning', 'server %s not used: server_setup gave %s'
                       % (location, result), True)
        self.state.emit(CLOSE_SERVER, server)
        self._server_gone(server, SETUP_FAILED, 'server_setup gave %s' % (result,))

    def _ready(self, server):
        state = self.state
        self._server_to(server, S.READY)
        if server.node.state is N.UP:
            state.emit(STATUS, 'ServerInitialized', server.location, None, None)
        if state.comp.peers_communicate:
            others = [s.location for s in self.servers.values() if s is not server]
            state.emit(PEERS, server, others)
        state.work.serve(server)
        state.work.place_queues()

    def server_gone(self, location, code, cause):
        """Server `location` is gone (`code`; `cause`, in words)."""
        server = self.servers.get(location)
        if server is not None:
            self._server_gone(server, code, cause)

    def _server_gone(self, server, code, cause):
        """`server` is gone: the jobs waiting for it alone fail, its jobs
        are lost (or run again)."""
        if server.state is S.GONE:
            return
        self._server_to(server, S.GONE)
        del self.servers[server.location]
        del server.node.servers[server.location]
        self.state.work.server_gone(server, Lost(server.location, code, cause))
        self.state.emit(STATUS, 'ServerDisconnected' if code in LOSSES else 'ServerClosed',
                        server.location, code, cause)

    def ready_servers(self):
        """The Locations of the servers that take jobs now."""
        return [loc for loc, server in self.servers.items()
                if server.state is S.READY and server.node.state is N.UP]

    def free(self, server):
        """Whether `server` takes a CPU job now."""
        slot = server.slot
        return slot.ready and not slot.busy and server.node.state is N.UP


class Work:
    """The computation's jobs and the queues of those that wait: their
    states and the stimuli about them (a part of SchedState: `state`)."""

    def __init__(self, state):
        self.state = state
        self._out = state.effects.append    # the effects (a hot path: no method between)
        self.jobs = {}                  # job id -> Job not ENDED
        self.by_rcoro = {}              # remote coroutine -> RUNNING Job
        self.cpu_queue = collections.deque()    # CPU jobs waiting for any server, in order
        self.async_queue = collections.deque()  # async jobs waiting for any server
        self.early = _Bounded()         # rcoro -> its end, come before its start's answer
        self.given_up = _Bounded()      # rcoros of jobs ended as lost: a late end is old news
        self.job_counts = {kind: dict.fromkeys(JobState, 0) for kind in (CPU, ASYNC)}
        self.waiting_told = 0           # the count of waiting jobs the monitors last heard
        self.waiting_due = False        # a WAITING effect is out: they will hear the count
        self._job_ids = itertools.count(1)

    def _job_to(self, job, state):
        """The one place a job changes state."""
        if state not in JOB_MOVES[job.state]:
            raise StateError('job %s: %s -> %s' % (job.id, job.state and job.state.value,
                                                   state.value))
        counts = self.job_counts[job.kind]
        if job.state is not None:
            counts[job.state] -= 1
        counts[state] += 1
        job.state = state
        if state is J.ENDED:
            del self.jobs[job.id]

    # ================================================================ asking and starting

    def new_job(self, kind, where, want_result, spec):
        """A job of the computation, to give to `ask`."""
        retries = self.state.comp.retry_lost if kind == CPU and (
            where is None or isinstance(where, str)) else 0
        return Job(next(self._job_ids), kind, where, want_result, retries, spec)

    def ask(self, job):
        """Place `job` (from its run()): it starts, waits for a server, or
        is refused (ANSWER)."""
        self.jobs[job.id] = job
        self._job_to(job, J.WAITING)
        comp, where = self.state.comp, job.where
        if comp is None or comp.state not in (C.RUNNING, C.CLOSING):
            self._refuse(job, 'the computation was closed')
        elif job.kind == CPU:
            if where is None:
                if self.cpu_queue or not self._start_any(job):
                    self._wait(job, self.cpu_queue)
            elif isinstance(where, str):
                self._ask_node(job, where)
            else:
                self._ask_server(job, where)
        else:
            self._ask_async(job, where)

    def _ask_server(self, job, location):
        server = self.state.cluster.servers.get(location)
        if server is None or server.node.state is N.DRAINING:
            self._refuse(job, 'server %s is not running this computation' % (location,))
        elif not server.waiting and self.state.cluster.free(server):
            self._start(job, server)
        else:
            if not server.waiting:
                server.waiting = collections.deque()
            server.waiting.append(job)
            self._waiting_changed()

    def _ask_node(self, job, addr):
        node = self.state.cluster.nodes.get(addr)
        if node is None or node.state is not N.UP:
            self._refuse(job, 'node %s is not running this computation' % addr)
        elif not self._start_on(job, node):
            self._refuse(job, 'no free server on node %s' % addr)     # as asyncoro 4.5

    def _ask_async(self, job, where):
        cluster, placement = self.state.cluster, self.state.placement
        if _is_server(where):
            server = cluster.servers.get(where)
            if server is None or server.state is not S.READY or server.node.state is not N.UP:
                self._refuse(job, 'no server available at %s' % (where,))
            else:
                self._start(job, server)
        elif where is not None:
            node = cluster.nodes.get(where)
            if node is None or node.state is not N.UP:
                self._refuse(job, 'node %s is not running this computation' % where)
                return
            slot = placement.least_busy(node.slot)
            if slot is None:
                self._refuse(job, 'no server available at %s' % where)
            else:
                self._start(job, slot.server)
        else:
            slot = placement.least_busy()
            if slot is None:
                self._wait(job, self.async_queue)
            else:
                self._start(job, slot.server)

    def _wait(self, job, queue, first=False):
        """`job` waits for any server (and fails at once if none will come:
        asked when the queues were empty; else the jobs already there would
        have failed, and only a node's move changes that)."""
        hope = not (self.cpu_queue or self.async_queue)
        if first:
            queue.appendleft(job)
        else:
            queue.append(job)
        self._waiting_changed()
        if hope:
            self.check_hope()

    def _start_any(self, job):
        """Start CPU `job` on a free server of the least loaded node; False
        if no server is free."""
        slot = self.state.placement.cpu()
        if slot is None:
            return False
        self._start(job, slot.server, reserved=True)
        return True

    def _start_on(self, job, node):
        """Start CPU `job` on a free server of `node`; False if none is free."""
        slot = self.state.placement.cpu_on(node.slot)
        if slot is None:
            return False
        self._start(job, slot.server, reserved=True)
        return True

    def _start(self, job, server, reserved=False):
        """The one way a job starts, its first run and a run again alike."""
        if not reserved:
            self.state.placement.started(server.slot, job.kind == CPU)
        self._job_to(job, J.STARTING)
        job.server = server
        job.token += 1
        server.jobs[job.id] = job
        self._out((START, job, server, job.token))

    def _refuse(self, job, reason):
        """`job` is not run: its run() is answered why."""
        job.outcome = Refused(reason)
        self._job_to(job, J.ENDED)
        self._answer(job)

    def _drop(self, job, reason):
        """A job that waits will not get a server (`reason`)."""
        if job.state is J.RETRYING:
            self._given_up(job, reason)
        else:
            self._refuse(job, reason)

    def _answer(self, job):
        if not job.answered:
            job.answered = True
            self._out((ANSWER, job))

    def _unplace(self, job):
        """`job` no longer holds its server (it did not start there, it
        ended, it was lost): the server may take another."""
        server = job.server
        job.server = None
        del server.jobs[job.id]
        if server.state is not S.GONE and \
                self.state.placement.ended(server.slot, job.kind == CPU):
            self.serve(server)

    # ================================================================ what servers say

    def job_started(self, job_id, token, rcoro):
        """The job's server started it as `rcoro`."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not J.STARTING or job.token != token:
            self.state.emit(TERMINATE, rcoro)   # its start was given up meanwhile
            return
        self._job_to(job, J.RUNNING)
        job.rcoro = rcoro
        self.by_rcoro[rcoro] = job
        if job.origin is None:
            job.origin = rcoro
        job.outcome = rcoro
        self._out((CREATED, job, not job.answered))     # its run() is answered with it
        job.answered = True
        early = self.early.pop(rcoro, None)
        if early is not None:
            self._finish(job, early, None)

    def job_not_started(self, job_id, token, failure, lasting=True):
        """The job's server did not start it (`failure`, the shell's object,
        says why). Not `lasting` (the server drains): a job for any server
        waits for another."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not J.STARTING or job.token != token:
            return
        self._unplace(job)
        if not lasting and job.where is None:
            self._job_to(job, J.RETRYING if job.attempts else J.WAITING)
            self._wait(job, self.cpu_queue if job.kind == CPU else self.async_queue, True)
            self.place_queues()
            return
        job.outcome = failure
        self._job_to(job, J.ENDED)
        self._answer(job)

    def job_unsent(self, job_id, token, why):
        """The job did not reach its server (the connection is gone)."""
        job = self.jobs.get(job_id)
        if job is not None and job.state is J.STARTING and job.token == token:
            self.state.cluster.server_gone(job.server.location, DISCONNECTED,
                                           'its connection was lost (%s)' % why)

    def job_ended(self, rcoro, msg):
        """A job's end, its MonitorException `msg`, came."""
        job = self.by_rcoro.get(rcoro)
        if job is None:
            if self.given_up.pop(rcoro, None) is not None:
                self.state.log('info', 'job %s ended after it was given up as lost; its end '
                               'is not used' % (rcoro,))
            else:
                self.early[rcoro] = msg       # its start's answer is still on its way
            return
        self._finish(job, msg, None)

    def _finish(self, job, msg, lost):
        """RUNNING `job` ended (`msg`), or was `lost` with its server."""
        del self.by_rcoro[job.rcoro]
        self._unplace(job)
        self._job_to(job, J.ENDED)
        self._out((ENDED, job, msg, lost))

    def server_gone(self, server, lost):
        """`server` is gone (`lost` says how): the jobs that waited for it
        alone fail, its jobs are lost (or run again)."""
        if server.waiting:
            while server.waiting:
                self._drop(server.waiting.popleft(), 'server %s is gone: %s'
                           % (server.location, lost.cause))
            self._waiting_changed()
        for job in list(server.jobs.values()):
            self._lost(job, lost)

    def _lost(self, job, lost):
        """`job`, STARTING or RUNNING, went with its server: it runs again
        if it may, else its end (or its run()'s answer) says it is lost."""
        if job.state is J.RUNNING:
            self.given_up[job.rcoro] = True
        if job.kind == CPU and job.retries > 0 and self.state.running():
            if job.rcoro is not None:
                del self.by_rcoro[job.rcoro]
                self.state.emit(LOST_TRY, job, lost)
                job.rcoro = None
            self._unplace(job)
            job.attempts += (lost,)
            job.retries -= 1
            self._job_to(job, J.RETRYING)
            self.state.log('info', 'job %s lost (%s); it is run again (%d more time(s) at most)'
                           % (job.origin or job.spec, lost.cause, job.retries))
            self._retry(job)
        elif job.state is J.RUNNING:
            self._finish(job, None, lost)
        else:                           # STARTING: it never ran
            self._unplace(job)
            job.outcome = lost
            self._job_to(job, J.ENDED)
            self._answer(job)

    def _retry(self, job):
        """Start RETRYING `job` again: first in line for any server, or on a
        free server of its node (else it is lost for good)."""
        if job.where is None:
            if self.cpu_queue or not self._start_any(job):
                self._wait(job, self.cpu_queue, True)
            return
        node = self.state.cluster.nodes.get(job.where)
        if node is None or node.state is not N.UP or not self._start_on(job, node):
            self._given_up(job, 'no free server on node %s' % job.where)

    def _given_up(self, job, reason):
        """RETRYING `job` is not run again: it ends lost, each attempt named."""
        last = job.attempts[-1]
        self.state.log('warning', 'job %s lost for good: %s' % (job.origin or job.spec, reason))
        lost = Lost(last.server, last.code, '%s; not run again: %s' % (last.cause, reason))
        job.attempts = job.attempts[:-1]
        job.outcome = lost
        self._job_to(job, J.ENDED)
        if job.answered:
            self.state.emit(ENDED, job, None, lost)
        else:
            self._answer(job)

    # ================================================================ what waits gets a server

    def serve(self, server):
        """`server` may be free: it goes to the CPU job waiting for it
        alone, else to the first waiting for any server (which starts where
        placement says)."""
        slot = server.slot
        if not slot.ready or slot.busy or server.node.state is not N.UP:     # not free
            return
        if server.waiting:
            self._start(server.waiting.popleft(), server)
            self._waiting_changed()
        elif self.cpu_queue and self._start_any(self.cpu_queue[0]):
            self.cpu_queue.popleft()
            self._waiting_changed()

    def place_queues(self):
        """Servers became usable: the jobs waiting for any server start
        where they can."""
        if not (self.cpu_queue or self.async_queue):
            return
        while self.cpu_queue and self._start_any(self.cpu_queue[0]):
            self.cpu_queue.popleft()
        while self.async_queue:
            slot = self.state.placement.least_busy()
            if slot is None:
                break
            self._start(self.async_queue.popleft(), slot.server)
        self._waiting_changed()

    def check_hope(self):
        """The jobs waiting for any server fail when none will come."""
        if not (self.cpu_queue or self.async_queue):
            return
        why = self.state.hopeless()
        if why is not None:
            for queue in (self.cpu_queue, self.async_queue):
                while queue:
                    self._drop(queue.popleft(), why)
            self._waiting_changed()

    def refuse_all(self, why):
        """The computation ends: every job that waits is refused."""
        queues = [self.cpu_queue, self.async_queue] + [
            server.waiting for server in self.state.cluster.servers.values()]
        for queue in queues:
            while queue:
                self._drop(queue.popleft(), why)
        self._waiting_changed()

    def _waiting_changed(self):
        """The monitors are to hear the count of waiting jobs: one WAITING
        effect until the shell says they heard it (a run_results changes it
        at every job)."""
        if not self.waiting_due and self.waiting_count() != self.waiting_told:
            self.waiting_due = True
            self.state.emit(WAITING)

    def waiting_heard(self):
        """The shell told the monitors the count now: it is theirs."""
        self.waiting_due = False
        self.waiting_told = self.waiting_count()
        return self.waiting_told

    def waiting_count(self):
        """How many jobs of the computation wait for a server."""
        cpu, other = self.job_counts[CPU], self.job_counts[ASYNC]
        return cpu[J.WAITING] + cpu[J.RETRYING] + other[J.WAITING] + other[J.RETRYING]

    def busy(self, kinds):
        """How many jobs of these kinds are starting or running."""
        counts = self.job_counts
        return sum(counts[kind][J.STARTING] + counts[kind][J.RUNNING] for kind in kinds)

    def terminate(self, kinds):
        """Terminate the running jobs of these kinds."""
        for job in self.jobs.values():
            if job.kind in kinds and job.state is J.RUNNING:
                self.state.emit(TERMINATE, job.rcoro)


# ---------------------------------------------------------------- the invariants

def _check_counts(state):
    cluster, work = state.cluster, state.work
    nodes = collections.Counter(node.state for node in cluster.nodes.values())
    assert all(cluster.node_counts[s] == nodes[s] for s in NodeState), \
        ('node counts', nodes, cluster.node_counts)
    jobs = collections.Counter((job.kind, job.state) for job in work.jobs.values())
    assert all(work.job_counts[kind][state] == jobs[kind, state]
               for kind in (CPU, ASYNC) for state in JobState if state is not J.ENDED), \
        ('job counts', jobs, work.job_counts)


def _check_jobs(state):
    cluster, work = state.cluster, state.work
    cpu_jobs = collections.Counter()
    for job_id, job in work.jobs.items():
        assert job.id == job_id and job.state is not J.ENDED, job
        if job.state in (J.STARTING, J.RUNNING):
            assert job.server is not None and job.server.jobs.get(job.id) is job, job
            assert cluster.servers.get(job.server.location) is job.server, job
            if job.kind == CPU:
                cpu_jobs[job.server.location] += 1
        else:
            assert job.server is None, job
        assert (job.state is J.RUNNING) == (job.rcoro is not None), job
        if job.state is J.RUNNING:
            assert work.by_rcoro.get(job.rcoro) is job, job
    assert all(n == 1 for n in cpu_jobs.values()), ('a server runs two CPU jobs', cpu_jobs)
    assert all(job.state is J.RUNNING for job in work.by_rcoro.values())
    for server in cluster.servers.values():
        assert server.slot.busy == (cpu_jobs[server.location] == 1), server
    if state.comp is None:
        assert not work.jobs and not cluster.servers, 'jobs or servers with no computation'


def _check_servers(state):
    cluster = state.cluster
    for location, server in cluster.servers.items():
        assert server.location == location and server.state is not S.GONE, server
        assert server.node.servers.get(location) is server, server
        assert server.node.state in ENGAGED, server
        assert server.slot.ready == (server.state is S.READY), server
        for job in server.jobs.values():
            assert job.state in (J.STARTING, J.RUNNING) and job.server is server, job
    for node in cluster.nodes.values():
        assert node.slot.usable == (node.state is N.UP), node
        assert cluster.by_key.get(node.key) is node, node
        if node.state not in ENGAGED:
            assert not node.servers, '%s has servers' % node
        if state.comp is None:
            assert node.state in (N.IDLE, N.LOST, N.REJOINING), node


def _check_waiting(state):
    cluster, work = state.cluster, state.work
    queued = list(work.cpu_queue) + list(work.async_queue) + [
        job for server in cluster.servers.values() for job in server.waiting]
    assert len(queued) == len(set(id(job) for job in queued)), 'a job waits twice'
    for job in queued:
        assert job.state in (J.WAITING, J.RETRYING) and work.jobs.get(job.id) is job, job
    assert len(queued) == work.waiting_count(), ('waiting', queued, work.waiting_count())
    assert work.waiting_due or work.waiting_told == work.waiting_count(), \
        'the monitors will not hear how many jobs wait'
    if work.cpu_queue:
        assert state.placement.free_node() is None, 'a CPU job waits while a server is free'
    if work.async_queue:
        assert state.placement.least_busy() is None, 'an async job waits while a server is up'
    for server in cluster.servers.values():
        if server.waiting:
            assert not cluster.free(server), '%s is free while a job waits for it' % server
    if work.cpu_queue or work.async_queue:
        assert state.hopeless() is None, 'jobs wait for a computation no node can serve'
