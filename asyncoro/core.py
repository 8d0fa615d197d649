"""asyncoro.core: coroutines on gevent greenlets, with asyncoro 4.5's API.

What it owns: `Coro` (a coroutine: a generator function driven by the yield
adapter, or a plain function that blocks), `AsynCoro` (the process's
runtime), `MonitorException`/`HotSwapException`, `Singleton`, `Logger` and
the shared `logger`, `MsgTimeout` (its one home), and the internals the
layers above build on (`_INTERNALS`). The package's face (asyncoro) gives
these with the channel, synchronisation, socket and serialization names.

How it works: three objects. A `Coro` is the user's face of a coroutine and
holds its state; the runtime's driver (`_Driver`) runs coroutines, moving
that state; `AsynCoro` is the runtime: its thread, its tables (coroutines,
names), its end.

- The runtime runs a gevent hub in a thread of its own, so a main program may
  block in `input()`, `time.sleep()` or `Coro.value()` while coroutines run.
  Calls from other threads are queued (`AsynCoro._call_threadsafe`) and run in
  the hub thread in the order they were made.
- Coroutines run on *worker* greenlets taken from the driver's pool. A
  generator coroutine that waits in `receive()`, `sleep()` or `finish()`
  parks: the generator stays suspended at its `yield`, the worker goes back
  to the pool, and nothing but the generator and its Coro is kept (a started
  greenlet costs ~6 KB on CPython 3.11, a parked generator a few hundred
  bytes). Any other blocking call (sockets, locks, pipes, network requests)
  simply blocks the worker, so operations need not know whether they were
  called from a generator.
- Ready coroutines wait in one FIFO (`_Driver._ready`) drained by a hub
  callback; that batch is the scheduler. An operation that waits calls
  `_Driver.wait`, and whatever ends the wait (a message, resume(), a timer,
  another's end, a throw) calls `_Driver.wake`, which makes it ready.
- The yield adapter (`_Driver._drive`) sends each operation's result back into
  the generator, runs a yielded generator object as a sub-coroutine, treats
  any other yielded value as a cooperative switch, and turns `return v`,
  `raise StopIteration(v)` and PEP 479's RuntimeError into the value.
"""

import atexit
import collections
import functools
import gc
import inspect
import itertools
import logging
import os
import pickle
import random
import sys
import time
import traceback
import types

import gevent
import gevent.event
import greenlet
from gevent.monkey import get_original as _get_original

from asyncoro.failure import AsyncoroError, spawn
from asyncoro.netio import plain_type

__version__ = '4.5.6'

__all__ = ['Coro', 'AsynCoro', 'HotSwapException', 'MonitorException', 'Singleton', 'logger',
           'Logger']

# The core's documented internals: the private names the package's other
# modules may use (checked by tests/test_structure.py). They are how the
# lower layers hook into the runtime; nothing outside the package uses them.
_INTERNALS = (
    '_runtime',             # the runtime, started on first use
    '_current_coro',        # the coroutine running now, or None
    '_get_ident', '_get_original', '_allocate_lock', '_start_new_thread',   # real threads
    '_msg_timeout',         # MsgTimeout as the program set it
    '_hand_messages',       # a library service's coroutine takes its messages at once
    '_ShowsMsgTimeout',     # the module class that shows the one MsgTimeout
    '_REMOTE_FACTORIES',    # how references of other processes unpickle (filled by remote)
    '_REFERENCES',          # remote coroutine references unpickled lately (filled by remote)
    '_RUNTIME_CLASS',       # the runtime class to start (the distributed one, once imported)
    '_NO_RUNTIME',          # why no runtime may start in this process (the zygote)
    '_rebuild_coro',        # a coroutine reference from its parts
    '_remote_factory',      # the factory for references of a kind
    '_location_copy',       # a runtime's Location, copied
    '_inspect_target',      # (is a generator function, takes coro=) of a callable
    '_stop_value',          # a generator's value from its StopIteration
)

# The runtime's and coroutine's hooks: the private attributes of their objects
# that the package's other modules may use (checked by tests/test_structure.py,
# with the standard library's few: a namedtuple's _replace, argparse's _actions).
_HOOKS = (
    # the runtime (AsynCoro): its thread and the calls into it
    '_tid',                 # the hub thread's id: is the caller in it?
    '_run_here',            # run a call in the hub thread and wait for its value
    '_call_threadsafe',     # queue a call for the hub thread from any thread
    '_run_after',           # run a call at the hub's next turn
    '_loop',                # the hub's event loop (the stall guard watches its turns)
    '_stopping',            # the runtime is ending
    '_drop_atexit',         # forget an exit hook
    '_instance',            # the one runtime of the process (Singleton), or None
    # the runtime's tables
    '_register', '_unregister', '_locate',     # names of coroutines and channels
    '_add_channel', '_channels',                # the process's channels
    # a coroutine (Coro)
    '_id',                  # its id in its runtime (with its name, its address there)
    '_receive_blocking',    # receive for a coroutine that blocks (greenlet style)
)

MsgTimeout = 10         # its one home: asyncoro.disasyncoro and asyncoro.discoro show this one

log = logging.getLogger('asyncoro')

# Real OS threads, locks and thread ids even in a program that monkey-patched
# (gevent.monkey.patch_all() turns threads into greenlets of the main hub, which
# would put the runtime's "own thread" in the main thread and deadlock value()).
_allocate_lock = _get_original('_thread', 'allocate_lock')
_get_ident = _get_original('_thread', 'get_ident')
_start_new_thread = _get_original('_thread', 'start_new_thread')
_getcurrent = greenlet.getcurrent
_GeneratorType = types.GeneratorType
# At most this many consecutive results a generator gets straight back without
# a cooperative switch, so a coroutine with a full mailbox cannot starve others.
_FAST_STREAK = 256
_STREAK = range(_FAST_STREAK)
# Idle worker greenlets kept for reuse; beyond that they end.
_MAX_IDLE_WORKERS = 256


class WrongContextError(AsyncoroError, RuntimeError):
    """An operation was called from where it cannot work.

    For example: `receive()` or `sleep()` of a coroutine called by anything
    but that coroutine itself; a coroutine waiting for its own end; the
    runtime's `join()`, `finish()` or `terminate()` called from the
    runtime's thread (from a coroutine); a lock acquired outside any
    coroutine. The message names the operation. It is an AsyncoroError and
    a RuntimeError.
    """


class MonitorException(Exception):
    """The message a monitor receives when a coroutine it watches ends.

    ``args[0]`` is the coroutine that ended; ``args[1]`` is
    ``(StopIteration, value)`` for a normal end (terminate() included) or
    ``(exc_type, exc_value)`` for a death by exception. Sent to a monitor in
    another process, an `exc_value` that cannot be pickled comes as its type.

    A monitor (see :meth:`Coro.monitor`) gets it with
    ``msg = yield coro.receive()``.
    """


class HotSwapException(Exception):
    """Thrown into a coroutine by :meth:`Coro.hot_swap`.

    ``args[0]`` is the new generator. A generator that lets the exception
    propagate is replaced by the new one; one that catches it goes on as it
    was.
    """


class Singleton(type):
    """Metaclass of a class with one instance per process.

    The first ``cls(...)`` builds the instance; later calls return it and
    ignore their arguments. A subclass shares its base's instance (the
    distributed AsynCoro is still *the* runtime). Safe from any thread.
    """

    def __init__(cls, name, bases, namespace):
        super().__init__(name, bases, namespace)
        if not any(isinstance(base, Singleton) for base in bases):
            cls._instance = None        # the root of a hierarchy holds the one slot

    def _root(cls):
        for klass in reversed(cls.__mro__):
            if isinstance(klass, Singleton):
                return klass
        return cls

    def __call__(cls, *args, **kwargs):
        inst = cls._instance
        if inst is None:
            with _SINGLETON_LOCK:
                inst = cls._instance
                if inst is None:
                    inst = super().__call__(*args, **kwargs)
                    Singleton._root(cls)._instance = inst
        return inst


_SINGLETON_LOCK = _get_original('threading', 'RLock')()


# ---------------------------------------------------------------- logging

