"""asyncoro.discoro: ship computations to server processes on nodes.

What it owns: `Computation` (the client's side: components, `schedule`,
`run*`, `close`), `Scheduler` (the private scheduler, run inside the client),
the status messages and data classes (`DiscoroStatus`, `DiscoroCoroInfo`,
`DiscoroNodeInfo`, `DiscoroNodeAvailInfo`, `DiscoroNodeAllocate`), and
`_Service`, the request/reply pattern the scheduler, the nodes
(asyncoro.discoronode) and the servers all use.

How it works:

- Each role is a system coroutine with a name: the scheduler
  (`discoro_scheduler`), each node (`discoro_node`), each server
  (`discoro_server`) and each scheduled computation's client side. A request
  is the tuple `(op, request id, reply-to coroutine, *args)`; `_Service`
  dispatches it to its `on_<op>` method in a greenlet of its own, and the
  answer comes back as `(REPLY, request id, value)`.
- The scheduler learns of peers through `peer_status`, asks each new one
  whether it runs `discoro_node`, and uses the nodes for the computation it
  is running (one at a time; later ones wait in order). For each node it
  reserves it, sends the component files, and has it start servers; each
  server introduces itself to the scheduler.
- Jobs: `run*` asks the scheduler, which picks a server (API.md §11.13: CPU
  jobs one per server, first come first served; async jobs anywhere) and has
  that server start the coroutine, monitored by the scheduler. A job's end
  (its MonitorException) frees the server, answers `run_result*` and goes on
  to `status_coro`.
- Faults: a node reports a server process that died at once; the scheduler
  also sees a server's or node's connection go. Nodes pulse the scheduler
  every pulse_interval; a node whose scheduler misses 5 pulses closes the
  computation there.
"""

import collections
import functools
import inspect
import itertools
import logging
import os
import re
import shutil
import sys
import time
import types
import uuid

import gevent
import gevent.event

import asyncoro.disasyncoro as asyncoro
from asyncoro import _ShowsMsgTimeout, _stop_value
from asyncoro.disasyncoro import (Coro, Location, MonitorException, PeerStatus, SysCoro,
                                  Singleton)

__all__ = ['Scheduler', 'Computation', 'DiscoroStatus', 'DiscoroCoroInfo', 'CoroInfo',
           'DiscoroNodeInfo', 'DiscoroNodeAvailInfo', 'DiscoroNodeAllocate']

log = logging.getLogger(__name__)

# programs read asyncoro.discoro.MinPulseInterval with `asyncoro` bound to either
# the package or asyncoro.disasyncoro; MsgTimeout here is the core's
asyncoro.discoro = sys.modules[__name__]
sys.modules[__name__].__class__ = _ShowsMsgTimeout

MinPulseInterval = 10
MaxPulseInterval = 100
DEFAULT_NODE_PORT = 51351
REPLY = 'reply'


class DiscoroError(asyncoro.AsyncoroError):
    """A computation was used wrongly (not scheduled, closed, bad argument)."""


class ServerLost(DiscoroError):
    """What run_result* gives for a job whose server closed or died under it."""


# ---------------------------------------------------------------- status and data

DiscoroStatus = collections.namedtuple('DiscoroStatus', ['status', 'info'])
DiscoroCoroInfo = collections.namedtuple('DiscoroCoroInfo', ['coro', 'args', 'kwargs',
                                                             'start_time'])
CoroInfo = DiscoroCoroInfo


class DiscoroNodeAvailInfo:
    """What a node has free: `cpu` (percent of CPU idle), `memory` (bytes
    available), `disk` (bytes free where the node keeps files), `swap`
    (percent of swap free); `location` is the node process's Location. The
    figures are None where psutil cannot tell."""

    __slots__ = ('location', 'cpu', 'memory', 'disk', 'swap')

    def __init__(self, location, cpu, memory, disk, swap):
        self.location = location
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
        self.swap = swap

    def __reduce__(self):
        return (DiscoroNodeAvailInfo, (self.location, self.cpu, self.memory, self.disk,
                                       self.swap))

    def __repr__(self):
        return ('DiscoroNodeAvailInfo(%s, cpu=%s, memory=%s, disk=%s, swap=%s)'
                % (self.location, self.cpu, self.memory, self.disk, self.swap))


class DiscoroNodeInfo(collections.namedtuple('DiscoroNodeInfo',
                                             ['name', 'addr', 'cpus', 'platform', 'avail_info'])):
    """A node as the scheduler sees it; the seed's names (`location`, `cpu`,
    `memory`, `disk`, `swap`) read its avail_info."""

    __slots__ = ()

    location = property(lambda self: self.avail_info.location if self.avail_info else None)
    cpu = property(lambda self: self.avail_info.cpu if self.avail_info else None)
    memory = property(lambda self: self.avail_info.memory if self.avail_info else None)
    disk = property(lambda self: self.avail_info.disk if self.avail_info else None)
    swap = property(lambda self: self.avail_info.swap if self.avail_info else None)


class DiscoroNodeAllocate:
    """Which nodes a computation uses, and how many of their servers.

    `node`: a host name, an IP address or a pattern with `*` ('192.168.1.*',
    '*'); `platform`: a regular expression searched (ignoring case) in the
    node's platform string; `cpus`, `memory`, `disk`: what the node must have.
    `allocate()` returns how many servers to use: > 0 that many, 0 not this
    node, < 0 this rule does not apply (the next one is asked). As in asyncoro
    4.5, cpus=0 *excludes* matching nodes (API.md §9 #6); subclasses may
    override `allocate`."""

    def __init__(self, node, platform='', cpus=0, memory=0, disk=0):
        if not isinstance(node, str) or not node:
            raise TypeError('DiscoroNodeAllocate node must be a host, an IP address or a '
                            'pattern such as "192.168.1.*", not %r' % (node,))
        if '*' not in node and not re.fullmatch(r'[0-9a-fA-F.:]+', node):
            node = Location(node, 0).addr        # a host name: its address
        self.node = node
        self.ip_rex = re.compile('^' + re.escape(node).replace(r'\*', '.*') + '$')
        self.platform = re.compile(platform, re.IGNORECASE) if platform else None
        self.cpus = int(cpus)
        self.memory = memory or 0
        self.disk = disk or 0

    def allocate(self, ip_addr, name, platform, cpus, memory, disk):
        if not self.ip_rex.match(ip_addr):
            return -1
        if self.platform is not None and not self.platform.search(platform or ''):
            return -1
        if (self.memory and memory is not None and memory < self.memory) or \
                (self.disk and disk is not None and disk < self.disk):
            return 0
        if self.cpus > 0:
            return self.cpus if cpus >= self.cpus else 0
        if self.cpus == 0:
            return 0
        return max(cpus + self.cpus, 0)

    def __repr__(self):
        return 'DiscoroNodeAllocate(%r, cpus=%s)' % (self.node, self.cpus)


