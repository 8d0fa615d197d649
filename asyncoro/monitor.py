"""asyncoro.monitor: what the web monitor knows of a discoro computation, and its views.

What it owns: `Monitor`, the state of one computation (its nodes with their
load over time, its servers with their processes' CPU and memory, its jobs
running and ended, the failures, the throughput over time, and counters
that outlive computations for /metrics) folded from the status messages a
scheduler sends, with the monitor's `Settings` (poll interval, whether
arguments are shown); and `Views`, the plain data (for JSON) that
asyncoro.webapp serves of that state. The web application does what has
effects elsewhere (terminating a job); this module only knows and tells.

How it works:

- `Monitor.update(msg)` takes one message: DiscoroStatus for nodes, servers,
  jobs (CoroCreated) and the computation; MonitorException for a job's end;
  DiscoroNodeAvailInfo for a node's load (a pulse); and the scheduler's
  details for monitors: StatusDetail (why a node or server went, as a code)
  and JobsWaiting (how many jobs wait for a server). A job's CoroCreated and
  its end come from different senders, so an end may come first: it is kept
  until the job appears. `str(rcoro)` names one job for the life of its
  server process (ids are never reused); `running` indexes the running jobs
  by that key, and each job knows its server, so an end, a look-up or a
  terminate never searches the servers.
- A job is running, finished, failed (its exception), terminated (from a
  page of this monitor: the end itself looks like a normal one) or lost (its
  server or node died, or the computation closed under it: the end is
  (Scheduler.ServerClosed, DiscoroJobLost)): `JobState`. A node or server is
  starting, up, closed or lost (`PlaceState`), changed in one method
  (`Monitor._go`): the scheduler's code of why it went says whether it was
  lost or closed (DiscoroJobLost's codes; a loss is 'died', 'disconnected' or
  'silent'). The computation closing closes what is still up.
- Attached to a shared scheduler (the httpd.py program), the state starts
  from the scheduler's snapshot (`Snapshot`); messages that overtake the
  snapshot are held until it is applied, so none is applied to a state older
  than itself. A new computation (ComputationScheduled) starts a clean slate;
  only the per-node counters for /metrics (`totals`) carry on.
- `Views` reads a Monitor and never changes it. A list of nodes is made in
  two steps: which records (`select_nodes`: filtered by name or address,
  sorted by a key of `NODE_SORTS`), then each one's summary
  (`node_summary`); the cluster's totals are counted from the records, not
  from that list. So the cluster's list is one page of that selection
  (`PAGE` nodes by default, `MAX_PAGE` at most), and the totals stay whole.
- Neither is thread-safe: one thread (the runtime's hub) owns them. A view
  of many records (every node, every running job) is made in slices, each
  run through the Views' `step` hook: the web application lets the hub
  run between slices, so a view of a thousand nodes does not hold up the
  frames of every peer while it is made (DESIGN: the hub's rule).
"""

import array
import collections
import enum
import ipaddress
import itertools
import logging
import operator
import time

from asyncoro.disasyncoro import Location, MonitorException
from asyncoro.discoro import (DiscoroCoroInfo, DiscoroNodeAvailInfo, DiscoroNodeInfo,
                              DiscoroStatus, Scheduler)
from asyncoro.records import JobsWaiting, StatusDetail

__all__ = []

log = logging.getLogger(__name__)

HISTORY = 720           # availability samples kept per node (2 hours at 10 s pulses)
RECENT = 25             # ended jobs listed per server
LISTED = 20000          # and in all servers' lists together (at 8,192 servers, 25 each
                        # would keep 200,000 jobs' arguments: 160 MB)
RECENT_JOBS = 2000      # ended jobs kept for the search (failures are kept apart)
FAILURES = 100          # failed and lost jobs kept, by default
ENDED = 20000           # ends remembered (to say "already finished" to a terminate)
MAX_TEXT = 400          # characters of one argument shown in full
LIST_TEXT = 120         # characters of a job's arguments in lists (the rest on demand)
MAX_DETAIL = 8000       # characters of a traceback or cause kept
BARS = 120              # throughput intervals kept; older ones merge two by two
POLL_MIN, POLL_MAX = 1, 3600
PAGE = 100              # nodes in one page of the cluster's list, unless asked otherwise
MAX_PAGE = 200          # and at most (a node's summary is about 500 bytes of JSON)
ORDERS = ('asc', 'desc')
NODE_SLICE = 256        # node summaries made in one step (see Views)
JOB_SLICE = 512         # jobs searched in one step
# the codes of why a node, server or job went that mean it was lost (DiscoroJobLost.code)
LOSSES = ('died', 'disconnected', 'silent')
DISCONNECTED = 'its connection was lost'    # the cause of a loss with nothing else known


class _State(enum.Enum):
    """A state: members hash by identity (enum's own hash is Python code,
    and the update path looks states up for every job)."""
    __hash__ = object.__hash__


class JobState(_State):
    """How a job of the computation is, as the pages name it (`value`)."""
    RUNNING = 'running'
    FINISHED = 'finished'
    FAILED = 'failed'           # ended with an exception (kept in `error` and `detail`)
    TERMINATED = 'terminated'   # from a page of this monitor
    LOST = 'lost'               # with its server or node, or the computation closed under it


ENDINGS = tuple(state for state in JobState if state is not JobState.RUNNING)
# what the update path compares, as globals: an enum's attribute costs ten times more
_FINISHED, _TERMINATED = JobState.FINISHED, JobState.TERMINATED
_FAILURES = frozenset((JobState.FAILED, JobState.LOST))    # the ends kept among the failures