class _Format(logging.Formatter):
    def __init__(self, log_ms):
        super().__init__('%(asctime)s %(name)s - %(message)s')
        self.log_ms = log_ms

    def formatTime(self, record, datefmt=None):
        text = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.created))
        if self.log_ms:
            text += '.%03d' % record.msecs
        return text


class _StreamHandler(logging.StreamHandler):
    """Writes to the given stream, or to whatever `sys.stdout` is at the time."""

    def __init__(self, stream):
        super().__init__(stream)
        self._fixed = stream

    @property
    def stream(self):
        return self._fixed if self._fixed is not None else sys.stdout

    @stream.setter
    def stream(self, value):
        self._fixed = value

    def flush(self):
        # sys.stdout is None at the very end of the interpreter's life (or in
        # a program started without one): nothing to flush then. It is read
        # once: another thread's exit may set it to None between two reads
        stream = self.stream
        if stream is not None and hasattr(stream, 'flush'):
            with self.lock:
                stream.flush()

    def emit(self, record):
        stream = self.stream        # read once, as in flush
        if stream is None:
            return
        try:
            stream.write(self.format(record) + self.terminator)
            if hasattr(stream, 'flush'):
                stream.flush()
        except RecursionError:      # as logging.StreamHandler does
            raise
        except Exception:           # logging's own report of a handler's failure
            self.handleError(record)