def _servers_for(allocations, info):
    """How many servers of the node `info` a computation uses (API.md §5.5)."""
    avail = info.avail_info
    for rule in allocations:
        n = rule.allocate(info.addr, info.name, info.platform, info.cpus,
                          avail.memory if avail else None, avail.disk if avail else None)
        if n >= 0:
            return min(n, info.cpus)
    return info.cpus


# ---------------------------------------------------------------- request/reply services

class _Failure:
    """A reply that says the request failed, and why."""

    __slots__ = ('reason',)

    def __init__(self, reason):
        self.reason = reason

    def __reduce__(self):
        return (_Failure, (self.reason,))

    def __repr__(self):
        return '<failed: %s>' % self.reason


_TIMEOUT = _Failure('no answer in time')


class _Service:
    """A system coroutine that serves requests `(op, id, reply_to, *args)` with
    its `on_<op>` methods (each in a greenlet of its own, so they may block)
    and makes requests of other services with `call`/`tell`.
    MonitorExceptions go to `on_monitor`, PeerStatus to `on_peer`; both run in
    the coroutine itself and must not block."""

    def __init__(self, name=None):
        self._waiting = {}              # request id -> (AsyncResult, Location asked)
        self._ids = itertools.count(1)
        self.coro = SysCoro(self._serve)
        if name is not None:
            self.coro.register(name)

    def _serve(self, coro=None):
        while True:
            msg = yield coro.receive()
            if type(msg) is tuple and msg:
                if msg[0] == REPLY:
                    waiting = self._waiting.pop(msg[1], None)
                    if waiting is not None:
                        waiting[0].set(msg[2])
                    continue
                handler = getattr(self, 'on_' + msg[0], None) if isinstance(msg[0], str) else None
                if handler is not None and len(msg) >= 3:
                    gevent.spawn(self._handle, handler, msg)
                    continue
            if isinstance(msg, MonitorException):
                self._guarded(self.on_monitor, msg)
            elif isinstance(msg, PeerStatus):
                if msg.status == PeerStatus.Offline:
                    self.fail_calls(msg.location, '%s went away' % msg.location)
                self._guarded(self.on_peer, msg)
            else:
                log.warning('%s: unexpected message %.200r', self.coro, msg)

    def _guarded(self, func, *args):
        try:
            func(*args)
        except Exception:       # our bug: log it, keep serving
            log.error('%s: %s failed', self.coro, func.__name__, exc_info=True)

    def _handle(self, handler, msg):
        op, request_id, reply_to = msg[:3]
        try:
            value = handler(*msg[3:])
        except Exception as exc:     # our bug or bad input: the caller gets the reason
            log.warning('%s: %s failed', self.coro, op, exc_info=True)
            value = _Failure('%s: %s: %s' % (op, type(exc).__name__, exc))
        if request_id is not None and isinstance(reply_to, Coro):
            reply_to.send((REPLY, request_id, value))

    def call(self, target, op, *args, timeout=None):
        """Ask `target` (a service's coroutine) to do `op`; its answer, or
        _TIMEOUT. Blocks the calling greenlet."""
        request_id = next(self._ids)
        waiter = gevent.event.AsyncResult()
        self._waiting[request_id] = (waiter, target.location)
        try:
            if target.send((op, request_id, self.coro) + args) < 0:
                return _Failure('%s could not be sent to %s (the log says why)' % (op, target))
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            return _TIMEOUT
        finally:
            self._waiting.pop(request_id, None)

    def fail_calls(self, location, reason):
        """Calls waiting for an answer from `location` (None: from anyone)
        fail now: it is gone (a service that gets PeerStatus does this by
        itself)."""
        for waiter, asked in list(self._waiting.values()):
            if (location is None or asked == location) and not waiter.ready():
                waiter.set(_Failure(reason))

    def stop(self, reason='the service stopped'):
        """End this service: its coroutine ends and the calls still waiting
        for an answer fail with `reason`."""
        self.fail_calls(None, reason)
        self.coro.terminate()

    def tell(self, target, op, *args):
        """`op` for `target`, wanting no answer."""
        return target.send((op, None, self.coro) + args)

    def on_monitor(self, msg):
        log.warning('%s: unexpected %r', self.coro, msg)

    def on_peer(self, status):
        pass


def _run_sync(gen):
    """Run a setup generator with no runtime (node_setup runs in a process
    that must stay without hub and threads): yielded values come straight
    back, yielded generators run as sub-generators. Its value (API.md §11.2)."""
    stack, value, last, exc = [gen], None, None, None
    while stack:
        top = stack[-1]
        try:
            yielded = top.throw(exc) if exc is not None else top.send(value)
            exc = None
        except Exception as error:     # its end: a value, or an error for the caller
            stack.pop()
            stop = error if isinstance(error, StopIteration) else error.__cause__
            if isinstance(stop, StopIteration):          # `return`, or PEP 479's wrapping
                value = last = _stop_value(stop, last)
                continue
            if not stack:
                raise
            exc, value = error, None
            continue
        if isinstance(yielded, types.GeneratorType):
            stack.append(yielded)
            value = None
        else:
            value = last = yielded
    return value


# ---------------------------------------------------------------- the computation (client side)

# CPython drops __main__.__file__ once the script's last line has run, and
# inspect needs it to find a class's source: programs build computations in
# coroutines that run after that (exit-wait), so remember it now
_MAIN_FILE = getattr(sys.modules.get('__main__'), '__file__', None)


def _source(obj, what):
    main = sys.modules.get('__main__')
    if _MAIN_FILE and main is not None and getattr(obj, '__module__', None) == '__main__' \
            and getattr(main, '__file__', None) is None:
        main.__file__ = _MAIN_FILE
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise DiscoroError('%s %r: its source code is not available (%s); define it in a '
                           'file' % (what, obj, exc)) from exc


def _tracked(cls):
    """A line to run after a class component's source on the servers: it makes
    the class made there the one the client's instances unpickle to, and
    instances made there unpickle here to `cls` (API.md §5.6)."""
    return '\nasyncoro.netio.track_class(%r, %s)\n' % (asyncoro.netio.class_tracker_id(cls),
                                                      cls.__name__)


def _dedent(text):
    lines = text.splitlines(True)
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return ''.join(line[indent:] for line in lines)