class PlaceState(_State):
    """How a node or a server is (`value`), and the original's word for it."""
    STARTING = 'starting'
    UP = 'up'
    CLOSED = 'closed'
    LOST = 'lost'

    @property
    def word(self):
        return _WORDS[self]

    @property
    def down(self):
        return self is PlaceState.CLOSED or self is PlaceState.LOST


_STARTING = PlaceState.STARTING
_WORDS = {PlaceState.STARTING: 'Discovered', PlaceState.UP: 'Initialized',
          PlaceState.CLOSED: 'Closed', PlaceState.LOST: 'Disconnected'}

# the state each status of a node or server means
_NODE_STATUS = {Scheduler.NodeDiscovered: PlaceState.STARTING,
                Scheduler.NodeInitialized: PlaceState.UP,
                Scheduler.NodeClosed: PlaceState.CLOSED,
                Scheduler.NodeIgnore: PlaceState.CLOSED,
                Scheduler.NodeDisconnected: PlaceState.LOST}
_SERVER_STATUS = {Scheduler.ServerDiscovered: PlaceState.STARTING,
                  Scheduler.ServerInitialized: PlaceState.UP,
                  Scheduler.ServerClosed: PlaceState.CLOSED,
                  Scheduler.ServerIgnore: PlaceState.CLOSED,
                  Scheduler.ServerDisconnected: PlaceState.LOST}


class BadRequest(ValueError):
    """A request the monitor cannot take; the message says why (a 400)."""


# ---------------------------------------------------------------- records

_epochs = itertools.count(1)


class _Node:
    __slots__ = ('addr', 'name', 'state', 'platform', 'cpus', 'avail', 'history', 'servers',
                 'submitted', 'done', 'update_time', 'seq', 'last_report', 'cause',
                 'down_time', 'epoch', 'counts', 'order')

    def __init__(self, addr):
        self.addr = addr
        self.order = _address_order(addr)   # how lists sort it by address
        self.name = addr
        self.state = PlaceState.STARTING
        self.platform = ''
        self.cpus = 0
        self.avail = None                   # the latest (cpu, memory, disk, swap)
        self.history = _History()           # (time, cpu, memory, disk, swap), oldest first
        self.servers = {}                   # str(Location) -> _Server
        self.submitted = 0
        self.done = 0
        self.update_time = time.time()
        self.seq = 0
        self.last_report = None             # when its last figures came
        self.cause = None                   # why it went
        self.down_time = None               # when it closed or was lost
        self.epoch = next(_epochs)          # a page's history of an older record is dropped
        self.counts = dict.fromkeys(ENDINGS, 0)     # jobs ended here, by how


_NAN = float('nan')


class _History:
    """A node's load samples, (time, cpu, memory, disk, swap), oldest first:
    the last HISTORY of them. Kept as five arrays of numbers, not a deque of
    tuples: at 1,024 nodes of 720 samples that is 30 MB instead of 160, and
    nothing for the garbage collector to walk (a full collection stops the
    hub's thread). A figure not known (None, or no number) is kept as NaN
    and comes back as None; memory and disk come back as ints."""

    __slots__ = ('_columns',)

    def __init__(self):
        self._columns = tuple(array.array('d') for _ in range(5))

    def __len__(self):
        return len(self._columns[0])

    def __iter__(self):
        return map(_sample, *self._columns)

    def __getitem__(self, index):
        return _sample(*[column[index] for column in self._columns])

    def __setitem__(self, index, sample):
        for column, value in zip(self._columns, sample):
            column[index] = _stored(value)

    def append(self, sample):
        for column, value in zip(self._columns, sample):
            column.append(_stored(value))
        if len(self) > HISTORY:
            for column in self._columns:
                del column[0]

    def extend(self, samples):
        for sample in samples:
            self.append(sample)

    def pop(self):
        for column in self._columns:
            column.pop()

    def clear(self):
        for column in self._columns:
            del column[:]

    def times(self, count):
        """The times of the last `count` samples."""
        return self._columns[0][-count:].tolist()


def _stored(value):
    return float(value) if isinstance(value, (int, float)) and value is not True \
        and value is not False else _NAN


def _sample(when, cpu, memory, disk, swap):
    return (when, None if cpu != cpu else cpu,
            None if memory != memory else int(memory) if memory.is_integer() else memory,
            None if disk != disk else int(disk) if disk.is_integer() else disk,
            None if swap != swap else swap)


class _Server:
    __slots__ = ('location', 'node', 'state', 'jobs', 'submitted', 'done', 'recent',
                 'update_time', 'cause', 'down_time', 'process')

    def __init__(self, location, node):
        self.location = location            # str(Location)
        self.node = node
        self.state = PlaceState.STARTING
        self.jobs = {}                      # str(rcoro) -> _Job, the running ones
        self.submitted = 0
        self.done = 0
        self.recent = collections.deque(maxlen=RECENT)   # _Jobs that ended here, newest first
        self.update_time = time.time()
        self.cause = None
        self.down_time = None
        self.process = None                 # {'pid', 'cpu', 'rss', 'time'} from the last pulse