class Logger:
    """asyncoro's logger: ``YYYY-MM-DD HH:MM:SS <name> - <message>`` lines.

    It is a face of the `logging` logger of the same name, so `logging`
    configuration applies; messages take printf-style arguments. Making a
    Logger of a name again replaces the earlier one's output.

    :param name: the name of the `logging` logger (and of the lines).
    :param stream: where the lines go; None: whatever `sys.stdout` is at the
        time of each line.
    :param level: the level below which messages are dropped; None: INFO.
    :param log_ms: show milliseconds in the time.
    """

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = WARNING = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = FATAL = logging.CRITICAL

    def __init__(self, name, stream=None, level=None, log_ms=False):
        self.name = name
        self._logger = logging.getLogger(name)
        self._handler = _StreamHandler(stream)
        self._handler.setFormatter(_Format(log_ms))
        for old in [h for h in self._logger.handlers if isinstance(h, _StreamHandler)]:
            self._logger.removeHandler(old)
        self._logger.addHandler(self._handler)
        self._logger.propagate = False
        self._logger.setLevel(self.INFO if level is None else level)

    def setLevel(self, level):
        """Drop messages below `level` from now on.

        :param level: a level: ``Logger.DEBUG``, ``Logger.INFO``, ... (those
            of `logging`).
        """
        self._logger.setLevel(level)

    def getEffectiveLevel(self):
        """:returns: the level below which messages are dropped."""
        return self._logger.getEffectiveLevel()

    def show_ms(self, flag):
        """Show milliseconds in the time of later lines (True) or not.

        :param flag: whether to show them.
        """
        self._handler.formatter.log_ms = bool(flag)

    def log(self, level, msg, *args, **kwargs):
        """Log ``msg % args`` at `level`.

        :param level: the message's level (``Logger.INFO``, ...).
        :param msg: the message, with printf-style ``%`` fields for `args`.
        :param kwargs: as `logging.Logger.log` takes them (``exc_info=True``,
            say).
        """
        self._logger.log(level, msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        """Log ``msg % args`` at DEBUG; as :meth:`log`."""
        self._logger.debug(msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs):
        """Log ``msg % args`` at INFO; as :meth:`log`."""
        self._logger.info(msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        """Log ``msg % args`` at WARNING (also ``warn``); as :meth:`log`."""
        self._logger.warning(msg, *args, **kwargs)

    warn = warning

    def error(self, msg, *args, **kwargs):
        """Log ``msg % args`` at ERROR; as :meth:`log`."""
        self._logger.error(msg, *args, **kwargs)

    def critical(self, msg, *args, **kwargs):
        """Log ``msg % args`` at CRITICAL (also ``fatal``); as :meth:`log`."""
        self._logger.critical(msg, *args, **kwargs)

    fatal = critical

    def flush(self):
        """Write out what the output holds."""
        self._handler.flush()

    def shutdown(self):
        """Flush the output; the logger stays usable.

        Also called on leaving ``with logger:``.
        """
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.shutdown()
        return False


#: The package's Logger, ``Logger('asyncoro')``: the face of the `logging`
#: logger 'asyncoro', which the package's own loggers are under.
logger = Logger('asyncoro')


# ---------------------------------------------------------------- coroutines

# what a coroutine waits for (Coro._wait)
_RECV, _SLEEP, _FINISH = 'receive', 'sleep', 'finish'
# returned by an operation that parked a generator coroutine; the adapter sees
# it come out of the generator's `yield` and releases the worker
_PARK = object()
# resume value meaning "the oldest message in the mailbox"
_FROM_MAILBOX = object()
# states (Coro._state)
_NEW, _READY, _RUNNING, _WAITING, _DONE = range(5)

_TARGETS = {}   # code object -> (is_generator_function, passes_coro)
# coroutine ids: never reused in a process (id() is, at once), so a reference
# names one coroutine for the life of the process; they start at a random
# point, so that a process started again at the same address (a server of a
# node that rejoins) does not give its coroutines the ids of the last one's
_COROUTINE_IDS = itertools.count(random.SystemRandom().randrange(1 << 32) << 16)


def _inspect_target(target):
    """(is a generator function, takes `coro=` with a default) for a callable;
    cached per code object, since this runs for every Coro created."""
    func = getattr(target, '__func__', target)
    code = getattr(func, '__code__', None)
    if code is not None:
        info = _TARGETS.get(code)
        if info is not None:
            return info
    is_gen = inspect.isgeneratorfunction(target)
    try:
        param = inspect.signature(target).parameters.get('coro')
    except (TypeError, ValueError):     # builtins without a signature take no coro
        param = None
    passes = (param is not None and param.default is not inspect.Parameter.empty and
              param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY))
    info = (is_gen, passes)
    if code is not None:
        _TARGETS[code] = info
    return info


def _target_name(target):
    name = getattr(target, '__name__', None)
    if name is None and isinstance(target, functools.partial):
        name = getattr(target.func, '__name__', None)
    return name or type(target).__name__


def _exception_from(args):
    """An exception instance from throw()'s accepted argument forms."""
    if len(args) == 1 and isinstance(args[0], tuple):
        args = args[0]
    if not args:
        raise TypeError('throw() needs an exception, an exception type or a tuple')
    first = args[0]
    if isinstance(first, BaseException):
        return first
    if isinstance(first, type) and issubclass(first, BaseException):
        value = args[1] if len(args) > 1 else None
        if isinstance(value, first):
            return value
        if value is None:
            return first()
        return first(*value) if isinstance(value, tuple) else first(value)
    raise TypeError('throw() needs an exception, an exception type or a tuple; got %r' % (first,))


def _stop_value(exc, last):
    """A generator's result from its StopIteration: the single argument, the
    argument tuple, or the last value sent into it when there is none."""
    args = exc.args
    if not args:
        return last
    return args[0] if len(args) == 1 else args


class _Worker(greenlet.greenlet):
    """A pooled greenlet; `coro` is the coroutine it is running now."""
    __slots__ = ('coro',)


class Coro:
    """A coroutine: a generator function or a plain function, run with arguments.

    Made as ``Coro(target, *args, **kwargs)`` or
    ``Coro(target=f, args=(...), kwargs={...})``.

    :param target: a generator function (yield style) or a plain function
        (greenlet style: it blocks in operations and returns its value). It
        is passed ``coro=`` this Coro if it has a `coro` parameter with a
        default.
    :raises TypeError: for a target that is not callable, or arguments that
        a generator function does not accept (a plain function given wrong
        arguments ends the coroutine with TypeError instead).

    Does not block: the coroutine starts soon, not at once. It may be made
    from any thread; the first one made starts the runtime.
    """

    __slots__ = ('_rt', '_name', '_id', '_target', '_gen', '_stack', '_mailbox', '_inbox', '_state',
                 '_wait', '_wait_seq', '_timer', '_alarm', '_resume_val', '_pending_exc',
                 '_worker', '_value', '_exception', '_fast', '_daemon', '_monitors',
                 '_waiters', '_terminating', '_swappable', '_pending_swap', '_args',
                 '_handler', '__weakref__')

    _prefix = '~'
    _remote = False          # True for references to coroutines in other processes
    _start_daemon = False    # system coroutines (SysCoro) start as daemons
    _registry_kind = 'coro'  # the names register, unregister and locate use (SysCoro's own)

    def __init__(self, *args, **kwargs):
        if args:
            target, args = args[0], args[1:]
        elif 'target' in kwargs:
            target = kwargs.pop('target')
            args = tuple(kwargs.pop('args', ()))
            kwargs = dict(kwargs.pop('kwargs', {}), **kwargs)
        else:
            raise TypeError('Coro needs a target: Coro(target, *args, **kwargs)')
        if not callable(target):
            raise TypeError('Coro target must be a generator function or a function, '
                            'not %r' % (target,))
        rt = _runtime()
        self._rt = rt
        self._name = _target_name(target)
        self._id = next(_COROUTINE_IDS)
        self._mailbox = None
        self._inbox = None          # see send: the mailbox, when appending is all a send does
        self._state = _NEW
        self._wait = None
        self._wait_seq = 0
        self._timer = None
        self._alarm = None
        self._resume_val = None
        self._pending_exc = None
        self._worker = None
        self._value = None
        self._exception = None
        self._fast = False
        self._daemon = self._start_daemon
        self._monitors = None
        self._waiters = None
        self._terminating = False
        self._swappable = False
        self._pending_swap = None
        self._stack = None
        self._handler = None        # takes what is sent, at once (see _hand_messages)
        is_gen, passes_coro = _inspect_target(target)
        if passes_coro:
            kwargs['coro'] = self
        if is_gen:
            self._gen = target(*args, **kwargs)
            self._target = None
            self._args = None
        else:
            self._gen = None
            self._target = target
            self._args = (args, kwargs)
        if _get_ident() == rt._tid:
            rt._start(self)
        else:
            rt._call_threadsafe(rt._start, self)

    # ------------------------------------------------ identity

    @property
    def name(self):
        """The coroutine's name: its target's ``__name__``."""
        return self._name

    @property
    def location(self):
        """Where the coroutine runs: a copy of its runtime's Location.

        None without the distributed runtime (asyncoro.disasyncoro).
        """
        return _location_copy(self._rt)

    def __repr__(self):
        loc = self._rt.location
        if loc is None:
            return '%s%s/%s' % (self._prefix, self._name, self._id)
        return '%s%s/%s@%s' % (self._prefix, self._name, self._id, loc)

    __str__ = __repr__

    def __eq__(self, other):
        if self is other:
            return True
        return (isinstance(other, Coro) and self._id == other._id and
                self.location == other.location)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return self._id

    def __reduce__(self):
        # a reference: (prefixed name, id, addr, port of its runtime); see
        # _rebuild_coro. Flat, so that it pickles and unpickles without a
        # Location object (this is on the path of every `(coro, data)` message)
        loc = self._rt.location
        if loc is None:
            return (_rebuild_coro, (self._prefix + self._name, self._id, None, None))
        return (_rebuild_coro, (self._prefix + self._name, self._id, loc.addr, loc.port))

    @classmethod
    def scheduler(cls):
        """The runtime that user coroutines run on, started if none is.

        :returns: the AsynCoro.
        """
        return _runtime()

    # ------------------------------------------------ messages

    def send(self, message):
        """Queue `message` for this coroutine.

        :returns: 0 once queued; -1, with a WARNING, if the coroutine has
            finished (for one of another process: also if the message cannot
            be pickled or sent).

        Does not block; may be called from any thread. Call form:
        ``coro.send(msg)``.
        """
        if _get_ident() == self._rt._tid:
            # the path of every local message: `_inbox` is the mailbox while
            # a send has nothing to do but append (the coroutine lives, has no
            # handler and is not waiting in receive); else None
            inbox = self._inbox
            if inbox is not None:
                inbox.append(message)
                return 0
            if self._state == _DONE:
                log.warning('send to %s ignored: it has finished', self)
                return -1
            handler = self._handler
            if handler is not None:
                handler(message)
                return 0
            mailbox = self._mailbox
            if mailbox is None:
                mailbox = self._mailbox = collections.deque()
            mailbox.append(message)
            if self._wait is _RECV:
                self._rt._driver.wake(self, _FROM_MAILBOX)
            # it is not waiting in receive now: the sends that follow only
            # append, until it waits in receive again or ends (they clear it)
            self._inbox = mailbox
            return 0
        if self._state == _DONE:
            log.warning('send to %s ignored: it has finished', self)
            return -1
        self._rt._call_threadsafe(self._send_here, message)
        return 0

    def _send_here(self, message):
        if self._state == _DONE:
            log.warning('send to %s ignored: it finished before the message arrived', self)
            return
        self.send(message)

    def deliver(self, message, timeout=None):
        """Queue `message` for this coroutine, acknowledged.

        :param timeout: for a coroutine of another process, seconds to wait
            for the acknowledgement (None: no limit); not used for a local one.
        :returns: 1 once the message is queued; -1 if the coroutine has
            finished (or its process cannot be reached); 0 if no
            acknowledgement came within `timeout`.

        Blocks only while it waits for a remote acknowledgement. Call form:
        ``n = yield coro.deliver(msg)``.
        """
        return 1 if self.send(message) == 0 else -1

    def receive(self, timeout=None, alarm_value=None):
        """Take the oldest queued message, waiting for one if there is none.

        :param timeout: seconds to wait at most; None: no limit; <= 0: do not
            wait.
        :param alarm_value: what to return when `timeout` passes.
        :returns: the message; `alarm_value` on timeout.
        :raises WrongContextError: if not called by this coroutine itself.

        Blocks this coroutine only. Also ``recv``. Call form:
        ``msg = yield coro.receive()``.
        """
        if _getcurrent() is self._worker:
            mailbox = self._mailbox
            if mailbox:
                self._fast = True       # the adapter sends the message straight back
                return mailbox.popleft()
            if timeout is not None and timeout <= 0:
                return alarm_value
            self._inbox = None          # the next send wakes it
            return self._rt._driver.wait(self, _RECV, timeout, alarm_value, self._gen is not None)
        raise self._wrong_caller('receive')

    recv = receive

    def _receive_blocking(self, timeout=None, alarm_value=None):
        """receive() for library helpers: always returns the message (never
        parks), so it can be called from any function of this coroutine."""
        self._check_self('receive')
        if self._mailbox:
            return self._mailbox.popleft()
        if timeout is not None and timeout <= 0:
            return alarm_value
        self._inbox = None          # the next send wakes it
        return self._rt._driver.wait(self, _RECV, timeout, alarm_value, False)

    def sleep(self, timeout=None, alarm_value=None):
        """Suspend this coroutine until `timeout` passes or resume() wakes it.

        :param timeout: seconds to sleep; None: until resume(); <= 0: return
            at once.
        :param alarm_value: what to return when `timeout` passes.
        :returns: `alarm_value`, or the value given to resume().
        :raises WrongContextError: if not called by this coroutine itself.

        Blocks this coroutine only; messages do not wake it. Also
        ``suspend``. Call form: ``yield coro.sleep(1)``.
        """
        self._check_self('sleep')
        if timeout is not None and timeout <= 0:
            return alarm_value
        return self._rt._driver.wait(self, _SLEEP, timeout, alarm_value, self._gen is not None)

    suspend = sleep

    def resume(self, update=None):
        """Wake this coroutine from sleep() (or suspend()).

        :param update: what that sleep() call returns.
        :returns: 0 (a coroutine that is not sleeping is left as it is, with
            a WARNING); -1 if the coroutine has finished.

        Does not block; may be called from any thread. Also ``wakeup``. Call
        form: ``coro.resume(value)``.
        """
        if self._state == _DONE:
            return -1
        if _get_ident() != self._rt._tid:
            self._rt._call_threadsafe(self.resume, update)
            return 0
        if self._wait is _SLEEP:
            self._rt._driver.wake(self, update)
        else:
            log.warning('resume of %s ignored: it is not sleeping', self)
        return 0

    wakeup = resume

    # ------------------------------------------------ ending

    def throw(self, *args):
        """Raise an exception in this coroutine where it waits or yielded.

        :param args: the exception: ``throw(exc)``,
            ``throw(exc_type[, value[, tb]])`` or ``throw((exc_type, value))``.
        :returns: 0; -1, with a WARNING, if the coroutine has finished (or is
            one of another process: only local coroutines can be thrown at).
        :raises TypeError: if `args` give no exception.

        Does not wait for the coroutine to handle it. Call form:
        ``coro.throw(ValueError('stop'))``.
        """
        exc = _exception_from(args)
        if self._state == _DONE:
            log.warning('throw to %s ignored: it has finished', self)
            return -1
        self._rt._run_here(self._rt._driver.interrupt, self, exc)
        return 0

    def terminate(self):
        """Stop this coroutine: GeneratorExit is raised where it waits.

        Its generators' finally blocks run and it ends normally, with its last
        value (monitors get ``(StopIteration, value)``); a generator that
        catches GeneratorExit and goes on is closed at its next yield.

        :returns: 0; -1 if it has finished already (for one of another
            process: if the request cannot be sent).

        Does not wait for the end (``yield coro.finish()`` does). Call form:
        ``coro.terminate()``.
        """
        if self._state == _DONE:
            return -1
        self._rt._run_here(self._terminate)
        return 0

    def _terminate(self):
        if self._state == _DONE or self._terminating:
            return
        self._terminating = True
        self._rt._driver.interrupt(self, GeneratorExit())

    def value(self, timeout=None):
        """Wait until this coroutine ends and return its value (for threads).

        :param timeout: seconds to wait at most; None: no limit.
        :returns: the coroutine's value; None on timeout (and, with a
            WARNING, for a coroutine of another process). A coroutine that
            died of an exception has the last value it yielded or was sent.
        :raises WrongContextError: if the coroutine calls it on itself.

        Blocks the calling thread (the main program, say); called in the
        runtime's thread it blocks only the calling coroutine, as finish().
        Call form: ``v = coro.value()``.
        """
        rt = self._rt
        if _get_ident() == rt._tid:
            return self._finish_wait(timeout, False)
        if self._state == _DONE:
            return self._value
        lock = _allocate_lock()
        lock.acquire()
        rt._call_threadsafe(self._add_waiter, lock)
        if lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return self._value
        return None

    def finish(self, timeout=None):
        """Wait until this coroutine ends and return its value (for coroutines).

        :param timeout: seconds to wait at most; None: no limit; <= 0: do not
            wait.
        :returns: the coroutine's value, as :meth:`value`; None on timeout
            (and, with a WARNING, for a coroutine of another process).
        :raises WrongContextError: if the coroutine calls it on itself.

        Blocks the calling coroutine only; from another thread it acts as
        value(). Call form: ``v = yield other.finish()``.
        """
        if _get_ident() != self._rt._tid:
            return self.value(timeout)
        cur = _getcurrent()
        me = getattr(cur, 'coro', None)
        return self._finish_wait(timeout, me is not None and me._gen is not None and
                                 cur is me._worker)

    def _finish_wait(self, timeout, may_park):
        if self._state == _DONE:
            return self._value
        me = _current_coro()
        if me is None:      # a plain greenlet of the hub (a service handler, say)
            if timeout is not None and timeout <= 0:
                return None
            done = gevent.event.Event()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(done)
            done.wait(timeout)
            return self._value if self._state == _DONE else None
        if me is self:
            raise WrongContextError('%s cannot wait for its own end' % self)
        if timeout is not None and timeout <= 0:
            return None
        if self._waiters is None:
            self._waiters = []
        self._waiters.append((me, me._wait_seq + 1))
        return me._rt._driver.wait(me, _FINISH, timeout, None, may_park)

    def _add_waiter(self, waiter):
        if self._state == _DONE:
            waiter.release()
        else:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)

    # ------------------------------------------------ monitors, daemon, names

    def monitor(self, observe):
        """Make this coroutine a monitor of `observe`.

        When `observe` ends, this coroutine receives
        ``MonitorException(observe, info)`` (see MonitorException); at once
        if a local `observe` has ended already.

        :param observe: a coroutine, local or of another process.
        :returns: 0; -1 if `observe` is not a coroutine, or is of another
            process and is gone or does not answer within MsgTimeout.

        Blocks only while a coroutine of another process is asked. Call form:
        ``yield coro.monitor(other)``.
        """
        if not isinstance(observe, Coro):
            log.warning('monitor: %r is not a coroutine', observe)
            return -1
        return observe.notify(self)

    def notify(self, monitor):
        """Add `monitor` to this coroutine's monitors.

        It is :meth:`monitor`, seen from the watched side.

        :param monitor: a coroutine, local or of another process.
        :returns: 0; -1 if `monitor` is not a coroutine (or this coroutine is
            of another process and is gone or does not answer in time).
        """
        if not isinstance(monitor, Coro):
            log.warning('notify: %r is not a coroutine', monitor)
            return -1
        return self._rt._run_here(self._add_monitor, monitor)

    def _add_monitor(self, monitor):
        if self._state == _DONE:
            monitor.send(MonitorException(self, self._end_info()))
            return 0
        if self._monitors is None:
            self._monitors = []
        if monitor not in self._monitors:
            self._monitors.append(monitor)
        return 0

    def is_alive(self):
        """Whether this coroutine is still running.

        :returns: True while it has not finished; None, with a WARNING, for a
            coroutine of another process (that is not known here).
        """
        return self._state != _DONE

    def set_daemon(self, flag=True):
        """Make this coroutine a daemon (or not): finish() does not wait for one.

        :param flag: True: a daemon; False: waited for again.
        :returns: 0; -1, with a WARNING, if not called by this coroutine
            itself.

        Call form: ``coro.set_daemon()``.
        """
        if _current_coro() is not self:
            log.warning('set_daemon on %s ignored: a coroutine may only set itself', self)
            return -1
        flag = bool(flag)
        if flag != self._daemon:
            self._daemon = flag
            self._rt._count_nondaemon(-1 if flag else 1)
        return 0

    def register(self, name=None):
        """Register this coroutine under `name`, for :meth:`~asyncoro.core.Coro.locate`.

        :param name: the name; None: the coroutine's own name.
        :returns: 0; -1, with a WARNING, if another live coroutine holds that
            name (-1 always for a coroutine of another process).

        The registration lasts until :meth:`unregister` or the coroutine's
        end.
        """
        rt = self._rt
        return rt._run_here(rt._register, self._registry_kind, name or self._name, self)

    def unregister(self, name=None):
        """Withdraw this coroutine's registration under `name`.

        :param name: the name; None: the coroutine's own name.
        :returns: 0; -1 if this coroutine is not registered under it.
        """
        rt = self._rt
        return rt._run_here(rt._unregister, self._registry_kind, name or self._name, self)

    @classmethod
    def locate(cls, name, location=None, timeout=None):
        """Find the coroutine registered under `name`.

        :param name: the name it was registered under.
        :param location: with asyncoro.disasyncoro, the Location of the
            runtime to ask; None: this process first, then every peer (also
            peers that appear while it waits). Without it, only this process
            is searched.
        :param timeout: seconds to wait at most; None: no limit.
        :returns: the coroutine (a reference, for one of another process);
            None on timeout or if `location` cannot be reached.

        Blocks the calling coroutine only. Call form:
        ``c = yield Coro.locate('server')``.
        """
        rt = _runtime()
        return rt._run_here(rt._locate, cls._registry_kind, name, location, timeout)

    # ------------------------------------------------ hot swap

    def hot_swappable(self, flag):
        """Allow (True) or forbid hot swapping of this coroutine.

        A swap asked for meanwhile (:meth:`hot_swap`) happens at its next
        yield, or once it is back in its top generator.

        :param flag: whether it may be swapped.
        :returns: 0; -1, with a WARNING, if not called by this coroutine
            itself.
        """
        if _current_coro() is not self:
            log.warning('hot_swappable on %s ignored: a coroutine may only set itself', self)
            return -1
        self._swappable = bool(flag)
        if self._swappable and self._pending_swap is not None and not self._stack:
            self._start_swap()
        return 0

    def hot_swap(self, target, *args, **kwargs):
        """Replace this coroutine's generator with a new one, keeping its messages.

        The new generator, ``target(*args, **kwargs)``, is made at once.
        ``HotSwapException(new generator)`` is thrown into the coroutine once
        it is swappable (:meth:`hot_swappable`) and not in a sub-generator;
        if its generator lets the exception propagate, the new one takes
        over.

        :param target: a generator function; passed ``coro=`` as Coro does.
        :returns: 0; -1, with a WARNING, if `target` is not a generator
            function, or this coroutine is not a generator coroutine or has
            finished.

        Does not wait for the swap.
        """
        is_gen, passes_coro = _inspect_target(target) if callable(target) else (False, False)
        if not is_gen or self._gen is None or self._state == _DONE:
            log.warning('hot_swap of %s refused: %r is not a generator function '
                        '(or the coroutine is not one / has finished)', self, target)
            return -1
        if passes_coro:
            kwargs['coro'] = self
        new = target(*args, **kwargs)
        return self._rt._run_here(self._request_swap, new)

    def _request_swap(self, new):
        self._pending_swap = new
        if self._swappable and not self._stack:
            self._start_swap()
        return 0

    def _start_swap(self):
        new, self._pending_swap = self._pending_swap, None
        self._rt._driver.interrupt(self, HotSwapException(new))

    @staticmethod
    def _swap_target(exc):
        """The generator that takes over when `exc` ends this coroutine's top
        generator: a HotSwapException's new one; else None."""
        if isinstance(exc, HotSwapException) and exc.args and \
                isinstance(exc.args[0], _GeneratorType):
            return exc.args[0]
        return None

    # ------------------------------------------------ internals (hub thread only)

    def _check_self(self, what):
        if _getcurrent() is not self._worker or self._worker is None:
            raise self._wrong_caller(what)

    def _wrong_caller(self, what):
        return WrongContextError(
            '%s() of %s can only be called by that coroutine itself (called from %s)'
            % (what, self, _current_coro() or 'outside any coroutine'))

    def _end_info(self):
        if self._exception is None:
            return (StopIteration, self._value)
        return (type(self._exception), self._exception)

    def _tell_end(self):
        """Tell whoever waits for this coroutine's end, which has come (the
        driver calls it last, if anyone waits): finish() and value() callers
        get its value, monitors a MonitorException."""
        waiters = self._waiters
        if waiters:
            self._waiters = None
            wake = self._rt._driver.wake
            for waiter in waiters:
                if isinstance(waiter, tuple):         # a coroutine in finish()
                    coro, seq = waiter
                    if coro._wait is _FINISH and coro._wait_seq == seq:
                        wake(coro, self._value)
                elif isinstance(waiter, gevent.event.Event):   # a greenlet in finish()
                    waiter.set()
                else:                                 # a thread in value()
                    waiter.release()
        monitors = self._monitors
        if monitors:
            self._monitors = None
            info = self._end_info()
            for monitor in monitors:
                monitor.send(MonitorException(self, info))


