"""asyncoro.monitor: what the web monitor knows of a discoro computation.

What it owns: `Monitor`, the state of one computation (its nodes with their
load over time, its servers, the coroutines running on each and the ones
that ended) built from the status messages a scheduler sends,
and the plain-data views of it that asyncoro.httpd serves as JSON; also the
monitor's settings (poll interval, whether arguments are shown).

How it works:

- `update(msg)` takes one message: DiscoroStatus for nodes, servers, jobs
  (CoroCreated) and the computation; MonitorException for a job's end;
  DiscoroNodeAvailInfo for a node's load. A job's CoroCreated and its end
  come from different senders, so an end may come first: it is kept until
  the job appears. Coroutine ids are reused once a coroutine ended, so a
  job is known by `str(coro)` only while it runs.
- Attached to a shared scheduler (the httpd.py program), the state starts
  from the scheduler's snapshot (`Snapshot`); messages that overtake the
  snapshot are held until it is applied, so none is applied to a state older
  than itself. A new computation (ComputationScheduled) starts a clean slate.
- It is not thread-safe: one thread (the runtime's hub) owns it.
"""

import collections
import logging
import time

from asyncoro.disasyncoro import Location, MonitorException
from asyncoro.discoro import (DiscoroCoroInfo, DiscoroNodeAvailInfo, DiscoroNodeInfo,
                              DiscoroStatus, Scheduler)

__all__ = []

log = logging.getLogger(__name__)

HISTORY = 720           # availability samples kept per node (2 hours at 10 s pulses)
RECENT = 25             # finished coroutines listed per server
ENDED = 20000           # finished coroutines remembered (to say "already finished")
MAX_TEXT = 400          # characters of one argument shown
POLL_MIN, POLL_MAX = 1, 3600

_NODE_STATUS = {Scheduler.NodeDiscovered: 'Discovered', Scheduler.NodeInitialized: 'Initialized',
                Scheduler.NodeClosed: 'Closed', Scheduler.NodeIgnore: 'Ignore',
                Scheduler.NodeDisconnected: 'Disconnected'}
_SERVER_STATUS = {Scheduler.ServerDiscovered: 'Discovered',
                  Scheduler.ServerInitialized: 'Initialized',
                  Scheduler.ServerClosed: 'Closed', Scheduler.ServerIgnore: 'Ignore',
                  Scheduler.ServerDisconnected: 'Disconnected'}
_GONE = ('Closed', 'Disconnected', 'Ignore')


class BadRequest(ValueError):
    """A request the monitor cannot take; the message says why (a 400)."""


# ---------------------------------------------------------------- state

class _Node:
    __slots__ = ('addr', 'name', 'status', 'platform', 'cpus', 'avail', 'history', 'servers',
                 'submitted', 'done', 'update_time', 'seq')

    def __init__(self, addr):
        self.addr = addr
        self.name = addr
        self.status = None
        self.platform = ''
        self.cpus = 0
        self.avail = None                   # the latest (cpu, memory, disk, swap)
        self.history = collections.deque(maxlen=HISTORY)   # (time, cpu, memory, disk, swap)
        self.servers = {}                   # str(Location) -> _Server
        self.submitted = 0
        self.done = 0
        self.update_time = time.time()
        self.seq = 0


class _Server:
    __slots__ = ('location', 'node', 'status', 'jobs', 'submitted', 'done', 'recent',
                 'update_time')

    def __init__(self, location, node):
        self.location = location            # str(Location)
        self.node = node
        self.status = None
        self.jobs = {}                      # str(rcoro) -> _Job, the running ones
        self.submitted = 0
        self.done = 0
        self.recent = collections.deque(maxlen=RECENT)   # dicts of finished coroutines
        self.update_time = time.time()


class _Job:
    __slots__ = ('coro', 'key', 'name', 'args', 'kwargs', 'start_time')

    def __init__(self, info):
        self.coro = info.coro
        self.key = str(info.coro)
        self.name = getattr(info.coro, 'name', '') or ''
        self.args = info.args if isinstance(info.args, (tuple, list)) else (info.args,)
        self.kwargs = info.kwargs if isinstance(info.kwargs, dict) else {}
        self.start_time = info.start_time if isinstance(info.start_time, (int, float)) \
            else time.time()