class _Job:
    __slots__ = ('coro', 'key', 'name', 'args', 'kwargs', 'start_time', 'server', 'state',
                 'end_time', 'error', 'detail', '_text')

    def __init__(self, info, key, server):
        self.coro = info.coro
        self.key = key
        self.name = getattr(info.coro, 'name', '') or ''
        self.args = info.args if isinstance(info.args, (tuple, list)) else (info.args,)
        self.kwargs = info.kwargs if isinstance(info.kwargs, dict) else {}
        self.start_time = info.start_time if isinstance(info.start_time, (int, float)) \
            else time.time()
        self.server = server                # the _Server it runs (or ran) on
        self.state = JobState.RUNNING
        self.end_time = None
        self.error = None                   # failed: 'ExcType: message'; lost: the cause
        self.detail = None                  # failed: the traceback text, when it came
        self._text = None

    def texts(self):
        """(arguments, keyword arguments) as text, each argument shortened
        to MAX_TEXT; made once, on first need (str() of user objects)."""
        if self._text is None:
            self._text = (', '.join(_text(arg) for arg in self.args),
                          ', '.join('%s=%s' % (key, _text(value))
                                    for key, value in self.kwargs.items()))
        return self._text

    def end(self, state, end_time, error=None, detail=None):
        self.state = state
        self.end_time = end_time
        self.error = error
        self.detail = detail
        self.coro = None                    # the reference is of no use once it ended