plain_type(Coro)        # it pickles as a reference (see __reduce__)
plain_type(MonitorException, lambda exc: exc.args)     # (class, args): plain if its args are


# ---------------------------------------------------------------- the driver

class _Driver:
    """What runs the coroutines of runtime `rt` in its hub `hub`: the ready
    queue, the worker greenlets, waiting and waking, the yield adapter and
    the end. One per runtime, made in the hub thread; every method runs there.

    A Coro is the user's face of a coroutine and holds its state; the driver
    moves that state, as trio's runner moves its tasks. Coro's operations
    call `wait`, `wake` and `interrupt`; the runtime calls `schedule` for a
    coroutine it starts, `run_after` and `close`; `end`, called only here,
    tells the runtime and then the Coro (`_tell_end`) that a coroutine ended.
    """

    def __init__(self, rt, hub):
        self._rt = rt           # told of each end (its _ended)
        self._hub = hub
        self._loop = hub.loop
        self._ready = collections.deque()
        self._ready_pending = False     # a _run_ready callback is queued (or running)
        self._pool = []                 # idle workers

    # ------------------------------------------------ scheduling

    def schedule(self, coro):
        """Queue a ready coroutine to run in the next batch."""
        self._ready.append(coro)
        if not self._ready_pending:
            self._ready_pending = True
            self._loop.run_callback(self._run_ready)

    def _run_ready(self):
        """Run the coroutines that were ready when this batch began (later
        ones wait for the next batch, so I/O is polled in between)."""
        ready = self._ready
        pool = self._pool
        for _ in range(len(ready)):
            coro = ready.popleft()
            if coro._state != _READY:
                continue
            worker = coro._worker
            if worker is not None:
                worker.switch()             # back into wait()'s hub.switch()
            else:
                worker = pool.pop() if pool else _Worker(self._worker_main, parent=self._hub)
                worker.switch(coro)
        self._ready_pending = False
        if ready:
            self._ready_pending = True
            self._loop.run_callback(self._run_ready)

    def run_after(self, func, *args):
        """Call func(*args), a hub callback that may make coroutines ready (a
        connection's reading), then run those coroutines at once, in this
        turn of the hub, instead of at its next one."""
        if self._ready_pending:         # a batch is queued already: they join it
            func(*args)
            return
        self._ready_pending = True      # so that schedule queues no batch meanwhile
        done = False
        try:
            func(*args)
            done = True
        finally:
            if not self._ready:
                self._ready_pending = False
            elif done:
                self._run_ready()
            else:
                self._loop.run_callback(self._run_ready)

    def _worker_main(self, coro):
        worker = _getcurrent()
        pool = self._pool
        hub = self._hub
        while True:
            worker.coro = coro
            coro._worker = worker
            try:        # each makes it RUNNING as it takes what the coroutine resumes with
                if coro._gen is None:
                    self._run_function(coro)
                else:
                    self._drive(coro)
            except Exception as exc:    # our bug: end the coroutine, keep the hub alive
                log.error('internal error running %s', coro, exc_info=True)
                if coro._state != _DONE:
                    self.end(coro, None, exc)
            finally:
                coro._worker = None
                worker.coro = None
            if len(pool) >= _MAX_IDLE_WORKERS:
                return
            pool.append(worker)
            coro = hub.switch()

    def close(self):
        """End the idle workers; called by the hub greenlet as the runtime's
        thread ends."""
        here = _getcurrent()
        for worker in self._pool:
            worker.parent = here       # so that its end comes back here, not to the hub
            worker.throw(greenlet.GreenletExit)
        self._pool = []

    # ------------------------------------------------ waiting and waking

    def wait(self, coro, kind, timeout, alarm_value, may_park):
        """Make the running `coro` wait for `kind` (a message, a resume,
        another's end), at most `timeout` seconds (then the wait returns
        `alarm_value`). A generator coroutine that yields the result at once
        may park (returns _PARK); otherwise the worker blocks and the wait's
        result is returned."""
        if coro._pending_exc is not None:    # thrown at itself while running
            exc, coro._pending_exc = coro._pending_exc, None
            raise exc
        coro._wait = kind
        coro._wait_seq += 1
        coro._alarm = alarm_value
        coro._state = _WAITING
        if timeout is not None:
            timer = coro._timer = self._loop.timer(timeout)
            timer.start(self._timed_out, coro, coro._wait_seq)
        if may_park:
            coro._fast = False      # the adapter must not send _PARK straight back
            return _PARK
        self._hub.switch()    # until _run_ready switches back to this worker
        return self._take_resume(coro)

    def _timed_out(self, coro, seq):
        if coro._wait_seq == seq and coro._wait is not None:
            self.wake(coro, coro._alarm)

    def _clear_wait(self, coro):
        coro._wait = None
        timer = coro._timer
        if timer is not None:
            coro._timer = None
            timer.close()

    def wake(self, coro, value):
        """Make a waiting coroutine ready; `value` is what its wait returns.
        (_clear_wait and schedule, inline: every message that a coroutine
        waits for comes this way.)"""
        coro._wait = None
        timer = coro._timer
        if timer is not None:
            coro._timer = None
            timer.close()
        coro._resume_val = value
        coro._state = _READY
        self._ready.append(coro)
        if not self._ready_pending:
            self._ready_pending = True
            self._loop.run_callback(self._run_ready)

    def _take_resume(self, coro):
        """What the coroutine's wait returns, as it runs again; or the
        exception delivered meanwhile, raised."""
        coro._state = _RUNNING
        exc = coro._pending_exc
        if exc is not None:
            coro._pending_exc = None
            raise exc
        value = coro._resume_val
        coro._resume_val = None
        if value is _FROM_MAILBOX:
            value = coro._mailbox.popleft()
        return value

    def interrupt(self, coro, exc):
        """Deliver `exc` where the coroutine is blocked or at its next switch."""
        state = coro._state
        if state == _DONE:
            return
        coro._pending_exc = exc
        if state == _WAITING:
            self.wake(coro, None)
        elif state == _RUNNING and _getcurrent() is not coro._worker:
            # blocked in some other gevent wait (a socket, a lock): throw it in
            # from the hub, which is where that wait switched to
            self._loop.run_callback(self._throw_in, coro, exc)

    def _throw_in(self, coro, exc):
        if coro._pending_exc is exc and coro._state == _RUNNING and coro._worker is not None:
            coro._pending_exc = None
            coro._worker.throw(exc)

    # ------------------------------------------------ the yield adapter

    def _drive(self, coro):
        """Run a generator coroutine in this worker until it parks or ends."""
        gen, stack = coro._gen, coro._stack
        # what it resumes with (_take_resume, inline: this runs every step)
        coro._state = _RUNNING
        exc = coro._pending_exc
        if exc is None:
            val = coro._resume_val
            coro._resume_val = None
            if val is _FROM_MAILBOX:
                val = coro._mailbox.popleft()
            coro._value = val
        else:                   # a throw/terminate delivered on resume
            coro._pending_exc = val = None
        send = gen.send
        while True:
            try:
                if exc is None:
                    yielded = send(val)
                else:
                    thrown, exc = exc, None
                    yielded = gen.throw(thrown)
                if coro._fast:      # the path of every message
                    yielded = self._stream(coro, send, yielded)
            except StopIteration as e:
                val = _stop_value(e, coro._value)
            except (Exception, GeneratorExit) as e:     # to its caller, or its end
                val, exc = self._raised(coro, e)
            else:
                if coro._pending_exc is not None or coro._terminating:
                    exc, val = self._interrupted(coro, gen), None
                    if exc is None:     # closed: it went on after terminate()
                        return
                    continue
                if yielded is _PARK:
                    coro._gen, coro._stack = gen, stack
                    return
                if type(yielded) is _GeneratorType:     # a sub-coroutine
                    if stack is None:
                        stack = coro._stack = []
                    stack.append(gen)
                    gen, val = yielded, None
                    send = gen.send
                    continue
                # any other value: a cooperative switch; it comes back as is
                coro._value = coro._resume_val = yielded
                coro._state = _READY
                coro._gen, coro._stack = gen, stack
                self.schedule(coro)
                return
            # the innermost generator ended, with value `val` or exception `exc`
            if exc is None and not stack:
                self.end(coro, val, None)
                return
            gen, val, exc = self._unwind(coro, stack, val, exc)
            if gen is None:     # it has ended
                return
            send = gen.send

    def _stream(self, coro, send, yielded):
        """What receive() took (`yielded`) goes straight back into the
        generator, without a switch, and so on up to _FAST_STREAK times in a
        row: the path of every message (receive() sets _fast; wait clears
        it, so _PARK never comes back so). Returns the first value yielded
        that is not such, or the last when no more may come back in a row
        (it comes back after a switch); raises what the generator raises."""
        for _ in _STREAK:
            coro._fast = False
            if coro._pending_exc is not None or type(yielded) is _GeneratorType:
                return yielded
            coro._value = yielded
            yielded = send(yielded)
            if not coro._fast:
                return yielded
        coro._fast = False
        return yielded

    def _raised(self, coro, exc):
        """(value, exception) of a generator that raised `exc`: PEP 479's
        RuntimeError, from a StopIteration, is the value that carried."""
        if isinstance(exc, RuntimeError):
            cause = exc.__cause__
            if isinstance(cause, StopIteration) and 'StopIteration' in str(exc):
                return _stop_value(cause, coro._value), None
        return None, exc

    def _interrupted(self, coro, gen):
        """A coroutine that yielded has an exception thrown at it while it
        ran (a wait it started meanwhile is dropped): that exception, to
        throw into its generator. Or it caught terminate()'s GeneratorExit
        and went on: closed, ended; None."""
        exc = coro._pending_exc
        if exc is None:
            self._force_close(coro, gen)
            return None
        self._clear_wait(coro)
        coro._state = _RUNNING
        coro._pending_exc = None
        return exc

    def _unwind(self, coro, stack, val, exc):
        """The innermost generator ended with `val` or `exc` (any end but the
        plain one, the top generator's value). Returns (the generator that
        goes on, the value or exception it gets): a sub-generator's caller,
        or a hot swap's new generator; (None, None, None) once the coroutine
        has ended, by terminate() (its callers closed) or by `exc`."""
        if exc is not None and coro._terminating and isinstance(exc, GeneratorExit):
            self._close_stack(coro)
            self.end(coro, coro._value, None)
            return None, None, None
        if stack:
            gen = stack.pop()
            if exc is None:
                coro._value = val
            if not stack and coro._pending_swap is not None and coro._swappable:
                coro._gen = gen         # a hot swap that waited for the top generator
                coro._start_swap()
            return gen, val, exc
        new = coro._swap_target(exc)
        if new is not None:
            coro._gen = new
            return new, None, None
        self.end(coro, coro._value, exc)
        return None, None, None

    def _force_close(self, coro, gen):
        self._clear_wait(coro)
        try:
            gen.close()
        except RuntimeError:    # it ignores GeneratorExit; it is dropped all the same
            log.warning('%s ignored terminate(); closed', coro)
        self._close_stack(coro)
        self.end(coro, coro._value, None)

    def _close_stack(self, coro):
        """Close the generators that called the innermost one, innermost first."""
        for gen in reversed(coro._stack or ()):
            try:
                gen.close()
            except Exception:      # a finally block that fails while closing
                log.warning('closing %s of %s failed', gen, coro, exc_info=True)

    def _run_function(self, coro):
        """Run a greenlet-style coroutine's function to its end."""
        args, kwargs = coro._args
        coro._args = None
        try:
            self._take_resume(coro)
            value = coro._target(*args, **kwargs)
            if type(value) is _GeneratorType:
                # a function that returns a generator (a decorated generator
                # function, say): drive that generator from here on
                coro._gen, coro._target = value, None
                self._drive(coro)
                return
        except (GeneratorExit, greenlet.GreenletExit) as e:
            self.end(coro, None, None if coro._terminating else e)
        except Exception as e:     # the edge of a greenlet-style coroutine
            self.end(coro, None, e)
        else:
            self.end(coro, value, None)

    # ------------------------------------------------ the end

    def end(self, coro, value, exc):
        """The coroutine ends with `value`, or dies of `exc`: it is done, an
        exception (but GeneratorExit) is logged and keeps its traceback
        text, the runtime forgets it, and whoever waits for its end is told."""
        coro._state = _DONE
        coro._inbox = None      # a send says it has finished (see Coro.send)
        coro._wait = None
        coro._gen = coro._stack = coro._target = None
        coro._pending_swap = None
        if exc is None:
            coro._value = value
        else:
            coro._exception = exc
            if not isinstance(exc, GeneratorExit):
                text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                log.warning('uncaught exception in %s:\n%s', coro, text)
                _note(exc, 'raised in %s:\n%s' % (coro, text[-_NOTE_LIMIT:]))
        self._rt._ended(coro)
        if coro._waiters or coro._monitors:
            coro._tell_end()