class Computation:
    """A computation: code and files (`components`) to ship to servers, and
    the jobs run with them. See API.md §5.3 for every argument.

    Raises DiscoroError (an Exception) for a bad argument, with the reason."""

    def __init__(self, components, pulse_interval=(5 * MinPulseInterval),
                 node_allocations=[],         # noqa: B006 - API.md's signature; never mutated
                 status_coro=None, node_setup=None, server_setup=None, disable_nodes=False,
                 disable_servers=False, peers_communicate=False):
        if not isinstance(components, (list, tuple)):
            components = [components]
        if not isinstance(pulse_interval, (int, float)) or \
                not MinPulseInterval <= pulse_interval <= MaxPulseInterval:
            raise DiscoroError('pulse_interval must be between %s and %s, not %r'
                               % (MinPulseInterval, MaxPulseInterval, pulse_interval))
        allocations = []
        for rule in node_allocations or []:
            if isinstance(rule, str):
                rule = DiscoroNodeAllocate(rule)
            if not isinstance(rule, DiscoroNodeAllocate):
                raise DiscoroError('node_allocations must be DiscoroNodeAllocate objects or '
                                   'strings, not %r' % (rule,))
            allocations.append(rule)
        if status_coro is not None and not isinstance(status_coro, Coro):
            raise DiscoroError('status_coro must be a Coro, not %r' % (status_coro,))
        for name, setup in (('node_setup', node_setup), ('server_setup', server_setup)):
            if setup is not None and not inspect.isgeneratorfunction(setup):
                raise DiscoroError('%s must be a generator function, not %r' % (name, setup))
        if (disable_nodes or disable_servers) and status_coro is None:
            raise DiscoroError('disable_nodes and disable_servers need a status_coro (to hear '
                               'of the nodes and servers to enable)')
        code, files, names = [], [], set()
        for item in list(components) + [s for s in (node_setup, server_setup) if s is not None]:
            if isinstance(item, (types.FunctionType, type)):
                if item.__name__ not in names:
                    code.append(_dedent(_source(item, 'component')))
                    if isinstance(item, type):
                        code.append(_tracked(item))
                    names.add(item.__name__)
            elif isinstance(item, types.ModuleType):
                path = getattr(item, '__file__', None) or ''
                if not path.endswith('.py'):
                    raise DiscoroError('module component %r has no .py source' % item.__name__)
                files.append(self._file(path, os.path.join(*item.__name__.split('.')[:-1])
                                        if '.' in item.__name__ else None))
            elif isinstance(item, str):
                if not os.path.isfile(item):
                    raise DiscoroError('file component %r does not exist' % item)
                files.append(self._file(item, None))
            elif isinstance(item, (types.BuiltinFunctionType, functools.partial,
                                   types.MethodType)) or type(item).__module__ == 'builtins':
                raise DiscoroError('component %r is not a function, class, module or file'
                                   % (item,))
            else:
                cls = type(item)
                if cls.__name__ not in names:
                    code.append(_dedent(_source(cls, 'class of component')))
                    code.append(_tracked(cls))
                    names.add(cls.__name__)
        self._code = '\n'.join(code)
        try:
            compile(self._code, '<computation components>', 'exec')
        except SyntaxError as exc:
            raise DiscoroError('components do not compile: %s' % exc) from exc
        self._names = names
        self._files = files
        self._pulse_interval = pulse_interval
        self._allocations = allocations
        self.status_coro = status_coro
        self._node_setup = node_setup.__name__ if node_setup else None
        self._server_setup = server_setup.__name__ if server_setup else None
        self._disable_nodes = bool(disable_nodes)
        self._disable_servers = bool(disable_servers)
        self._peers_communicate = bool(peers_communicate)
        # the key of this computation everywhere: id(self) alone is not unique
        # across client processes, which share one scheduler program
        self._id = uuid.uuid4().int >> 65
        self.scheduler = None
        self._client = None
        self._closed = False

    @staticmethod
    def _file(path, rel):
        path = os.path.abspath(path)
        if rel is None:
            cwd = os.getcwd()
            parent = os.path.dirname(path)
            rel = os.path.relpath(parent, cwd) if os.path.commonpath([cwd, parent]) == cwd else ''
            rel = '' if rel == '.' else rel
        return (path, rel)

    def _package(self):
        """What the scheduler (and through it the nodes) needs of this."""
        return _Package(self._id, self._code, self._files, self._pulse_interval,
                        self._allocations, self.status_coro, self._node_setup,
                        self._server_setup, self._disable_nodes, self._disable_servers,
                        self._peers_communicate, self._client.coro,
                        asyncoro.AsynCoro.instance().location, id(self))

    def _upload(self, rt, scheduler):
        """A scheduler in another process gets the component files first:
        it sends them on to the nodes. 0, or the reason it failed."""
        for path, rel in self._files:
            folder = os.path.join(_upload_dir(self._id), rel) if rel else _upload_dir(self._id)
            if rt.send_file(scheduler.location, path, dir=folder, overwrite=True,
                            timeout=asyncoro._msg_timeout()) < 0:
                return 'could not send %s to the scheduler at %s' % (path, scheduler.location)
        return 0

    # -------------------------------------------- scheduling

    def schedule(self, location=None, timeout=None):
        """Find the scheduler (at `location`, or anywhere, within MsgTimeout)
        and submit this computation; wait (with no limit) until the scheduler
        starts it. 0, or -1 if no scheduler was found.
        `yield computation.schedule()`. (`timeout` is accepted and unused.)"""
        if self.scheduler is not None:
            return 0
        if self._closed:
            raise DiscoroError('computation %s was closed' % self._id)
        rt = asyncoro.AsynCoro.instance()
        scheduler = None
        if location is None and _last_scheduler[0] is not None:
            # the scheduler of this client's last computation, asked alone
            # first: a broadcast would also ask every server of the last
            # computation, which may be going away just now
            scheduler = rt._run_here(SysCoro.locate, 'discoro_scheduler', _last_scheduler[0],
                                     asyncoro._msg_timeout())
        if scheduler is None:
            scheduler = rt._run_here(SysCoro.locate, 'discoro_scheduler', location,
                                     asyncoro._msg_timeout())
        if scheduler is None:
            log.warning('no scheduler answered at %s within %ss (is discoro.py running, or '
                        'Scheduler() called? same secret?)', location or 'any peer',
                        asyncoro._msg_timeout())
            return -1
        if scheduler.location != rt.location:
            failed = self._upload(rt, scheduler)
            if failed:
                log.warning('scheduling computation %s failed: %s', self._id, failed)
                return -1
        self._client = rt._run_here(_ClientService, scheduler)
        answer = rt._run_here(self._client.call, scheduler, 'schedule', self._package())
        if isinstance(answer, _Failure):
            log.warning('scheduling computation %s failed: %s', self._id, answer.reason)
            return -1
        self.scheduler = scheduler
        _last_scheduler[0] = scheduler.location
        rt.atexit(10, self._close_at_exit)
        return 0

    def _close_at_exit(self):
        if self.scheduler is not None and not self._closed:
            self.close()

    def _ask(self, op, *args, timeout=None):
        if self.scheduler is None:
            raise DiscoroError('computation %s is not scheduled (call schedule() first)'
                               % self._id)
        if self._closed and op != 'close':
            raise DiscoroError('computation %s is closed' % self._id)
        rt = asyncoro.AsynCoro.instance()
        return rt._run_here(self._client.call, self.scheduler, op, self._id, *args,
                            timeout=timeout)

    # -------------------------------------------- jobs

    def _job_spec(self, gen):
        if isinstance(gen, str):
            return gen, None
        if not callable(gen) or not hasattr(gen, '__name__'):
            raise DiscoroError('%r is not a function (or the name of one)' % (gen,))
        if gen.__name__ in self._names:
            return gen.__name__, None
        return gen.__name__, _dedent(_source(gen, 'job function'))

    def _run(self, kind, where, gen, args, kwargs, want_result):
        name, source = self._job_spec(gen)
        if where is not None and not isinstance(where, (str, Location)):
            raise DiscoroError('where must be a node address or a server Location, not %r'
                               % (where,))
        try:
            asyncoro.netio.dumps((args, kwargs))
        except Exception as exc:       # whatever pickling raises: the arguments are at fault
            log.warning('job %s not run: its arguments cannot be pickled: %s: %s',
                        name, type(exc).__name__, exc)
            return None
        answer = self._ask('run', kind, where, name, source, args, kwargs, want_result)
        if isinstance(answer, ServerLost) and want_result:
            return answer           # run_result*: the job's error
        if isinstance(answer, (_Failure, ServerLost)):
            log.warning('job %s of computation %s not run: %s', name, self._id,
                        getattr(answer, 'reason', answer))
            return None
        return answer

    def run_at(self, where, gen, *args, **kwargs):
        """A CPU-bound job on node `where` (an IP address) or server `where` (a
        Location): the remote Coro, None if it could not be placed, or
        (exc_type, name, traceback) if the server could not create it."""
        return self._run('cpu', where, gen, args, kwargs, False)

    def run(self, gen, *args, **kwargs):
        """A CPU-bound job on the least-loaded server, once one is free."""
        return self._run('cpu', None, gen, args, kwargs, False)

    def run_async_at(self, where, gen, *args, **kwargs):
        """A job that does not reserve its server, on node or server `where`."""
        return self._run('async', where, gen, args, kwargs, False)

    def run_async(self, gen, *args, **kwargs):
        """A job that does not reserve its server, on any server."""
        return self._run('async', None, gen, args, kwargs, False)

    def run_result_at(self, where, gen, *args, **kwargs):
        """run_at and wait: the job's value, the exception it raised, or None
        (with the failure logged) if it could not run."""
        return self._result(self._run('cpu', where, gen, args, kwargs, True))

    def run_result(self, gen, *args, **kwargs):
        """run and wait for the value (see run_result_at)."""
        return self._result(self._run('cpu', None, gen, args, kwargs, True))

    def _result(self, rcoro):
        if not isinstance(rcoro, Coro):
            return rcoro
        rt = asyncoro.AsynCoro.instance()
        return rt._run_here(self._client.result, rcoro)

    def run_results(self, gen, iterable):
        """run_result for each item (a tuple: the positional arguments; another
        iterable: tuple(item); anything else: the one argument), concurrently;
        the values in the items' order."""
        calls = []
        for item in iterable:
            if isinstance(item, tuple):
                args = item
            elif isinstance(item, (list, str, bytes, set, frozenset, dict, range)) or \
                    hasattr(item, '__iter__'):
                args = tuple(item)
            else:
                args = (item,)
            calls.append(args)
        rt = asyncoro.AsynCoro.instance()

        def all_results():
            jobs = [gevent.spawn(self.run_result, gen, *args) for args in calls]
            gevent.joinall(jobs)
            return [job.value if job.successful() else job.exception for job in jobs]
        return rt._run_here(all_results)

    # -------------------------------------------- nodes and servers

    def enable_node(self, ip_addr, *setup_args):
        """With disable_nodes: let the scheduler set up node `ip_addr` (or a
        Location's addr), running node_setup(*setup_args) there."""
        addr = ip_addr.addr if isinstance(ip_addr, Location) else ip_addr
        self._tell('enable_node', addr, setup_args)

    def enable_server(self, location, *setup_args):
        """With disable_servers: set up server `location` with
        server_setup(*setup_args)."""
        self._tell('enable_server', location, setup_args)

    def _tell(self, op, *args):
        if self.scheduler is None:
            raise DiscoroError('computation %s is not scheduled' % self._id)
        rt = asyncoro.AsynCoro.instance()
        rt._run_here(self._client.tell, self.scheduler, op, self._id, *args)

    def nodes(self):
        """The IP addresses of the nodes set up for this computation."""
        answer = self._ask('nodes', timeout=asyncoro._msg_timeout())
        return [] if isinstance(answer, _Failure) else answer

    def servers(self):
        """The Locations of the servers ready for jobs."""
        answer = self._ask('servers', timeout=asyncoro._msg_timeout())
        return [] if isinstance(answer, _Failure) else answer

    def close(self, await_async=False):
        """Wait for the CPU-bound jobs (and the async ones too with
        await_async; otherwise they are terminated), close the servers,
        release the nodes, delete the files. `yield computation.close()`."""
        if self.scheduler is None or self._closed:
            return 0
        self._closed = True
        answer = self._ask('close', bool(await_async))
        rt = asyncoro.AsynCoro.instance()
        rt._drop_atexit(self._close_at_exit)
        rt._run_here(self._client.stop, 'computation %s is closed' % self._id)
        if isinstance(answer, _Failure):
            log.warning('closing computation %s: %s', self._id, answer.reason)
            return -1
        return 0