class Snapshot:
    """From the standalone program to the monitor's coroutine: the scheduler's
    `watch` answer (`full`: a new snapshot; else only its queue is news)."""

    __slots__ = ('answer', 'full')

    def __init__(self, answer, full):
        self.answer = answer
        self.full = full


def _text(obj):
    """str(obj) for the page: shortened, and never an exception."""
    try:
        text = str(obj)
    except Exception as exc:        # a user class whose __str__ fails: say so, go on
        text = '<%s: str() failed: %s>' % (type(obj).__name__, exc)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + '\u2026'


def _ended_how(kind, value):
    if kind is StopIteration:
        return 'finished'
    if kind == Scheduler.ServerClosed:
        return 'server closed'
    name = getattr(kind, '__name__', None) or _text(kind)
    return 'failed: %s: %s' % (name, _text(value)) if value is not None else 'failed: ' + name


class Monitor:
    """What the pages show: nodes, servers and running coroutines of one
    computation, built from its status messages. Used in one thread only
    (the runtime's hub)."""

    def __init__(self, poll_sec=10, show_coro_args=True):
        self.poll_sec = poll_sec
        self.show_coro_args = bool(show_coro_args)
        self.mode = 'client'
        self.scheduler = None           # standalone: where the scheduler is, or None
        # ids are str: they are 64-bit, more than a JavaScript number holds exactly
        self.computation = None         # {'id', 'client', 'status', 'since'}
        self.queue = []                 # standalone: [{'id', 'client'}] waiting their turn
        self.nodes = {}                 # addr -> _Node
        self.servers = {}               # str(Location) -> _Server
        self.ended = collections.OrderedDict()   # str(rcoro) -> {'how', 'end_time'}
        self.early = collections.OrderedDict()   # the same, of ends that came before creation
        self.terminating = set()        # str(rcoro) of the running ones terminated from a page
        self.seq = 0                    # bumped at every change of a node
        self.reset_seq = 0              # the seq at the last reset: older cursors see all
        self.held = None                # messages that came before the awaited snapshot

    # ---------------- messages

    def update(self, msg):
        """Take one status message (any other message is logged and dropped)."""
        if isinstance(msg, Snapshot):
            self._snapshot(msg.answer, msg.full)
            return
        if self.held is not None:
            self.held.append(msg)
            return
        if isinstance(msg, DiscoroStatus):
            self._status(msg.status, msg.info)
        elif isinstance(msg, MonitorException):
            self._job_ended(msg)
        elif isinstance(msg, DiscoroNodeAvailInfo):
            if msg.location is not None:
                self._sample(self._node(msg.location.addr), msg)
        else:
            log.debug('monitor: message %.200r is not a status message; ignored', msg)

    def _status(self, status, info):
        if status in _NODE_STATUS and isinstance(info, DiscoroNodeInfo):
            node = self._node(info.addr)
            node.name = info.name or info.addr
            node.platform = info.platform or ''
            node.cpus = info.cpus or 0
            node.status = _NODE_STATUS[status]
            if info.avail_info is not None:
                self._sample(node, info.avail_info)
            self._touch(node)
        elif status in _SERVER_STATUS and isinstance(info, Location):
            server = self._server(info)
            server.status = _SERVER_STATUS[status]
            server.update_time = time.time()
            if server.status in _GONE:
                for job in list(server.jobs.values()):
                    self._end(job.key, 'server closed')
            self._touch(server.node)
        elif status == Scheduler.CoroCreated and isinstance(info, DiscoroCoroInfo):
            self._job_created(info)
        elif status == Scheduler.ComputationClosed:
            if self.computation is not None:
                self.computation['status'] = 'closed'
        elif status == Scheduler.ComputationScheduled and isinstance(info, tuple) \
                and len(info) == 2:
            self._reset()
            self.computation = {'id': str(info[0]), 'client': _text(info[1]), 'status': 'running',
                                'since': time.time()}
            self.queue = [entry for entry in self.queue if entry['id'] != str(info[0])]
        else:
            log.debug('monitor: status %s with %.200r ignored', status, info)

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
            if node.status is None:
                node.status = 'Discovered'
        return server

    def _touch(self, node):
        self.seq += 1
        node.seq = self.seq
        node.update_time = time.time()

    def _sample(self, node, avail):
        figures = (avail.cpu, avail.memory, avail.disk, avail.swap)
        node.avail = figures
        now = time.time()
        if node.history and now - node.history[-1][0] < 1:
            node.history.pop()          # one node status carries the same figures as the last
        node.history.append((now,) + figures)
        self._touch(node)

    def _job_created(self, info):
        location = getattr(info.coro, 'location', None)
        if not isinstance(location, Location):
            log.debug('monitor: coroutine %s has no location; ignored', info.coro)
            return
        server = self._server(location)
        if server.status is None:
            server.status = 'Initialized'
        job = _Job(info)
        if job.key in server.jobs:
            return
        server.submitted += 1
        server.node.submitted += 1
        self.ended.pop(job.key, None)   # ids are reused once a coroutine ended
        ended = self.early.pop(job.key, None)
        if ended is not None:           # its end came first (they come from two senders)
            self.ended[job.key] = ended
            server.done += 1
            server.node.done += 1
            server.recent.appendleft(self._finished(job, ended))
        else:
            server.jobs[job.key] = job
        self._touch(server.node)

    def _job_ended(self, msg):
        if len(msg.args) < 2 or not isinstance(msg.args[1], tuple) or len(msg.args[1]) != 2:
            log.debug('monitor: malformed %r ignored', msg)
            return
        kind, value = msg.args[1]
        self._end(str(msg.args[0]), _ended_how(kind, value))

    def _end(self, key, how):
        if key in self.terminating:
            self.terminating.discard(key)
            if how == 'finished':       # a terminated coroutine ends like a finished one
                how = 'terminated'
        ended = {'how': how, 'end_time': time.time()}
        for server in self.servers.values():
            job = server.jobs.pop(key, None)
            if job is not None:
                self._remember(self.ended, key, ended)
                server.done += 1
                server.node.done += 1
                server.recent.appendleft(self._finished(job, ended))
                self._touch(server.node)
                return
        self._remember(self.early, key, ended)

    @staticmethod
    def _remember(table, key, ended):
        table[key] = ended
        table.move_to_end(key)
        while len(table) > ENDED:
            table.popitem(last=False)

    def _finished(self, job, ended):
        return {'coro': job.key, 'name': job.name, 'start_time': job.start_time,
                'end_time': ended['end_time'], 'how': ended['how']}

    def _reset(self):
        self.nodes.clear()
        self.servers.clear()
        self.ended.clear()
        self.early.clear()
        self.terminating.clear()
        self.seq += 1
        self.reset_seq = self.seq

    def _snapshot(self, answer, full):
        """Apply the scheduler's `watch` answer (API of _SchedulerService.on_watch)."""
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
                                'status': 'running', 'since': None}
        for info in answer.get('nodes') or []:
            self._status(Scheduler.NodeInitialized, info)
        for location in answer.get('servers') or []:
            self._status(Scheduler.ServerInitialized, location)
        for info, _name in answer.get('jobs') or []:
            self._job_created(info)
        held, self.held = self.held or [], None
        for msg in held:
            self.update(msg)

    # ---------------- views (plain data, for JSON)

    def settings(self):
        return {'poll_sec': self.poll_sec, 'show_coro_args': self.show_coro_args}

    def set_settings(self, poll_sec=None, show_coro_args=None):
        """Change the poll interval and the arguments switch; BadRequest if
        a value is not acceptable (then nothing changes)."""
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
        return self.settings()

    def _node_summary(self, node):
        running = sum(len(server.jobs) for server in node.servers.values())
        avail = None
        if node.avail:
            cpu, memory, disk, swap = node.avail
            avail = {'cpu': cpu, 'memory': memory, 'disk': disk, 'swap': swap}
        return {'ip_addr': node.addr, 'name': node.name, 'status': node.status,
                'servers': sum(1 for s in node.servers.values() if s.status not in _GONE),
                'coros_submitted': node.submitted, 'coros_done': node.done,
                'coros_running': running, 'update_time': node.update_time,
                'avail_info': avail}

    def node_list(self, since=None):
        """Summaries of the nodes changed after `since` (all when None)."""
        if since is not None and since < self.reset_seq:
            since = None
        return [self._node_summary(node) for node in self.nodes.values()
                if since is None or node.seq > since]

    def cluster(self):
        nodes = self.node_list()
        return dict(self.settings(), mode=self.mode, scheduler=self.scheduler,
                    computation=self.computation, queue=self.queue, nodes=nodes,
                    coros_submitted=sum(n['coros_submitted'] for n in nodes),
                    coros_done=sum(n['coros_done'] for n in nodes),
                    coros_running=sum(n['coros_running'] for n in nodes),
                    servers=sum(n['servers'] for n in nodes), seq=self.seq, time=time.time())

    def find_node(self, host):
        node = self.nodes.get(host)
        if node is None:
            node = next((n for n in self.nodes.values() if n.name == host), None)
        return node

    def node_info(self, host):
        """The node at address (or with name) `host` in detail, or None."""
        node = self.find_node(host)
        if node is None:
            return None
        info = self._node_summary(node)
        info.update(platform=node.platform, cpus=node.cpus, time=time.time(),
                    poll_sec=self.poll_sec, show_coro_args=self.show_coro_args,
                    history=[list(sample) for sample in node.history],
                    servers=[{'location': server.location, 'status': server.status,
                              'coros_submitted': server.submitted, 'coros_done': server.done,
                              'coros_running': len(server.jobs),
                              'update_time': server.update_time}
                             for server in node.servers.values()])
        return info

    def server_info(self, location, limit=0):
        """The server at `location` ('addr:port') with its running coroutines
        (at most `limit` of them when > 0), or None."""
        server = self.servers.get(location)
        if server is None:
            return None
        jobs = sorted(server.jobs.values(), key=lambda job: job.start_time)
        shown = jobs[:limit] if limit > 0 else jobs
        coros = []
        for job in shown:
            entry = {'coro': job.key, 'name': job.name, 'start_time': job.start_time,
                     'args': '', 'kwargs': ''}
            if self.show_coro_args:
                entry['args'] = ', '.join(_text(arg) for arg in job.args)
                entry['kwargs'] = ', '.join('%s=%s' % (key, _text(value))
                                            for key, value in job.kwargs.items())
            coros.append(entry)
        return {'location': server.location, 'name': server.node.name,
                'node': server.node.addr, 'status': server.status,
                'coros_submitted': server.submitted, 'coros_done': server.done,
                'coros_running': len(jobs), 'coros': coros, 'recent': list(server.recent),
                'update_time': server.update_time, 'time': time.time(),
                'poll_sec': self.poll_sec, 'show_coro_args': self.show_coro_args}

    def terminate(self, keys):
        """Terminate the running coroutines named (`str(coro)`) in `keys`:
        {'terminated', 'finished', 'unknown', 'failed', 'message'}. Their ends
        come later, as MonitorExceptions."""
        result = {'terminated': [], 'finished': [], 'unknown': [], 'failed': []}
        for key in keys:
            job = next((server.jobs[key] for server in self.servers.values()
                        if key in server.jobs), None)
            if job is not None:
                if job.coro.terminate() == 0:
                    self.terminating.add(key)
                    result['terminated'].append(key)
                else:
                    result['failed'].append(key)
            elif key in self.ended or key in self.early:
                ended = self.ended.get(key) or self.early[key]
                result['finished'].append(dict(ended, coro=key))
            else:
                result['unknown'].append(key)
        result['message'] = _terminate_message(result)
        return result


def _terminate_message(result):
    parts = []
    if result['terminated']:
        n = len(result['terminated'])
        parts.append('terminating %d coroutine%s' % (n, '' if n == 1 else 's'))
    for entry in result['finished']:
        how = entry['how']
        parts.append('%s already %s' % (entry['coro'], how if how in ('finished', 'terminated')
                                        else 'ended (%s)' % how))
    for key in result['failed']:
        parts.append('%s could not be reached to terminate it' % key)
    for key in result['unknown']:
        parts.append('%s is not a coroutine of this computation' % key)
    return '; '.join(parts)


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


def split_location(text):
    """'addr:port' (or '[v6]:port') -> normalized str, or None if malformed."""
    addr, sep, port = (text or '').rpartition(':')
    addr = addr[1:-1] if addr.startswith('[') and addr.endswith(']') else addr
    if not sep or not addr or not port.isdigit():
        return None
    return '%s:%s' % (addr, int(port))