_NOTE_LIMIT = 8000      # characters of a traceback kept with its exception


def _note(exc, text):
    """Keep `text` with `exc` as a note (PEP 678: `__notes__`, shown when
    Python prints it from 3.11 on): a job's exception takes its traceback
    text with it to the client, the scheduler and the monitor."""
    try:
        notes = exc.__dict__.setdefault('__notes__', [])
        if isinstance(notes, list):
            notes.append(text)
    except (AttributeError, TypeError):     # an exception without a __dict__ keeps none
        pass


def _msg_timeout():
    """MsgTimeout as the program has set it, on whichever module."""
    return MsgTimeout


def _hand_messages(coro, handler):
    """What is sent to `coro` from now on goes to ``handler(message)`` at
    once, in the hub thread where it is delivered (from another thread, as
    the send is handed over), instead of its mailbox: for the library's
    services, whose handling never blocks. Messages keep the order in which
    they are sent; the coroutine itself waits on, and ends as any other."""
    coro._handler = handler
    coro._inbox = None      # a send goes to the handler (see Coro.send)


class _ShowsMsgTimeout(types.ModuleType):
    """The class of the modules that show the core's MsgTimeout as their own
    (asyncoro.disasyncoro, asyncoro.discoro): reading or assigning
    `module.MsgTimeout` there reads or assigns this module's."""

    @property
    def MsgTimeout(self):
        return _msg_timeout()

    @MsgTimeout.setter
    def MsgTimeout(self, value):
        global MsgTimeout
        MsgTimeout = value