_last_scheduler = [None]      # where this client's last computation found its scheduler


def _upload_dir(comp_id):
    """Where a scheduler program keeps a computation's files (under its dest_path)."""
    return 'computation-%x' % comp_id


class _Package:
    """The computation as the scheduler holds it (pickles for a remote one)."""

    def __init__(self, comp_id, code, files, pulse_interval, allocations, status_coro,
                 node_setup, server_setup, disable_nodes, disable_servers, peers_communicate,
                 client, client_location, public_id):
        self.id = comp_id
        self.code = code
        self.files = files
        self.pulse_interval = pulse_interval
        self.allocations = allocations
        self.status_coro = status_coro
        self.node_setup = node_setup
        self.server_setup = server_setup
        self.disable_nodes = disable_nodes
        self.disable_servers = disable_servers
        self.peers_communicate = peers_communicate
        self.client = client
        self.client_location = client_location
        self.public_id = public_id          # id(computation), for ComputationClosed
        self.last_contact = time.monotonic()    # the client last answered (or asked)
        self.last_active = time.monotonic()     # a job ran or ended, or the client asked
        self.closing = False
        self.ended = None           # the scheduler's gevent Event, set when it is closed


class _ClientService(_Service):
    """The client side of one computation: answers come here, and job
    results for run_result*."""

    def __init__(self, scheduler):
        super().__init__()
        self._results = {}          # remote Coro -> AsyncResult of its value
        self._scheduler = scheduler
        self._gone = None           # why every answer fails: the scheduler is gone
        self.closed = False         # the computation is closed: the scheduler may go
        if scheduler.location != asyncoro.AsynCoro.instance().location:
            asyncoro.AsynCoro.instance().peer_status(self.coro)

    def on_peer(self, status):
        """A scheduler program that goes away fails whatever waits for it."""
        if status.status == PeerStatus.Offline and status.location == self._scheduler.location \
                and not self.closed:
            self._gone = 'the scheduler at %s is gone' % status.location
            log.warning('%s: its computation ends here', self._gone)
            for slot in self._results.values():
                if not slot.ready():
                    slot.set(DiscoroError(self._gone))

    def call(self, target, op, *args, timeout=None):
        if self._gone:
            return _Failure(self._gone)
        return super().call(target, op, *args, timeout=timeout)

    def stop(self, reason='the service stopped'):
        """The computation is closed: the scheduler may go, and results still
        awaited will not come."""
        self.closed = True
        self._gone = reason
        for slot in self._results.values():
            if not slot.ready():
                slot.set(DiscoroError(reason))
        super().stop(reason)

    def _slot(self, rcoro):
        slot = self._results.get(rcoro)
        if slot is None:
            slot = self._results[rcoro] = gevent.event.AsyncResult()
        return slot

    def on_result(self, rcoro, value):
        slot = self._slot(rcoro)
        if not slot.ready():
            slot.set(value)

    def on_ping(self):
        return 0

    def result(self, rcoro):
        slot = self._slot(rcoro)
        if self._gone and not slot.ready():
            slot.set(DiscoroError(self._gone))
        value = slot.get()
        self._results.pop(rcoro, None)
        return value