class _Throughput:
    """Jobs started, finished, failed, terminated and lost per interval since
    the computation began; at most BARS intervals, which double in width
    (two merged into one) when time runs past them."""

    KINDS = ('started',) + ENDINGS

    def __init__(self, start=None):
        self.start = start
        self.width = 1.0
        self.counts = {kind: [] for kind in self.KINDS}

    def add(self, kind, when):
        if self.start is None:
            self.start = when
        index = int((when - self.start) // self.width)
        if index < 0:                   # a clock that stepped back: the first interval
            index = 0
        while index >= BARS:
            for kind_counts in self.counts.values():
                kind_counts[:] = [sum(kind_counts[i:i + 2]) for i in range(0, len(kind_counts), 2)]
            self.width *= 2
            index = max(int((when - self.start) // self.width), 0)
        counts = self.counts[kind]
        if len(counts) <= index:
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1

    def view(self):
        size = max([len(counts) for counts in self.counts.values()] + [0])
        return dict({getattr(kind, 'value', kind): counts + [0] * (size - len(counts))
                     for kind, counts in self.counts.items()},
                    start=self.start, width=self.width)


class Snapshot:
    """From the standalone program to the monitor's coroutine: the scheduler's
    `watch` answer (`full`: a new snapshot; else only its queue is news)."""

    __slots__ = ('answer', 'full')

    def __init__(self, answer, full):
        self.answer = answer
        self.full = full


def _address_order(addr):
    """A key that sorts addresses as numbers (127.0.0.9 before 127.0.0.10),
    IPv4 before IPv6, and a name that is no address after both, as text."""
    try:
        ip = ipaddress.ip_address(addr.partition('%')[0])
    except ValueError:
        return (7, 0, addr)
    return (ip.version, int(ip), addr)


def _text(obj, limit=MAX_TEXT):
    """str(obj) for the page: shortened, and never an exception."""
    try:
        text = str(obj)
    except Exception as exc:        # a user class whose __str__ fails: say so, go on
        text = '<%s: str() failed: %s>' % (type(obj).__name__, exc)
    return text if len(text) <= limit else text[:limit - 1] + '\u2026'


def _cut(text, limit=LIST_TEXT):
    return text if len(text) <= limit else text[:limit - 1] + '\u2026'


def _how_ended(kind, value):
    """(state, error, detail) of a job's end (kind, value)."""
    if kind is StopIteration:
        return _FINISHED, None, None
    if kind == Scheduler.ServerClosed:
        cause = getattr(value, 'cause', None)
        if not isinstance(cause, str):
            cause = 'its server closed' if value is None else _text(value)
        return JobState.LOST, _text(cause), None
    name = getattr(kind, '__name__', None) or _text(kind)
    if value is None or isinstance(value, type):    # the exception could not travel: its type did
        error = name
    else:
        message = _text(value)
        error = '%s: %s' % (name, message) if message else name
    return JobState.FAILED, error, _traceback_text(value)


def _traceback_text(exc):
    """The remote traceback an exception carries, if any: a `traceback`
    text (the package's Failure) or notes added to it; else None."""
    text = getattr(exc, 'traceback', None)
    if not isinstance(text, str):
        notes = getattr(exc, '__notes__', None)
        text = '\n'.join(note for note in notes if isinstance(note, str)) \
            if isinstance(notes, list) else None
    if not text:
        return None
    return text if len(text) <= MAX_DETAIL else '\u2026' + text[-MAX_DETAIL + 1:]


def _remember(table, key, value, size):
    """table[key] = value as its newest entry, keeping at most `size`."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > size:
        table.popitem(last=False)


# ---------------------------------------------------------------- the settings

class Settings:
    """How the pages show the state: every `poll_sec` seconds they ask for
    it again, and they show jobs' arguments when `show_coro_args`. Any page
    may change them, for every reader."""

    __slots__ = ('poll_sec', 'show_coro_args')

    def __init__(self, poll_sec=10, show_coro_args=True):
        self.poll_sec = poll_sec
        self.show_coro_args = bool(show_coro_args)

    def view(self):
        return {'poll_sec': self.poll_sec, 'show_coro_args': self.show_coro_args}

    def change(self, poll_sec=None, show_coro_args=None):
        """Change the poll interval and the arguments switch (None: as it
        is); BadRequest if a value is not acceptable (then nothing changes).
        Returns the view of the settings."""
        if poll_sec is not None:
            try:
                value = float(poll_sec)
            except (TypeError, ValueError):
                raise BadRequest('poll interval %r is not a number' % (poll_sec,)) from None
            if not POLL_MIN <= value <= POLL_MAX:
                raise BadRequest('poll interval must be between %s and %s seconds, not %s'
                                 % (POLL_MIN, POLL_MAX, poll_sec))
            poll_sec = int(value) if value == int(value) else value
        if show_coro_args is not None:
            show_coro_args = _flag(show_coro_args, 'show_coro_args')
        if poll_sec is not None:
            self.poll_sec = poll_sec
        if show_coro_args is not None:
            self.show_coro_args = show_coro_args
        return self.view()


def _flag(value, what):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ('1', 'true', 'on', 'yes'):
        return True
    if text in ('0', 'false', 'off', 'no'):
        return False
    raise BadRequest('%s must be true or false, not %r' % (what, value))


# ---------------------------------------------------------------- the state

class Monitor:
    """What the monitor knows of one computation, folded from its status
    messages (see the module docstring), and its `settings`. Its attributes
    are for reading (by Views, asyncoro.metrics, asyncoro.webapp); they
    change through `update`, `begin` and `mark_terminating` only. Used in
    one thread (the runtime's hub).

    :param max_failures: how many failed and lost jobs are kept.
    """

    def __init__(self, poll_sec=10, show_coro_args=True, max_failures=FAILURES):
        self.settings = Settings(poll_sec, show_coro_args)
        self.max_failures = max(int(max_failures), 1)
        self.mode = 'client'
        self.scheduler = None           # standalone: where the scheduler is, or None
        # ids are str: they are 64-bit, more than a JavaScript number holds exactly
        self.computation = None         # {'id', 'client', 'status', 'since', 'closed'}
        self.queue = []                 # standalone: [{'id', 'client'}] waiting their turn
        self.nodes = {}                 # addr -> _Node
        self.servers = {}               # str(Location) -> _Server
        self.running = {}               # str(rcoro) -> _Job running (on job.server)
        self.recent = collections.OrderedDict()     # str(rcoro) -> _Job that ended (search)
        self.listed = collections.deque()   # the _Jobs in a server's recent, oldest first
        self.failures = collections.OrderedDict()   # str(rcoro) -> _Job failed or lost
        # str(rcoro) -> (state's value, end_time): no enum in it, so the garbage
        # collector does not walk its 20,000 entries
        self.ended = collections.OrderedDict()
        self.early = collections.OrderedDict()      # ends that came before creation
        self.terminating = set()        # str(rcoro) of the running ones terminated from a page
        self.throughput = _Throughput()
        # addr -> {'submitted' or an ending: count}, for /metrics: never reset
        self.totals = collections.OrderedDict()
        self.seq = 0                    # bumped at every change of a node
        self.reset_seq = 0              # the seq at the last reset: older cursors see all
        self.held = None                # messages that came before the awaited snapshot
        self.waiting = 0                # jobs of the computation waiting for a server

    def begin(self, comp_id, client):
        """The computation `comp_id` of `client` starts now (a program's own
        monitor: no ComputationScheduled comes to it)."""
        self.computation = {'id': str(comp_id), 'client': client, 'status': 'running',
                            'since': time.time(), 'closed': None}
        self.throughput = _Throughput(self.computation['since'])

    def mark_terminating(self, key, marked=True):
        """A page asks to terminate the running job `key`: its end, when it
        comes, is a termination (it looks like a normal end). `marked`
        false: the request could not be sent after all."""
        if not marked:
            self.terminating.discard(key)
        elif key in self.running:
            self.terminating.add(key)

    def end_of(self, key):
        """(state, end_time) of the job `key` if its end is remembered, else None."""
        ended = self.ended.get(key)
        if ended is not None:
            return JobState(ended[0]), ended[1]
        ended = self.early.get(key)
        return None if ended is None else (ended[0], ended[-1])

    # ---------------- messages

    def update(self, msg):
        """Take one status message (any other message is logged and dropped)."""
        kind = type(msg)
        if self.held is not None and kind is not Snapshot:
            self.held.append(msg)
            return
        take = _TAKES.get(kind)
        if take is None:
            take = next((_TAKES[base] for base in kind.__mro__ if base in _TAKES),
                        Monitor._stray)
        take(self, msg)

    def _stray(self, msg):
        log.debug('monitor: message %.200r is not a status message; ignored', msg)

    def _take_status(self, msg):
        status, info = msg.status, msg.info
        if status == Scheduler.CoroCreated and isinstance(info, DiscoroCoroInfo):
            self._job_created(info)
        elif status in _NODE_STATUS and isinstance(info, DiscoroNodeInfo):
            self._node_status(status, info)
        elif status in _SERVER_STATUS and isinstance(info, Location):
            self._server_status(status, info)
        elif status == Scheduler.ComputationClosed:
            self._closed()
        elif status == Scheduler.ComputationScheduled and isinstance(info, tuple) \
                and len(info) == 2:
            self._reset()
            self.begin(info[0], _text(info[1]))
            self.queue = [entry for entry in self.queue if entry['id'] != str(info[0])]
        else:
            log.debug('monitor: status %s with %.200r ignored', status, info)

    def _take_end(self, msg):
        args = msg.args
        if len(args) < 2 or not isinstance(args[1], tuple) or len(args[1]) != 2:
            log.debug('monitor: malformed %r ignored', msg)
            return
        kind, value = args[1]
        state, error, detail = _how_ended(kind, value)
        self._end(str(args[0]), state, error, detail)

    def _take_pulse(self, msg):
        if msg.location is not None:
            self._sample(self._node(msg.location.addr), msg)

    def _take_detail(self, detail):
        """Why the node or server of the status just taken went: its code
        says whether it was lost or closed, its text why."""
        status, subject = detail.status, detail.subject
        if status in _NODE_STATUS and isinstance(subject, DiscoroNodeInfo):
            record = self.nodes.get(subject.addr)
        elif status in _SERVER_STATUS and isinstance(subject, Location):
            record = self.servers.get(str(subject))
        else:
            return
        if record is None or not record.state.down:
            return
        state = PlaceState.LOST if detail.code in LOSSES else PlaceState.CLOSED
        self._go(record, state, _text(detail.text) if detail.text else None)
        self._touch(record if isinstance(record, _Node) else record.node)

    def _take_waiting(self, msg):
        if self.computation is not None and self.computation['id'] == str(msg.computation):
            self.waiting = msg.count

    def _take_snapshot(self, msg):
        self._snapshot(msg.answer, msg.full)

    # ---------------- nodes and servers

    @staticmethod
    def _go(record, state, cause=None, now=None):
        """The one place a node's or a server's state changes: `cause` is
        why it went (None when it is up); going down sets when."""
        if state.down:
            if not record.state.down:
                record.down_time = now or time.time()
            record.cause = cause
        else:
            record.cause = record.down_time = None
        record.state = state

    def _node_status(self, status, info):
        node = self._node(info.addr)
        node.name = info.name or info.addr
        node.platform = info.platform or ''
        node.cpus = info.cpus or 0
        state = _NODE_STATUS[status]
        self._go(node, state, DISCONNECTED if state is PlaceState.LOST else None)
        if info.avail_info is not None and not state.down:
            self._sample(node, info.avail_info)
        self._touch(node)

    def _server_status(self, status, location):
        server = self._server(location)
        state = _SERVER_STATUS[status]
        if state.down:
            why = 'its server %s' % ('was lost' if state is PlaceState.LOST else 'closed')
            for key in list(server.jobs):       # the scheduler ends them first
                self._end(key, JobState.LOST, why)
        self._go(server, state, DISCONNECTED if state is PlaceState.LOST else None)
        server.update_time = time.time()
        self._touch(server.node)

    def _closed(self):
        """The computation closed: what is still up closes with it."""
        now = time.time()
        if self.computation is not None:
            self.computation['status'] = 'closed'
            self.computation['closed'] = now
        self.waiting = 0
        for record in itertools.chain(self.servers.values(), self.nodes.values()):
            if not record.state.down:
                self._go(record, PlaceState.CLOSED, now=now)
        for node in self.nodes.values():
            self._touch(node)

    def _node(self, addr):
        node = self.nodes.get(addr)
        if node is None:
            node = self.nodes[addr] = _Node(addr)
        return node

    def _server(self, location):
        key = str(location)
        server = self.servers.get(key)
        if server is None:
            node = self._node(location.addr)
            server = self.servers[key] = node.servers[key] = _Server(key, node)
        return server

    def _touch(self, node, now=None):
        self.seq += 1
        node.seq = self.seq
        node.update_time = now or time.time()

    def _count(self, addr, kind):
        totals = self.totals.get(addr)
        if totals is None:
            totals = self.totals[addr] = dict.fromkeys(('submitted',) + ENDINGS, 0)
        totals[kind] += 1

    def _sample(self, node, avail):
        figures = (avail.cpu, avail.memory, avail.disk, avail.swap)
        node.avail = figures
        now = time.time()
        node.last_report = now
        if node.history and now - node.history[-1][0] < 1:
            node.history.pop()          # one node status carries the same figures as the last
        node.history.append((now,) + figures)
        for entry in getattr(avail, 'processes', None) or ():
            try:
                server = node.servers.get(str(entry['location']))
                if server is not None:
                    server.process = {'pid': entry.get('pid'), 'cpu': entry.get('cpu'),
                                      'rss': entry.get('rss'), 'time': now}
            except (TypeError, KeyError, AttributeError):
                log.debug('monitor: process figures %.200r of node %s ignored', entry, node.addr)
        self._touch(node)

    # ---------------- jobs

    def _job_created(self, info):
        location = getattr(info.coro, 'location', None)
        if not isinstance(location, Location):
            log.debug('monitor: coroutine %s has no location; ignored', info.coro)
            return
        key = str(info.coro)
        if key in self.running or key in self.ended:
            return                      # told twice (a snapshot and its news)
        server = self._server(location)
        if server.state is _STARTING:
            self._go(server, PlaceState.UP)
        node = server.node
        job = self.running[key] = server.jobs[key] = _Job(info, key, server)
        server.submitted += 1
        node.submitted += 1
        self._count(node.addr, 'submitted')
        self.throughput.add('started', job.start_time)
        ended = self.early.pop(key, None)
        if ended is not None:           # its end came first (they come from two senders)
            self._end(key, *ended)
        else:
            self._touch(node)

    def _end(self, key, state, error=None, detail=None, end_time=None):
        if key in self.terminating:
            self.terminating.discard(key)
            if state is _FINISHED:      # a terminated coroutine ends like a finished one
                state = _TERMINATED
        now = time.time()
        end_time = end_time or now
        job = self.running.pop(key, None)
        if job is None:
            _remember(self.early, key, (state, error, detail, end_time), ENDED)
            return
        server = job.server
        node = server.node
        del server.jobs[key]
        job.end(state, end_time, error, detail)
        _remember(self.ended, key, (state.value, end_time), ENDED)
        _remember(self.recent, key, job, RECENT_JOBS)
        if state in _FAILURES:
            _remember(self.failures, key, job, self.max_failures)
        server.done += 1
        node.done += 1
        node.counts[state] += 1
        server.recent.appendleft(job)
        self._listed(job)
        self._count(node.addr, state)
        self.throughput.add(state, end_time)
        self._touch(node, now)

    def _listed(self, job):
        """`job` is listed among the jobs that ended at its server: the
        oldest of all servers' lists leaves its list once LISTED are listed."""
        listed = self.listed
        listed.append(job)
        if len(listed) > LISTED:
            job = listed.popleft()
            # the oldest listed anywhere: the oldest of its server's list, if still there
            recent = job.server.recent
            if recent and recent[-1] is job:
                recent.pop()

    # ---------------- a new computation, a snapshot

    def _reset(self):
        self.waiting = 0
        for table in (self.nodes, self.servers, self.running, self.recent, self.failures,
                      self.ended, self.early, self.terminating, self.listed):
            table.clear()
        self.throughput = _Throughput()
        self.seq += 1
        self.reset_seq = self.seq

    def _snapshot(self, answer, full):
        """Apply the scheduler's `watch` answer (API of the scheduler's watch)."""
        queue = answer.get('queue') or []
        current = answer.get('computation')
        self.queue = [{'id': str(comp_id), 'client': _text(client)} for comp_id, client in queue
                      if comp_id != current]
        if not full:
            return
        self._reset()
        if current is None:
            self.computation = None
        else:
            self.computation = {'id': str(current), 'client': _text(answer.get('client')),
                                'status': 'running', 'since': None, 'closed': None}
        for info in answer.get('nodes') or []:
            if isinstance(info, DiscoroNodeInfo):
                self._node_status(Scheduler.NodeInitialized, info)
        for location in answer.get('servers') or []:
            if isinstance(location, Location):
                self._server_status(Scheduler.ServerInitialized, location)
        for info, _name in answer.get('jobs') or []:
            if isinstance(info, DiscoroCoroInfo):
                self._job_created(info)
        self.waiting = answer.get('waiting') or 0
        held, self.held = self.held or [], None
        for msg in held:
            self.update(msg)


# what Monitor.update does with each kind of message (a subclass: as its base)
_TAKES = {DiscoroStatus: Monitor._take_status, MonitorException: Monitor._take_end,
          DiscoroNodeAvailInfo: Monitor._take_pulse, StatusDetail: Monitor._take_detail,
          JobsWaiting: Monitor._take_waiting, Snapshot: Monitor._take_snapshot}


# ---------------------------------------------------------------- the views

def _rounded(value, digits=1):
    return round(value, digits) if isinstance(value, float) else value


def _running(node):
    return sum(len(server.jobs) for server in node.servers.values())


def _servers_up(node):
    return sum(1 for server in node.servers.values() if not server.state.down)


def _avail(index):
    return lambda node, now: node.avail[index] if node.avail else None


def _ended(state):
    return lambda node, now: node.counts[state]


# what a list of nodes can be sorted by (the summary's field of that name) -> its value
# for a node at the time `now`; None (not known) sorts last, whatever the order
NODE_SORTS = {
    'addr': lambda node, now: node.order,
    'name': lambda node, now: node.name.lower(),
    'state': lambda node, now: node.state.value,
    'servers': lambda node, now: _servers_up(node),
    'coros_running': lambda node, now: _running(node),
    'coros_submitted': lambda node, now: node.submitted,
    'coros_done': lambda node, now: node.done,
    'coros_finished': _ended(JobState.FINISHED),
    'coros_failed': _ended(JobState.FAILED),
    'coros_terminated': _ended(JobState.TERMINATED),
    'coros_lost': _ended(JobState.LOST),
    'cpu': _avail(0),
    'memory': _avail(1),
    'disk': _avail(2),
    'swap': _avail(3),
    'report_age': lambda node, now: now - node.last_report if node.last_report else None,
    'update_time': lambda node, now: node.update_time,
}

_BY_ADDRESS = operator.attrgetter('order')
_STATE_OF = operator.attrgetter('state')
_FIRST = operator.itemgetter(0)


def at_once(what, func, *args):
    """The step hook that runs a slice of a view at once (see Views)."""
    return func(*args)


class Views:
    """What the pages show of a Monitor's state, as plain data for JSON (the
    original's field names first, then this monitor's); they read the state
    and never change it.

    :param step: ``step(what, func, *args)`` runs one slice of a view of
        many records, ``func(*args)``, and returns its value; by default at
        once. The web application's lets the hub run between slices (and
        checks each slice in strict mode): the records of a slice are read
        at once, so the state may change only between slices, never under
        one.
    """

    def __init__(self, monitor, step=at_once):
        self.monitor = monitor
        self._step = step

    # ---------------- the cluster and its nodes

    def cluster(self, q='', sort=None, order='asc', offset=0, limit=PAGE):
        """The cluster page's data: the computation and its totals (counted
        from every node: `jobs`, `node_counts`, ...), and one page of nodes,
        `limit` (at most MAX_PAGE) of those `select_nodes(q=q, sort=sort,
        order=order)` chooses, from the `offset`-th; `page` says which
        (`matched`: how many were chosen, `total`: how many nodes there
        are). BadRequest for a value out of range."""
        if not isinstance(offset, int) or offset < 0:
            raise BadRequest('offset must be a whole number, 0 or more, not %r' % (offset,))
        if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise BadRequest('limit (nodes in a page) must be between 1 and %d, not %r'
                             % (MAX_PAGE, limit))
        monitor = self.monitor
        seq, now = monitor.seq, time.time()
        chosen = self.select_nodes(q=q, sort=sort, order=order, now=now)
        nodes = monitor.nodes.values()
        # counted in C (Counter, map): a Python loop over 8,192 servers costs a millisecond
        node_states = collections.Counter(map(_STATE_OF, nodes))
        server_states = collections.Counter(map(_STATE_OF, monitor.servers.values()))
        counts = self.job_counts()
        return dict(monitor.settings.view(), mode=monitor.mode, scheduler=monitor.scheduler,
                    computation=monitor.computation, queue=monitor.queue,
                    nodes=self.summaries(chosen[offset:offset + limit], now),
                    coros_submitted=sum(node.submitted for node in nodes),
                    coros_done=sum(node.done for node in nodes),
                    coros_running=counts['running'], jobs=counts,
                    servers=sum(n for state, n in server_states.items() if not state.down),
                    jobs_waiting=monitor.waiting, throughput=monitor.throughput.view(),
                    failures=[self._job_view(job) for job in
                              itertools.islice(reversed(monitor.failures.values()), 5)],
                    node_counts={state.value: node_states[state] for state in PlaceState},
                    page={'offset': offset, 'limit': limit, 'matched': len(chosen),
                          'total': len(monitor.nodes), 'q': q or '', 'sort': sort,
                          'order': order},
                    seq=seq, time=now)

    def job_counts(self):
        """{state: jobs} of this computation."""
        nodes = self.monitor.nodes.values()
        counts = {state.value: sum(node.counts[state] for node in nodes) for state in ENDINGS}
        return dict(running=len(self.monitor.running), **counts)

    def select_nodes(self, since=None, q='', sort=None, order='asc', now=None):
        """The node records to list, as a new list: those changed after the
        cursor `since` (all when None, or when the state was reset after it)
        whose address or name contains `q` (any case), sorted by the key
        `sort` of NODE_SORTS (None: in the order they came), ascending or
        descending (`order`: 'asc' or 'desc'); ties, and the nodes whose
        value is not known (last), in address order. BadRequest for an
        unknown key or order."""
        if order not in ORDERS:
            raise BadRequest('order must be asc or desc, not %r' % (order,))
        key = NODE_SORTS.get(sort) if sort is not None else None
        if sort is not None and key is None:
            raise BadRequest('sort must be one of %s, not %r' % (', '.join(NODE_SORTS), sort))
        monitor = self.monitor
        if since is None or since < monitor.reset_seq:
            nodes = list(monitor.nodes.values())
        else:
            nodes = [node for node in monitor.nodes.values() if node.seq > since]
        text = (q or '').strip().lower()
        if text:
            nodes = [node for node in nodes
                     if text in node.addr.lower() or text in node.name.lower()]
        if key is None:
            if order == 'desc':
                nodes.reverse()
            return nodes
        now = time.time() if now is None else now
        nodes.sort(key=_BY_ADDRESS)
        valued = [(key(node, now), node) for node in nodes]
        known = [pair for pair in valued if pair[0] is not None]
        known.sort(key=_FIRST, reverse=order == 'desc')     # stable: ties stay in order
        return [node for _, node in known] + [node for value, node in valued if value is None]

    def node_list(self, since=None):
        """Summaries of the nodes changed after `since` (all when None)."""
        return self.summaries(self.select_nodes(since), time.time())

    def summaries(self, nodes, now):
        """node_summary of each of `nodes`, NODE_SLICE of them per step."""
        made = []
        for start in range(0, len(nodes), NODE_SLICE):
            made += self._step('monitor view: node summaries', self._summaries,
                               nodes[start:start + NODE_SLICE], now)
        return made

    def _summaries(self, nodes, now):
        return [self.node_summary(node, now) for node in nodes]

    def node_summary(self, node, now):
        """A node as the original's /cluster_status gave it (name, addr,
        status, servers, update_time, coros_submitted, coros_done,
        avail_info), and what this monitor adds."""
        avail = None
        if node.avail:
            cpu, memory, disk, swap = node.avail
            avail = {'location': None, 'cpu': _rounded(cpu), 'memory': memory, 'disk': disk,
                     'swap': _rounded(swap)}
        interval = _pulse_interval(node)
        age = now - node.last_report if node.last_report else None
        counts = node.counts
        return {'name': node.name, 'addr': node.addr, 'status': node.state.word,
                'servers': _servers_up(node),
                'update_time': node.update_time, 'coros_submitted': node.submitted,
                'coros_done': node.done, 'avail_info': avail,
                # added by this monitor
                'state': node.state.value, 'coros_running': _running(node), 'cause': node.cause,
                'coros_finished': counts[JobState.FINISHED],
                'coros_failed': counts[JobState.FAILED],
                'coros_terminated': counts[JobState.TERMINATED],
                'coros_lost': counts[JobState.LOST],
                'down_time': node.down_time, 'last_report': node.last_report,
                'report_age': _rounded(age), 'pulse_interval': _rounded(interval),
                'stale': bool(node.state is PlaceState.UP and age is not None and interval
                              and age > 3 * interval + 1)}

    def find_node(self, host):
        """The node record at address (or with name) `host`, or None."""
        nodes = self.monitor.nodes
        node = nodes.get(host)
        if node is None:
            node = next((n for n in nodes.values() if n.name == host), None)
        return node

    def find_server(self, location):
        """The server record at `location` ('addr:port', normalized), or None."""
        return self.monitor.servers.get(location)

    def node_info(self, host, since=None, epoch=None, history=True):
        """The node at address (or with name) `host` in detail, or None: the
        original's /node_info fields and this monitor's. With `history`, its
        load samples newer than `since` when `epoch` is the node record's (a
        page's earlier poll), else all of them."""
        node = self.find_node(host)
        if node is None:
            return None
        monitor = self.monitor
        now = time.time()
        info = self.node_summary(node, now)
        full = since is None or epoch != node.epoch
        # times go out rounded (to 10 ms) and come back so: compare them rounded
        samples = [sample for sample in node.history if full or round(sample[0], 2) > since] \
            if history else []
        info.update(platform=node.platform, cpus=node.cpus, time=now, epoch=node.epoch,
                    **monitor.settings.view(),
                    history_full=full,
                    history=[[round(s[0], 2)] + [_rounded(v) for v in s[1:]] for s in samples],
                    servers=[_server_summary(server) for server in node.servers.values()])
        return info

    # ---------------- servers and jobs

    def server_info(self, location, limit=0, original=False):
        """The server at `location` ('addr:port') with its running coroutines
        (the oldest `limit` of them when > 0), or None. `original`: the
        original's /server_info (arguments as str() of each, up to MAX_TEXT),
        else this monitor's (shortened, with the jobs that ended here)."""
        server = self.find_server(location)
        if server is None:
            return None
        monitor = self.monitor
        jobs = sorted(server.jobs.values(), key=lambda job: job.start_time)
        shown = jobs[:limit] if limit > 0 else jobs
        if original:
            coros = []
            for job in shown:
                args, kwargs = job.texts() if monitor.settings.show_coro_args else ('', '')
                coros.append({'coro': job.key, 'name': job.name, 'args': args, 'kwargs': kwargs,
                              'start_time': job.start_time})
        else:
            coros = [self._job_view(job) for job in shown]
        node = server.node
        info = {'location': server.location, 'status': server.state.word,
                'coros_submitted': server.submitted, 'coros_done': server.done,
                'coros': coros, 'update_time': node.update_time}
        info.update(_server_summary(server))
        info.update(name=node.name, node=node.addr, node_state=node.state.value,
                    time=time.time(), **monitor.settings.view())
        if not original:
            info['recent'] = [self._job_view(job) for job in server.recent]
        return info

    def jobs(self, query='', states=(), limit=100):
        """Running and recently ended jobs (and the kept failures) whose id,
        function name or argument text contains `query` (any case), in
        `states` (all when empty), newest first: {'jobs': at most `limit`,
        'matched': how many matched, 'counts': {state: matches ignoring the
        state filter}, 'searched': how many were looked at}."""
        monitor = self.monitor
        query = (query or '').strip().lower()
        names = [state.value for state in JobState]
        bad = [state for state in states if state not in names]
        if bad:
            raise BadRequest('state must be one of %s, not %s' % (', '.join(names),
                                                                  ', '.join(bad)))
        seen = dict(monitor.running)
        for job in itertools.chain(monitor.recent.values(), monitor.failures.values()):
            seen.setdefault(job.key, job)
        jobs = list(seen.values())
        counts = dict.fromkeys(names, 0)
        matched = []
        for start in range(0, len(jobs), JOB_SLICE):
            matched += self._step('monitor view: job search', self._search,
                                  jobs[start:start + JOB_SLICE], query, states, counts)
        matched.sort(key=lambda job: job.end_time or job.start_time, reverse=True)
        return dict(monitor.settings.view(),
                    jobs=[self._job_view(job) for job in matched[:max(limit, 0)]],
                    matched=len(matched), counts=counts, searched=len(seen),
                    max_failures=monitor.max_failures, time=time.time())

    def job(self, key):
        """One job in full (arguments, error, traceback), or None."""
        monitor = self.monitor
        job = monitor.running.get(key) or monitor.recent.get(key) or monitor.failures.get(key)
        return None if job is None else self._job_view(job, full=True)

    def _search(self, jobs, query, states, counts):
        """Those of `jobs` that match `query` and are in `states` (any when
        empty); `counts` counts the matches by state."""
        matched = []
        for job in jobs:
            if query and not self._matches(job, query):
                continue
            counts[job.state.value] += 1
            if not states or job.state.value in states:
                matched.append(job)
        return matched

    def _matches(self, job, query):
        if query in job.key.lower() or query in job.name.lower():
            return True
        if job.error and query in job.error.lower():
            return True
        if self.monitor.settings.show_coro_args:
            args, kwargs = job.texts()
            return query in args.lower() or query in kwargs.lower()
        return False

    def _job_view(self, job, full=False):
        """A job for the pages: its arguments shortened to LIST_TEXT unless
        `full` (then each to MAX_TEXT), hidden when arguments are not shown."""
        view = {'coro': job.key, 'name': job.name, 'server': job.server.location,
                'node': job.server.node.addr, 'state': job.state.value,
                'start_time': job.start_time, 'end_time': job.end_time, 'error': job.error,
                'args': '', 'kwargs': '', 'cut': False}
        if self.monitor.settings.show_coro_args:
            args, kwargs = job.texts()
            if not full:
                view['cut'] = len(args) > LIST_TEXT or len(kwargs) > LIST_TEXT
                args, kwargs = _cut(args), _cut(kwargs)
            view['args'], view['kwargs'] = args, kwargs
        if full:
            view['detail'] = job.detail
        else:
            view['has_detail'] = bool(job.detail)
        return view


def _pulse_interval(node):
    """How often the node reports, from its last samples (None if unknown)."""
    times = node.history.times(6)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return gaps[len(gaps) // 2] if gaps else None


def _server_summary(server):
    """A server as the original's /node_info listed it, and what this monitor adds."""
    process = server.process
    return {'location': server.location, 'coros_submitted': server.submitted,
            'coros_done': server.done, 'coros_running': len(server.jobs),
            'update_time': server.update_time,
            # added by this monitor
            'status': server.state.word, 'state': server.state.value, 'cause': server.cause,
            'down_time': server.down_time,
            'cpu': _rounded(process['cpu']) if process else None,
            'rss': process['rss'] if process else None,
            'pid': process['pid'] if process else None}


def split_location(text):
    """'addr:port' (or '[v6]:port') -> normalized str, or None if malformed."""
    addr, sep, port = (text or '').rpartition(':')
    addr = addr[1:-1] if addr.startswith('[') and addr.endswith(']') else addr
    if not sep or not addr or not port.isdigit():
        return None
    return '%s:%s' % (addr, int(port))