def _location_copy(rt):
    """A copy of the runtime's Location (callers may change theirs), or None."""
    loc = rt.location
    return None if loc is None else loc.copy()


def _current_coro():
    return getattr(_getcurrent(), 'coro', None)


# kind -> factory(*reference) for objects that live in another process; filled
# by asyncoro.disasyncoro ('coro', 'channel')
_REMOTE_FACTORIES = {}


# (coroutine id, addr, port) -> (prefixed name, runtime, reference): the
# references to coroutines of other processes unpickled lately, filled by
# their factory (asyncoro.remote). A coroutine named in message after message
# (a client's, in each of its requests) is found here first.
_REFERENCES = {}


def _rebuild_coro(name, coro_id, addr, port):
    """Unpickle a Coro reference: the coroutine itself if it lives in this
    process (and still has that name), else a remote reference (the args
    are those of Coro.__reduce__)."""
    rt = AsynCoro._instance
    known = _REFERENCES.get((coro_id, addr, port))
    if known is not None and known[0] == name and known[1] is rt:
        return known[2]
    if rt is not None:
        loc = rt.location
        if (addr is None) if loc is None else (port == loc.port and addr == loc.addr):
            coro = rt._coros.get(coro_id)
            if coro is not None and coro._prefix + coro._name == name:
                return coro
    return _remote_factory('coro')(name, coro_id, addr, port)