# ---------------------------------------------------------------- the scheduler

class _Node:
    __slots__ = ('info', 'coro', 'location', 'servers', 'cpus', 'status', 'enabled',
                 'last_pulse', 'draining')

    def __init__(self, info, coro):
        self.info = info
        self.coro = coro                    # the node's service
        self.location = coro.location
        self.servers = {}                   # Location -> _Server
        self.cpus = 0                       # servers used for the current computation
        self.status = None
        self.enabled = None                 # AsyncResult while waiting for enable_node
        self.last_pulse = time.monotonic()
        self.draining = False               # finishing its jobs: give it no more


class _Server:
    __slots__ = ('location', 'coro', 'node', 'jobs', 'busy', 'ready', 'enabled')

    def __init__(self, location, coro, node):
        self.location = location
        self.coro = coro
        self.node = node
        self.jobs = {}                      # remote Coro -> _Job
        self.busy = False                   # running a CPU-bound job
        self.ready = False
        self.enabled = None


class _Job:
    __slots__ = ('kind', 'server', 'want_result', 'name', 'info')

    def __init__(self, kind, server, want_result, name, info):
        self.kind = kind
        self.server = server
        self.want_result = want_result
        self.name = name
        self.info = info                    # DiscoroCoroInfo


class Scheduler(metaclass=Singleton):
    """The discoro scheduler inside this (client) process: `Scheduler()`, once,
    before `computation.schedule()`. It takes AsynCoro's options (ignored if a
    runtime exists already) plus pulse_interval, ping_interval, zombie_period,
    discoronode_port (default $ASYNCORO_DISCORONODE_PORT, else 51351), clean
    and nodes (API.md §5.2)."""

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
                           asyncoro._env_port('ASYNCORO_DISCORONODE_PORT', DEFAULT_NODE_PORT))
        kwargs.pop('pulse_interval', None)     # the timer period before a computation: unused
        self._ping_interval = kwargs.pop('ping_interval', 0) or 0
        self._zombie_period = kwargs.pop('zombie_period', 100 * MaxPulseInterval) or 0
        clean = kwargs.pop('clean', False)
        nodes = kwargs.pop('nodes', None) or []
        if isinstance(nodes, str):
            nodes = [nodes]
        kwargs['name'] = 'discoro_scheduler'
        rt = asyncoro.AsynCoro.instance(**kwargs)
        if not isinstance(rt, asyncoro.AsynCoro):
            raise DiscoroError('the runtime of this process was started without networking; '
                               'call Scheduler() (or asyncoro.disasyncoro.AsynCoro) before '
                               'creating coroutines')
        rt.dest_path = os.path.join('discoro', 'discoroscheduler')
        if clean:
            for entry in os.listdir(rt.dest_path):
                path = os.path.join(rt.dest_path, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        self._rt = rt
        self._service = rt._run_here(_SchedulerService, self)
        rt.peer_status(self._service.coro)
        rt.discover_peers(port=self._node_port)
        for node in nodes:
            rt.peer(node, udp_port=self._node_port, broadcast=True)
        if self._ping_interval:
            rt._run_here(gevent.spawn, self._service.rebroadcast, self._ping_interval)

    def status(self):
        return self._rt._run_here(self._service.status)

    def print_status(self):
        print(self.status())

    def close(self):
        """Close the current computation."""
        service = self._service
        if service.current is None:
            return 0
        return self._rt._run_here(service.close, service.current, False, 'closed by the scheduler')


class _SchedulerService(_Service):

    def __init__(self, scheduler):
        super().__init__('discoro_scheduler')
        self._scheduler = scheduler
        self._rt = scheduler._rt
        self.nodes = {}                     # addr -> _Node (every node known)
        self.servers = {}                   # Location -> _Server (current computation)
        self.jobs = {}                      # remote Coro -> _Job
        self.early_ends = {}                # MonitorExceptions of jobs not yet recorded
        self.queue = collections.deque()    # (package, AsyncResult) waiting their turn
        self.current = None                 # the package running now
        self.placements = collections.deque()   # CPU-bound requests waiting for a server
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

    def on_watch(self, watcher):
        """Send `watcher` every status message from now on; the state so far
        is the answer."""
        self.watchers.add(watcher)
        current = self.current
        return {'computation': current.id if current else None,
                'client': current.client_location if current else None,
                'queue': [(package.id, package.client_location) for package, _ in self.queue],
                'nodes': [node.info for node in self.nodes.values() if node.status],
                'servers': [loc for loc, server in self.servers.items() if server.ready],
                'jobs': [(job.info, job.name) for job in self.jobs.values()]}

    def on_unwatch(self, watcher):
        self.watchers.discard(watcher)
        return 0

    # ---------------- peers and nodes

    def on_peer(self, status):
        location = status.location
        if status.status == PeerStatus.Online:
            if location not in self.probing and not any(
                    node.location == location for node in self.nodes.values()):
                self.probing.add(location)
                gevent.spawn(self._probe, location)
        else:
            self.watchers = {w for w in self.watchers if w.location != location}
            server = self.servers.get(location)
            if server is not None:
                self._server_gone(server, Scheduler.ServerDisconnected)
            for node in list(self.nodes.values()):
                if node.location == location:
                    self._node_gone(node)

    def _probe(self, location):
        try:
            coro = SysCoro.locate('discoro_node', location, asyncoro._msg_timeout())
            if coro is None:
                return
            info = self.call(coro, 'info', timeout=asyncoro._msg_timeout())
            if isinstance(info, _Failure):
                log.warning('node at %s did not describe itself: %s', location, info.reason)
                return
            node = _Node(info, coro)
            self.nodes[info.addr] = node
            log.debug('node %s (%s) with %d servers discovered', info.name, info.addr, info.cpus)
            if self.current is not None:
                self._use_node(node)
        finally:
            self.probing.discard(location)

    def _use_node(self, node):
        package = self.current
        cpus = _servers_for(package.allocations, node.info)
        if cpus <= 0:
            log.debug('node %s not used for computation %s', node.info.addr, package.id)
            return
        answer = self.call(node.coro, 'reserve', package.id, package.client_location,
                           package.pulse_interval, cpus, self.coro,
                           timeout=asyncoro._msg_timeout())
        if answer != 0:
            log.warning('node %s refused computation %s: %s', node.info.addr, package.id, answer)
            return
        node.cpus = cpus
        node.status = Scheduler.NodeDiscovered
        for path, rel in package.files:
            if self._rt.send_file(node.location, path, dir=rel or None, overwrite=True,
                                  timeout=asyncoro._msg_timeout()) < 0:
                log.warning('could not send %s to node %s; node not used', path, node.info.addr)
                self.tell(node.coro, 'close', package.id)
                node.status = None
                return
        self._status(Scheduler.NodeDiscovered, node.info)
        args = ()
        if package.disable_nodes:
            node.enabled = gevent.event.AsyncResult()
            args = node.enabled.get()
            node.enabled = None
            if package is not self.current:
                return
        answer = self.call(node.coro, 'setup', package.id, package.code, package.node_setup,
                           args, self.coro, package.client, package.client_location,
                           package.server_setup)
        if answer != 0:
            log.warning('node %s not used for computation %s: %s', node.info.addr, package.id,
                        answer)
            self.tell(node.coro, 'close', package.id)
            node.status = None
            return
        node.status = Scheduler.NodeInitialized
        node.last_pulse = time.monotonic()
        self._status(Scheduler.NodeInitialized, node.info)
        for server in node.servers.values():     # servers that were ready before their node
            if server.ready:
                self._status(Scheduler.ServerInitialized, server.location)
        self._place()

    def _node_gone(self, node):
        self.nodes.pop(node.info.addr, None)
        for server in list(node.servers.values()):
            self._server_gone(server, Scheduler.ServerDisconnected)
        if node.status:
            self._status(Scheduler.NodeClosed, node.info)
        node.status = None

    # ---------------- computations

    def on_schedule(self, package):
        if package.client_location != self._rt.location:     # its files came ahead of it
            folder = os.path.join(self._rt.dest_path, _upload_dir(package.id))
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
        log.log(logging.INFO if package.client_location != self._rt.location else logging.DEBUG,
                'computation %x of %s: %s', package.id, package.client_location, what)

    def _next(self):
        if self.current is None and self.queue and not self.starting:
            self.starting = True
            gevent.spawn(self._advance)

    def _advance(self):
        """Start the first queued computation whose client still answers."""
        try:
            while self.queue and self.current is None:
                package, turn = self.queue.popleft()
                if package.client_location != self._rt.location and isinstance(
                        self.call(package.client, 'ping', timeout=asyncoro._msg_timeout()),
                        _Failure):
                    log.warning('client %s of computation %s is gone; skipped',
                                package.client_location, package.id)
                    self._remove_files(package)
                    turn.set(_Failure('client gone'))
                    continue
                package.last_contact = package.last_active = time.monotonic()
                self.current = package
                self._log(package, 'starts')
                self._notify(DiscoroStatus(Scheduler.ComputationScheduled,
                                           (package.id, package.client_location)), client=False)
                turn.set(0)
                for node in list(self.nodes.values()):
                    gevent.spawn(self._use_node, node)
                gevent.spawn(self._watch_nodes, package)
                if self._scheduler._zombie_period:
                    gevent.spawn(self._watch_client, package, self._scheduler._zombie_period)
        finally:
            self.starting = False

    def rebroadcast(self, interval):
        """Ask for nodes again every `interval` seconds (ping_interval)."""
        while True:
            gevent.sleep(interval)
            self._rt.discover_peers(port=self._scheduler._node_port)

    def _watch_client(self, package, zombie_period):
        """Close the computation when its client has not answered, or it has
        had no job and no request, for zombie_period seconds."""
        remote = package.client_location != self._rt.location
        check = max(1.0, min(package.pulse_interval, zombie_period / 5.0))
        while self.current is package:
            if package.ended.wait(check):
                return
            now = time.monotonic()
            if remote and not isinstance(self.call(package.client, 'ping', timeout=check),
                                         _Failure):
                package.last_contact = time.monotonic()
            if self.jobs:
                package.last_active = now
            silent = now - package.last_contact
            idle = now - package.last_active
            if silent > zombie_period or idle > zombie_period:
                log.warning('computation %s of %s closed: %s for %.0f s (zombie_period %s)',
                            package.id, package.client_location,
                            'client unreachable' if silent > zombie_period else 'idle',
                            max(silent, idle), zombie_period)
                self.close(package, False, 'zombie', wait=False)
                return

    def _watch_nodes(self, package):
        """Drop the nodes of this computation that stay silent (no pulse) for
        5 x pulse_interval: a node whose process hangs or whose host is cut
        off closes no connection, so only the missing pulses tell."""
        limit = 5 * package.pulse_interval
        while self.current is package:
            if package.ended.wait(package.pulse_interval):
                return
            now = time.monotonic()
            for node in list(self.nodes.values()):
                if node.status == Scheduler.NodeInitialized and now - node.last_pulse > limit:
                    log.warning('node %s sent no pulse for %.0f s; dropped', node.info.addr,
                                now - node.last_pulse)
                    self._node_gone(node)

    def _current(self, comp_id):
        current = self.current
        if current is None or current.id != comp_id:
            raise DiscoroError('computation %s is not the one scheduled' % comp_id)
        current.last_contact = current.last_active = time.monotonic()
        return current

    # ---------------- servers

    def on_server_up(self, comp_id, location, node_addr, coro):
        package = self._current(comp_id)
        node = self.nodes.get(node_addr)
        if node is None:
            return _Failure('node %s is unknown' % node_addr)
        server = _Server(location, coro, node)
        node.servers[location] = server
        self.servers[location] = server
        self._status(Scheduler.ServerDiscovered, location)
        args = ()
        if package.disable_servers:
            server.enabled = gevent.event.AsyncResult()
            args = server.enabled.get()
            server.enabled = None
        if package.server_setup is not None:
            answer = self.call(coro, 'setup', args)
            if answer != 0:
                log.warning('server %s not used: server_setup gave %r', location, answer)
                self.tell(coro, 'close')
                return 0
        server.ready = True
        if node.status == Scheduler.NodeInitialized:
            self._status(Scheduler.ServerInitialized, location)
        if package.peers_communicate:
            others = [s.location for s in self.servers.values() if s is not server]
            self.tell(coro, 'peers', others)
        self._place()
        return 0

    def _server_gone(self, server, status):
        if self.servers.pop(server.location, None) is None:
            return
        self.fail_calls(server.location, 'server %s closed' % server.location)
        if not any(s.ready for s in self.servers.values()):
            self.server_ready.clear()
        server.node.servers.pop(server.location, None)
        server.ready = False
        for rcoro in list(server.jobs):
            self._job_end(MonitorException(rcoro, (Scheduler.ServerClosed, None)))
        self._status(status, server.location)

    def on_server_closed(self, comp_id, location):
        server = self.servers.get(location)
        if server is not None:
            self._server_gone(server, Scheduler.ServerClosed)
        return 0

    def on_enable_node(self, comp_id, addr, args):
        node = self.nodes.get(addr)
        if node is not None and node.enabled is not None:
            node.enabled.set(args)
        return 0

    def on_enable_server(self, comp_id, location, args):
        server = self.servers.get(location)
        if server is not None and server.enabled is not None:
            server.enabled.set(args)
        return 0

    def on_nodes(self, comp_id):
        self._current(comp_id)
        return [addr for addr, node in self.nodes.items()
                if node.status == Scheduler.NodeInitialized and not node.draining]

    def on_servers(self, comp_id):
        self._current(comp_id)
        return [loc for loc, server in self.servers.items()
                if server.ready and not server.node.draining]

    # ---------------- a node ends its part on its own (its console, service window, zombie)

    def on_node_draining(self, comp_id, addr):
        """The node finishes the jobs it runs and takes no more."""
        node = self.nodes.get(addr)
        if node is not None and self.current is not None and self.current.id == comp_id:
            node.draining = True
            self._place()       # requests waiting for that node only fail now
        return 0

    def on_node_closed(self, comp_id, addr):
        """The node closed the computation (its servers are gone)."""
        node = self.nodes.get(addr)
        if node is None or self.current is None or self.current.id != comp_id:
            return 0
        for server in list(node.servers.values()):
            self._server_gone(server, Scheduler.ServerClosed)
        if node.status:
            self._status(Scheduler.NodeClosed, node.info)
        node.status = None
        node.draining = False
        self._place()
        return 0

    def on_node_available(self, addr):
        """The node takes computations again (e.g. its service window opened)."""
        node = self.nodes.get(addr)
        if node is not None and self.current is not None and not node.status:
            gevent.spawn(self._use_node, node)
        return 0

    def on_pulse(self, comp_id, addr, avail_info):
        node = self.nodes.get(addr)
        if self.current is None or self.current.id != comp_id or node is None:
            return _Failure('not scheduled here')
        node.last_pulse = time.monotonic()
        if avail_info is not None:
            node.info = node.info._replace(avail_info=avail_info)
            self._notify(avail_info)
        return sum(len(server.jobs) for server in node.servers.values())

    # ---------------- jobs

    def _free(self, server):
        return server.ready and not server.busy

    def _pick(self, kind, where):
        """A server for a job, or None: API.md §11.13."""
        if isinstance(where, Location):
            server = self.servers.get(where)
            if server is None or not server.ready or server.node.draining:
                return None
            return server if kind == 'async' or not server.busy else None
        nodes = [node for node in self.nodes.values() if node.status == Scheduler.NodeInitialized
                 and not node.draining and (where is None or node.info.addr == where)]
        best = None
        for node in nodes:
            candidates = [s for s in node.servers.values()
                          if s.ready and (kind == 'async' or not s.busy)]
            if not candidates:
                continue
            load = sum(1 for s in node.servers.values() if s.busy) / max(len(node.servers), 1)
            server = min(candidates, key=lambda s: len(s.jobs))
            if best is None or load < best[0]:
                best = (load, server)
        return best[1] if best else None

    def _known_where(self, where):
        if isinstance(where, Location):
            server = self.servers.get(where)
            return server is not None and not server.node.draining
        return where is None or any(node.info.addr == where for node in self.nodes.values()
                                    if node.status == Scheduler.NodeInitialized
                                    and not node.draining)

    def _place(self):
        """Give waiting CPU-bound requests the servers that are free, in order."""
        if any(server.ready for server in self.servers.values()):
            self.server_ready.set()
        while self.placements:
            where, waiter = self.placements[0]
            server = self._pick('cpu', where)
            if server is None:
                if not self._known_where(where):
                    self.placements.popleft()
                    waiter.set(None)
                    continue
                return
            self.placements.popleft()
            server.busy = True
            waiter.set(server)

    def on_run(self, comp_id, kind, where, name, source, args, kwargs, want_result):
        package = self._current(comp_id)
        if kind == 'cpu':
            if isinstance(where, str) and not self._known_where(where):
                return _Failure('node %s is not running this computation' % where)
            if isinstance(where, Location) and where not in self.servers:
                return _Failure('server %s is not running this computation' % where)
            if isinstance(where, str) and self._pick('cpu', where) is None:
                return _Failure('no free server on node %s' % where)    # as the original: at once
            waiter = gevent.event.AsyncResult()
            self.placements.append((where, waiter))
            self._place()
            server = waiter.get()
            if server is None:
                return _Failure('no server for the job at %s' % where)
        else:
            server = self._pick('async', where)
            if server is None and where is None:     # the computation's servers are starting
                self.server_ready.wait(asyncoro._msg_timeout())
                server = self._pick('async', where)
            if server is None:
                return _Failure('no server available%s' % (' at %s' % where if where else ''))
        if package is not self.current:
            server.busy = False
            return _Failure('computation closed')
        answer = self.call(server.coro, 'job', name, source, args, kwargs, self.coro)
        if not isinstance(answer, Coro):
            if kind == 'cpu':
                server.busy = False
                self._place()
            if server.location not in self.servers:       # it died while starting the job
                return ServerLost('server %s closed while job %s started'
                                  % (server.location, name))
            return answer if isinstance(answer, tuple) else _Failure('server %s: %s'
                                                                   % (server.location, answer))
        job = _Job(kind, server, want_result, name,
                   DiscoroCoroInfo(answer, args, kwargs, time.time()))
        server.jobs[answer] = job
        self.jobs[answer] = job
        # from here, so that it reaches status_coro before the job's end (same sender)
        self._notify(DiscoroStatus(Scheduler.CoroCreated, job.info))
        early = self.early_ends.pop(answer, None)
        if early is not None:
            self._job_end(early)
        return answer

    def on_monitor(self, msg):
        rcoro = msg.args[0]
        if rcoro not in self.jobs:
            self.early_ends[rcoro] = msg      # its run() answer is still on its way
            return
        self._job_end(msg)

    def _job_end(self, msg):
        rcoro, (kind, value) = msg.args[0], msg.args[1]
        job = self.jobs.pop(rcoro, None)
        if job is None:
            return
        job.server.jobs.pop(rcoro, None)
        self.job_ended.set()
        if job.kind == 'cpu':
            job.server.busy = False
        current = self.current
        if current is not None:
            self._notify(msg)
            if job.want_result:
                if kind is StopIteration:
                    result = value
                elif kind == Scheduler.ServerClosed:
                    result = ServerLost('server %s closed while job %s ran'
                                        % (job.server.location, rcoro))
                elif isinstance(value, BaseException):
                    result = value
                else:       # the exception could not travel: its type did
                    result = kind(value) if isinstance(kind, type) else value
                self.tell(current.client, 'result', rcoro, result)
        if job.kind == 'cpu':
            self._place()

    # ---------------- closing

    def on_close(self, comp_id, await_async):
        return self.close(self._current(comp_id), await_async, 'closed by its client')

    def shut_down(self):
        """The scheduler program ends: queued computations are refused, the
        current one is closed with its jobs terminated."""
        while self.queue:
            package, turn = self.queue.popleft()
            turn.set(_Failure('the scheduler quits'))
        if self.current is not None:
            self.close(self.current, False, 'the scheduler quits', wait=False)

    def _remove_files(self, package):
        if package.client_location != self._rt.location:
            shutil.rmtree(os.path.join(self._rt.dest_path, _upload_dir(package.id)),
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
        wait_for(('cpu', 'async'), asyncoro._msg_timeout())
        for node in list(self.nodes.values()):
            if node.status:
                answer = self.call(node.coro, 'close', package.id,
                                   timeout=asyncoro._msg_timeout() * 2)
                if answer != 0:
                    log.warning('node %s did not close computation %s: %s', node.info.addr,
                                package.id, answer)
                for server in list(node.servers.values()):
                    self._server_gone(server, Scheduler.ServerClosed)
                node.status = None
                node.servers.clear()
        for rcoro in list(self.jobs):
            self._job_end(MonitorException(rcoro, (Scheduler.ServerClosed, None)))
        self._status(Scheduler.ComputationClosed, package.public_id)
        self._remove_files(package)
        self.current = None
        package.ended.set()
        for _where, waiter in self.placements:
            waiter.set(None)
        self.placements.clear()
        self.early_ends.clear()
        for node in self.nodes.values():
            node.draining = False
        self._next()
        return 0


# ---------------------------------------------------------------- the discoro.py program

def _add_runtime_options(add):
    """The AsynCoro options the node and scheduler programs share."""
    add('--dest_path', default=None, help='where files sent here are saved')
    add('--max_file_size', default=None, help='bytes, or with a k/m/g/t suffix')
    add('-s', '--secret', default='', help='shared with every peer')
    add('--certfile', default=None, help='TLS certificate (with --keyfile)')
    add('--keyfile', default=None)


def _program_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='discoro.py', description='Run the discoro scheduler for several clients: their '
        'computations run one at a time, in the order they were scheduled.')
    add = parser.add_argument
    add('-i', '--ip_addr', default=None, help='address to bind to (default: $ASYNCORO_NODE)')
    add('--ext_ip_addr', default=None)
    add('-u', '--udp_port', type=int, default=None,
        help='discovery port (default $ASYNCORO_UDP_PORT, else 51350)')
    add('-t', '--tcp_port', type=int, default=0)
    add('-n', '--name', default='discoro_scheduler')
    add('--node', action='append', default=[], metavar='HOST',
        help='a node in another network (repeatable); nodes here are found by themselves')
    _add_runtime_options(add)
    add('--pulse_interval', type=float, default=MaxPulseInterval)
    add('--ping_interval', type=float, default=0,
        help='ask for nodes again every this many seconds (0: only at start)')
    add('--zombie_period', type=float, default=10 * MaxPulseInterval,
        help='close a computation whose client is unreachable, or that runs no job, for '
        'this many seconds (0: never)')
    add('--discoronode_port', type=int, default=None,
        help="the nodes' discovery port (default $ASYNCORO_DISCORONODE_PORT, else 51351)")
    add('--clean', action='store_true', help="delete the scheduler's files at start")
    add('--daemon', action='store_true', help='do not read commands from stdin')
    add('-d', '--debug', action='store_true')
    return parser


def main(argv=None):
    """The discoro.py program. Returns its exit status."""
    import errno
    import signal
    import threading
    from asyncoro.discoronode import _size, _in_background
    parser = _program_parser()
    options = parser.parse_args(argv)
    if options.zombie_period and options.zombie_period < 1:
        parser.error('--zombie_period must be 0 (never) or at least 1')
    if options.ping_interval < 0:
        parser.error('--ping_interval must not be negative')
    try:
        max_file_size = _size(options.max_file_size)
    except ValueError:
        parser.error('--max_file_size %r is not a size' % options.max_file_size)
    nodes = []
    for host in options.node:
        try:
            nodes.append(asyncoro._resolve(host))
        except OSError as exc:
            parser.error('--node %s: no such host (%s)' % (host, exc))
    asyncoro.logger.setLevel(logging.DEBUG if options.debug else logging.INFO)
    node = options.ip_addr or asyncoro._default_node()
    try:
        rt = asyncoro.AsynCoro(node=node, ext_ip_addr=options.ext_ip_addr,
                               udp_port=options.udp_port, tcp_port=options.tcp_port,
                               name=options.name, dest_path=options.dest_path,
                               max_file_size=max_file_size, secret=options.secret,
                               certfile=options.certfile, keyfile=options.keyfile)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print('discoro: TCP port %s on %s is already in use: is another scheduler '
                  'running? Choose another with -t' % (options.tcp_port, node), file=sys.stderr)
        else:
            print('discoro: cannot start on %s: %s' % (node, exc), file=sys.stderr)
        return 1
    scheduler = Scheduler(zombie_period=options.zombie_period,
                          ping_interval=options.ping_interval, clean=options.clean,
                          nodes=nodes, **({'discoronode_port': options.discoronode_port}
                                          if options.discoronode_port else {}))
    print('discoro scheduler ready %s pid=%d' % (rt.location, os.getpid()), flush=True)
    if nodes:
        threading.Thread(target=_check_nodes, args=(scheduler, nodes), daemon=True).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda *_: done.set())
    if not options.daemon and not _in_background():
        threading.Thread(target=_scheduler_commands, args=(scheduler, done),
                         daemon=True).start()
    while not done.wait(1):
        pass
    rt._run_here(scheduler._service.shut_down)
    rt.terminate()
    return 0


def _check_nodes(scheduler, nodes):
    """Say which --node hosts did not answer (wrong address, port or secret)."""
    time.sleep(asyncoro._msg_timeout())
    known = set(scheduler._rt._run_here(lambda: list(scheduler._service.nodes)))
    for addr in nodes:
        if addr not in known:
            log.warning('no discoro node answered at %s (is discoronode.py running there, '
                        'with this secret and UDP port %s?)', addr, scheduler._node_port)


def _scheduler_commands(scheduler, done):
    print('commands: status (or an empty line), quit or exit', flush=True)
    while not done.is_set():
        line = sys.stdin.readline()
        command = line.strip().lower() if line else 'quit'
        if command in ('', 'status'):
            status = scheduler.status()
            print('Client: %s\nPending: %d\nnodes: %d\nservers: %d'
                  % (status['Client'] or '-', status['Pending'], len(status['Nodes']),
                     len(status['Servers'])), flush=True)
        elif command in ('quit', 'exit'):
            done.set()
        else:
            print('commands: status (or an empty line), quit or exit', flush=True)


if __name__ == '__main__':
    # run the package's module, not this copy: messages must pickle as asyncoro.discoro's
    from asyncoro.discoro import main as _main
    sys.exit(_main())