def _remote_factory(kind):
    factory = _REMOTE_FACTORIES.get(kind)
    if factory is None:
        raise pickle.UnpicklingError('a reference to a %s of another process needs '
                                     'asyncoro.disasyncoro' % kind)
    return factory



# ---------------------------------------------------------------- the runtime

def _runtime():
    rt = AsynCoro._instance
    if rt is None:
        if _NO_RUNTIME[0]:
            raise AsyncoroError('no runtime may start in this process: %s' % _NO_RUNTIME[0])
        rt = _RUNTIME_CLASS[0].instance()
    return rt


# the collector's first threshold in a process that runs a runtime: Python's
# 700 (2,000 from 3.13) means a collection of the young objects every few
# messages' worth of allocations, and, with thousands of jobs in flight (their
# greenlets, frames and answers alive), full collections that walk them all
GC_YOUNG = 10000


def _tune_process():
    """Two settings of the process that a runtime wants, made when the
    first one starts:

    - the collector's first threshold is raised to GC_YOUNG (a program
      that set a higher one, or turned collections off, keeps its own);
    - gevent no longer records where each greenlet was spawned
      (``gevent.config.track_greenlet_tree``), a walk of the caller's
      frames at every spawn, for debugging only; the environment variable
      GEVENT_TRACK_GREENLET_TREE, when set, decides instead.

    Together they are a tenth of what a trivial job costs its client."""
    young, *older = gc.get_threshold()
    if 0 < young < GC_YOUNG:
        gc.set_threshold(GC_YOUNG, *older)
    if 'GEVENT_TRACK_GREENLET_TREE' not in os.environ:
        gevent.config.track_greenlet_tree = False


# a reason, in processes that must never get a hub or threads (discoronode's
# zygote forks servers: it must stay free of both)
_NO_RUNTIME = [None]


# the class built when a coroutine needs a runtime and none exists;
# asyncoro.disasyncoro puts its distributed AsynCoro here
_RUNTIME_CLASS = [None]


class AsynCoro(metaclass=Singleton):
    """The process's runtime: a gevent hub in a thread of its own.

    It holds the ready queue and the coroutine tables. A singleton: the first construction wins; later ones return it and
    ignore their arguments. The first Coro made starts one if the program
    did not. The core runtime takes only `name` (default ``'asyncoro'``) and
    ignores other options; the distributed one (asyncoro.disasyncoro) takes
    them.

    :raises AsyncoroError: in a process where no runtime may start (a
        node's zygote).

    Blocks only until its thread has started.
    """

    def __init__(self, *args, **kwargs):
        if _NO_RUNTIME[0]:
            raise AsyncoroError('no runtime may start in this process: %s' % _NO_RUNTIME[0])
        self._name = kwargs.get('name') or 'asyncoro'
        _tune_process()
        self._driver = None     # runs the coroutines; made in the hub thread
        self._run_after = None  # its run_after (see _hub_main)
        self._xq = collections.deque()     # calls from other threads
        self._xq_signalled = False
        self._nondaemon = 0
        self._join_waiters = []
        self._coros = {}                    # id -> Coro, every coroutine not yet ended
        self._registry = {}                 # (kind, name) -> object
        self._locate_events = {}            # (kind, name) -> [gevent Events of locate()s]
        self._atexit = []
        self._channels = {}
        self._stopping = False
        self._stopped = None
        self._ending = None     # (coroutines being terminated, lock) while stopping
        self._tid = None
        started = _allocate_lock()
        started.acquire()
        self._thread_ended = _allocate_lock()     # held while the hub thread runs
        self._thread_ended.acquire()
        _start_new_thread(self._hub_main, (started,))
        started.acquire()
        atexit.register(self._at_interpreter_exit)
        log.debug('runtime started in thread %s', self._tid)

    @classmethod
    def instance(cls, *args, **kwargs):
        """The runtime, made with these arguments if there is none yet.

        :returns: the running AsynCoro; else a new one of this class.
        """
        inst = AsynCoro._instance
        return inst if inst is not None else cls(*args, **kwargs)

    @staticmethod
    def scheduler():
        """The runtime, if one runs.

        :returns: the AsynCoro; None if none has started (or it has finished).
        """
        return AsynCoro._instance

    @staticmethod
    def cur_coro(scheduler=None):
        """The coroutine running now.

        :param scheduler: not used (asyncoro 4.5's signature).
        :returns: the Coro that called it; None outside coroutines.
        """
        return _current_coro()

    @property
    def location(self):
        """The runtime's Location: None for the core runtime (no network)."""
        return None

    @property
    def name(self):
        """The runtime's name.

        The `name` it was started with, else ``'asyncoro'`` (for the
        distributed runtime: its Location, as text).
        """
        return self._name

    def __repr__(self):
        return '<AsynCoro %s>' % self._name

    # ------------------------------------------------ the hub thread

    def _hub_main(self, started):
        hub = self._hub = gevent.get_hub()
        self._loop = hub.loop
        self._tid = _get_ident()
        self._driver = _Driver(self, hub)
        # _run_after(func, *args): call func, a hub callback that may make
        # coroutines ready (a connection's reading), and run them in this turn
        # of the hub; the driver's own, called by every connection's reads
        self._run_after = self._driver.run_after
        self._wakeup = self._loop.async_()
        self._wakeup.start(self._drain_foreign)
        self._stopped = gevent.event.Event()
        started.release()
        try:
            self._stopped.wait()
        finally:
            self._wakeup.close()
            self._driver.close()
            log.debug('runtime thread ends')
            self._thread_ended.release()

    def _call_threadsafe(self, func, *args):
        """Queue func(*args) to run in the hub thread; calls from one thread
        run in the order they were made. Never blocks."""
        self._xq.append((func, args))
        if not self._xq_signalled:
            self._xq_signalled = True
            self._wakeup.send()

    def _drain_foreign(self):
        # clear the flag before draining: a call queued after this point sends
        # a new wakeup, one queued before is seen by the loop below
        self._xq_signalled = False
        xq = self._xq
        while xq:
            func, args = xq.popleft()
            try:
                func(*args)
            except Exception:    # a failing handed-over call must not stop the others
                log.error('call %s from another thread failed', func, exc_info=True)

    def _run_here(self, func, *args, **kwargs):
        """Run func(*args, **kwargs) in the hub thread and return its result:
        directly when already there, else from a helper greenlet while this
        thread waits (func may block)."""
        if _get_ident() == self._tid:
            return func(*args, **kwargs)
        result = []
        done = _allocate_lock()
        done.acquire()

        def call():
            try:
                result.append((True, func(*args, **kwargs)))
            except Exception as exc:     # re-raised in the calling thread
                result.append((False, exc))
            finally:
                done.release()
        self._call_threadsafe(spawn, call)
        done.acquire()
        ok, value = result[0]
        if not ok:
            raise value
        return value

    # ------------------------------------------------ scheduling

    def _start(self, coro):
        self._coros[coro._id] = coro
        if not coro._daemon:
            self._nondaemon += 1
        coro._state = _READY
        self._driver.schedule(coro)

    def local_coro(self, coro_id, name):
        """The live coroutine of this process that a reference names (its
        id, and its name with its prefix); None if it is gone (or the id now
        belongs to another one). For the layers above: the path of every
        remote message."""
        coro = self._coros.get(coro_id)
        if coro is not None and name[1:] == coro._name and name[0] == coro._prefix:
            return coro
        return None

    def _ended(self, coro):
        self._coros.pop(coro._id, None)
        if self._registry:
            for key in [key for key, obj in self._registry.items() if obj is coro]:
                del self._registry[key]
        if not coro._daemon:
            self._count_nondaemon(-1)
        ending = self._ending
        if ending is not None:
            ending[0].discard(coro)
            if not ending[0]:
                self._ending = None
                ending[1].release()

    def _count_nondaemon(self, delta):
        self._nondaemon += delta
        if self._nondaemon <= 0 and self._join_waiters:
            waiters, self._join_waiters = self._join_waiters, []
            for lock in waiters:
                lock.release()

    def _add_join_waiter(self, lock):
        if self._nondaemon <= 0:
            lock.release()
        else:
            self._join_waiters.append(lock)

    # ------------------------------------------------ names

    def _add_channel(self, channel):
        """Put a new channel in the process table, unless a live one has its name."""
        held = self._channels.get(channel.name)
        if held is not None and not held.closed:
            log.warning('channel name %r is in use; the new channel is not put in the '
                        'process table', channel.name)
            return
        self._channels[channel.name] = channel

    def _register(self, kind, name, obj):
        key = (kind, name)
        held = self._registry.get(key)
        if held is not None and held is not obj and getattr(held, '_state', None) != _DONE:
            log.warning('%s name %r is taken by %s', kind, name, held)
            return -1
        self._registry[key] = obj
        for event in self._locate_events.pop(key, ()):
            event.set()
        return 0

    def _unregister(self, kind, name, obj):
        key = (kind, name)
        if self._registry.get(key) is obj:
            del self._registry[key]
            return 0
        return -1

    def _locate(self, kind, name, location, timeout):
        """Find a registered object (coroutine, channel, ...) by name; the
        core looks in this process only. Runs in the hub thread."""
        return self._locate_local(kind, name, timeout)

    def _locate_local(self, kind, name, timeout):
        key = (kind, name)
        found = self._registry.get(key)
        if found is not None or (timeout is not None and timeout <= 0):
            return found
        event = gevent.event.Event()
        self._locate_events.setdefault(key, []).append(event)
        event.wait(timeout)
        return self._registry.get(key)

    # ------------------------------------------------ ending the program

    def atexit(self, priority, func, *args, **kwargs):
        """Have ``func(*args, **kwargs)`` called when the program finishes.

        The hooks run in :meth:`finish` (which also runs at interpreter
        exit), after the non-daemon coroutines have ended and before the
        daemons are terminated, in the runtime's thread, where they may
        block. A hook that raises is logged and the others still run; none
        runs if the program ends with :meth:`terminate`.

        :param priority: a number: higher runs first; equal ones run in the
            order they were added.
        :param func: the function to call.
        """
        self._atexit.append((priority, len(self._atexit), func, args, kwargs))

    def _drop_atexit(self, func):
        """Withdraw the exit hooks that would call `func` (so that what they
        hold, a computation closed early say, can go)."""
        self._atexit = [hook for hook in self._atexit if hook[2] != func]

    def join(self, show_running=False):
        """Wait until every non-daemon coroutine has finished (for threads).

        :param show_running: first log (INFO) each coroutine waited for.
        :raises WrongContextError: if called in the runtime's thread (from a
            coroutine).

        Blocks the calling thread, with no time limit; the runtime keeps
        running.
        """
        if _get_ident() == self._tid:
            raise WrongContextError('AsynCoro.join() is for threads, not coroutines')
        if show_running:
            self._run_here(self._log_running)
        lock = _allocate_lock()
        lock.acquire()
        self._call_threadsafe(self._add_join_waiter, lock)
        lock.acquire()

    def _log_running(self):
        for coro in list(self._coros.values()):
            if not coro._daemon:
                log.info('waiting for %s', coro)

    def finish(self):
        """Wait for the non-daemon coroutines, run the exit hooks, then stop.

        After the hooks (:meth:`atexit`), the daemon coroutines are
        terminated, and the runtime waits up to MsgTimeout for them to end
        and again for its thread to stop. Called at interpreter exit if the
        program did not call it; does nothing if the runtime is stopping
        already.

        :raises WrongContextError: if called in the runtime's thread (from a
            coroutine).

        Blocks the calling thread (the main program, say).
        """
        if _get_ident() == self._tid:
            raise WrongContextError('AsynCoro.finish() is for threads, not coroutines')
        if self._stopping:
            return
        self.join()
        self._run_hooks()
        self._stop()

    def terminate(self):
        """Stop the runtime now: every coroutine left is terminated.

        Every coroutine is made a daemon and terminated (GeneratorExit where
        it waits, as with :meth:`Coro.terminate`); the exit hooks do not run.
        Waits up to MsgTimeout for the coroutines to end and again for the
        runtime's thread to stop; does nothing if the runtime is stopping
        already.

        :raises WrongContextError: if called in the runtime's thread (from a
            coroutine).

        Blocks the calling thread.
        """
        if _get_ident() == self._tid:
            raise WrongContextError('AsynCoro.terminate() is for threads, not coroutines')
        if self._stopping:
            return
        self._stop()

    def _run_hooks(self):
        hooks, self._atexit = sorted(self._atexit, key=lambda h: (-h[0], h[1])), []
        for _, _, func, args, kwargs in hooks:
            try:
                self._run_here(func, *args, **kwargs)
            except Exception:   # one failing hook must not keep the others from running
                log.warning('atexit hook %s failed', func, exc_info=True)

    def _stop(self):
        self._stopping = True
        done = _allocate_lock()
        done.acquire()
        self._call_threadsafe(self._terminate_all, done)
        done.acquire(timeout=_msg_timeout())
        self._call_threadsafe(self._stopped.set)
        if self._thread_ended.acquire(timeout=_msg_timeout()):
            self._thread_ended.release()
        with _SINGLETON_LOCK:
            if AsynCoro._instance is self:
                AsynCoro._instance = None

    def _terminate_all(self, done):
        coros = set(self._coros.values())
        if not coros:
            done.release()
            return
        self._ending = (coros, done)    # _ended releases `done` when the last one ends
        for coro in list(coros):
            coro._daemon = True
            coro._terminate()

    def _at_interpreter_exit(self):
        if not self._stopping and AsynCoro._instance is self:
            self.finish()


_RUNTIME_CLASS[0] = AsynCoro

