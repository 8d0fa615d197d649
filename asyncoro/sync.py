"""Coroutine synchronisation primitives and the thread pool.

What it owns: `Lock`, `RLock`, `Condition`, `Event`, `Semaphore` (ownership is
per coroutine, not per thread), `AsyncThreadPool` and `AsyncDBCursor`. All are
re-exported by `asyncoro`.

How it works: the waits are gevent primitives used inside the runtime's hub
thread, so acquiring or waiting blocks only the calling coroutine's worker
greenlet. Calls that only change state (`Event.set`, releases) may come from
other threads; they are handed to the hub thread. `AsyncThreadPool` runs
functions in real OS threads and hands each completion back to the hub
thread, where the waiting coroutine wakes.
"""

import logging
import queue
import threading

import gevent.event
import gevent.lock

from asyncoro.core import (WrongContextError, _current_coro, _runtime, _get_ident, _get_original,
                      _allocate_lock, _start_new_thread)

__all__ = ['Lock', 'RLock', 'Condition', 'Event', 'Semaphore', 'AsyncThreadPool',
           'AsyncDBCursor']

log = logging.getLogger(__name__)

# real OS-thread primitives even in a program that monkey-patched
_SimpleQueue = _get_original('queue', 'SimpleQueue')
_Empty = queue.Empty


def _caller(what):
    coro = _current_coro()
    if coro is None:
        raise WrongContextError('%s must be called from a coroutine' % what)
    return coro


class _Acquired:
    """`with primitive:` acquires and releases (the primitive's own methods)."""

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _timeout(timeout):
    """asyncoro's `timeout=-1` (wait forever) as gevent's None."""
    return None if timeout is None or timeout < 0 else timeout


class Lock(_Acquired):
    """A lock owned by the coroutine that acquired it (not by a thread).

    Call form: ``ok = yield lock.acquire()`` ... ``lock.release()``; or
    ``with lock:`` in a greenlet-style coroutine."""

    def __init__(self):
        self._sem = gevent.lock.Semaphore(1)
        self._owner = None

    def acquire(self, blocking=True, timeout=-1):
        """Acquire the lock for the calling coroutine. Blocks that coroutine
        only.

        :param blocking: wait for the lock (True) or take it only if free.
        :param timeout: seconds to wait at most; -1 or None: no limit.
        :returns: True once acquired; False if not blocking or on timeout.
        :raises WrongContextError: when not called from a coroutine.
        """
        me = _caller('Lock.acquire')
        if not self._sem.acquire(blocking, _timeout(timeout) if blocking else None):
            return False
        self._owner = me
        return True

    def release(self):
        """Release the lock.

        :raises RuntimeError: if the calling coroutine does not own it.
        """
        if self._owner is None or self._owner is not _current_coro():
            raise RuntimeError('Lock released by %s, which does not own it (owner: %s)'
                               % (_current_coro(), self._owner))
        self._owner = None
        self._sem.release()

    def locked(self):
        """:returns: whether some coroutine holds the lock."""
        return self._owner is not None


class RLock(Lock):
    """A re-entrant Lock: its owner may acquire it again; it is free once
    released as many times as acquired."""

    def __init__(self):
        super().__init__()
        self._depth = 0

    def acquire(self, blocking=True, timeout=-1):
        """As :py:meth:`Lock.acquire`; the owner acquiring it again only
        counts one more level."""
        me = _caller('RLock.acquire')
        if self._owner is me:
            self._depth += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        self._depth = 1
        return True

    def release(self):
        """Release one level; the lock is free once every level is released.

        :raises RuntimeError: if the calling coroutine does not own it.
        """
        if self._owner is None or self._owner is not _current_coro():
            raise RuntimeError('RLock released by %s, which does not own it (owner: %s)'
                               % (_current_coro(), self._owner))
        self._depth -= 1
        if self._depth == 0:
            super().release()


class Condition(_Acquired):
    """A condition variable with a lock of its own (asyncoro's takes none).

    Call form: ``yield cv.acquire()``, ``notified = yield cv.wait(5)``,
    ``cv.release()``; another coroutine ``cv.notify()``."""

    def __init__(self):
        self._lock = RLock()
        self._waiters = []

    def acquire(self, blocking=True, timeout=-1):
        """Acquire the condition's lock; as :py:meth:`Lock.acquire`."""
        return self._lock.acquire(blocking, timeout)

    def release(self):
        """Release the condition's lock; as :py:meth:`Lock.release`."""
        self._lock.release()

    def wait(self, timeout=None):
        """Release the lock, wait to be notified, acquire the lock again.
        Blocks the calling coroutine only.

        :param timeout: seconds to wait at most; None: no limit.
        :returns: True if notified (the lock is held again), False on
            timeout (the lock is held again too).
        :raises RuntimeError: if the caller does not hold the lock.
        """
        me = _caller('Condition.wait')
        if self._lock._owner is not me:
            raise RuntimeError('Condition.wait by %s, which does not hold its lock' % me)
        depth = self._lock._depth
        self._lock._depth = 1
        self._lock.release()
        waiter = gevent.event.Event()
        self._waiters.append(waiter)
        try:
            notified = waiter.wait(_timeout(timeout))
        finally:
            if not waiter.is_set() and waiter in self._waiters:
                self._waiters.remove(waiter)
            self._lock.acquire()
            self._lock._depth = depth
        return bool(notified)

    def notify(self, n=1):
        """Wake up to `n` waiting coroutines; they run once they hold the
        lock again.

        :param n: how many waiters to wake.
        """
        _runtime()._run_here(self._notify, n)

    def _notify(self, n):
        for waiter in self._waiters[:n]:
            waiter.set()
        del self._waiters[:n]

    def notify_all(self):
        """Wake every waiting coroutine (also ``notifyAll``)."""
        self.notify(len(self._waiters))

    notifyAll = notify_all


class Event:
    """A flag that coroutines wait for: ``yield event.wait()``.

    `set` may be called from any thread."""

    def __init__(self):
        self._event = gevent.event.Event()

    def set(self):
        """Set the flag and wake every waiting coroutine."""
        rt = _runtime()
        if _get_ident() != rt._tid:
            rt._call_threadsafe(self._event.set)
        else:
            self._event.set()

    def clear(self):
        """Clear the flag: later waits wait again."""
        self._event.clear()

    def is_set(self):
        """:returns: whether the flag is set (also ``isSet``)."""
        return self._event.is_set()

    isSet = is_set

    def wait(self, timeout=None):
        """Wait until the flag is set. Blocks the calling coroutine only.

        :param timeout: seconds to wait at most; None: no limit.
        :returns: True once set (at once if it is), False on timeout.
        """
        if self._event.is_set():
            return True
        return bool(_runtime()._run_here(self._event.wait, _timeout(timeout)))


class Semaphore(_Acquired):
    """A counter that coroutines acquire and release.

    :param value: how many acquisitions may be held at once.
    :raises ValueError: for a negative value.

    Call form: ``ok = yield sem.acquire()`` ... ``sem.release()``."""

    def __init__(self, value=1):
        if value < 0:
            raise ValueError('Semaphore value must be >= 0, not %r' % (value,))
        self._sem = gevent.lock.Semaphore(value)

    def acquire(self, blocking=True, timeout=None):
        """Take one unit, waiting for one if need be. Blocks the calling
        coroutine only.

        :param blocking: wait (True) or take one only if available.
        :param timeout: seconds to wait at most; None or -1: no limit.
        :returns: True once taken; False if not blocking or on timeout.
        :raises WrongContextError: when not called from a coroutine.
        """
        _caller('Semaphore.acquire')
        return self._sem.acquire(blocking, _timeout(timeout) if blocking else None)

    def release(self):
        """Give one unit back; may be called from any thread."""
        rt = _runtime()
        if _get_ident() != rt._tid:
            rt._call_threadsafe(self._sem.release)
        else:
            self._sem.release()


class AsyncThreadPool:
    """Runs blocking functions in OS threads, so that coroutines wait for
    them without blocking each other.

    :param num_threads: how many threads (at least 1); they start at once.
    :raises ValueError: for fewer than 1.

    The threads do not hold up the interpreter's exit (as asyncoro's): a
    coroutine that runs while the program exits (after the main program's
    last line) can still use the pool, which a concurrent.futures executor
    refuses by then.

    Call form: ``result = yield pool.async_task(func, arg)``."""

    def __init__(self, num_threads):
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError('AsyncThreadPool needs num_threads >= 1, not %r' % (num_threads,))
        self._tasks = _SimpleQueue()        # (func, args, kwargs, report) or None: stop
        self._stopped = False
        self._ended = []                    # one lock per thread, released when it ends
        for i in range(num_threads):
            ended = _allocate_lock()
            ended.acquire()
            self._ended.append(ended)
            _start_new_thread(self._work, ('asyncoro-pool-%d' % i, ended))

    def _work(self, name, ended):
        threading.current_thread().name = name
        try:
            while True:
                task = self._tasks.get()
                if task is None:
                    return
                func, args, kwargs, report = task
                outcome = (False, RuntimeError('%s ended in the pool thread' % (func,)))
                try:
                    outcome = (True, func(*args, **kwargs))
                except Exception as exc:      # the task's: raised in the waiting coroutine
                    outcome = (False, exc)
                finally:
                    report(outcome)
        finally:
            ended.release()

    def async_task(self, target, *args, **kwargs):
        """Run ``target(*args, **kwargs)`` in a pool thread and wait for it.
        Blocks the calling coroutine only (called from a thread, blocks that
        thread).

        :returns: what `target` returns.
        :raises: what `target` raises; RuntimeError if the pool was stopped.
        """
        if self._stopped:
            raise RuntimeError('this AsyncThreadPool was stopped (join/terminate)')
        outcome = []
        rt = _runtime()
        if _get_ident() == rt._tid:
            done = gevent.event.Event()

            def report(result):      # in the pool thread: hand over to the hub thread
                outcome.append(result)
                rt._call_threadsafe(done.set)
            self._tasks.put((target, args, kwargs, report))
            done.wait()
        else:                        # a thread: block it
            done = _allocate_lock()
            done.acquire()

            def report(result):
                outcome.append(result)
                done.release()
            self._tasks.put((target, args, kwargs, report))
            done.acquire()
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def join(self):
        """For threads: wait until the queued tasks are done, and stop the
        pool."""
        self._stop()
        for ended in self._ended:
            ended.acquire()
            ended.release()

    def terminate(self):
        """For threads: drop queued tasks and stop the pool (a task running
        now runs to its end)."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except _Empty:
                break
            if task is not None:
                task[3]((False, RuntimeError('AsyncThreadPool terminated before %s ran'
                                             % (task[0],))))
        self._stop()

    def _stop(self):
        if not self._stopped:
            self._stopped = True
            for _ in self._ended:
                self._tasks.put(None)


class AsyncDBCursor:
    """A DB-API cursor whose queries run in a thread pool, one at a time per
    cursor. Other attributes are the wrapped cursor's.

    :param thread_pool: the AsyncThreadPool to run the queries in.
    :param cursor: the DB-API cursor.

    Call form: ``yield cur.execute(query, args)``, then ``cur.fetchall()``."""

    def __init__(self, thread_pool, cursor):
        self._pool = thread_pool
        self._cursor = cursor
        self._serial = gevent.lock.Semaphore(1)

    def _run(self, method, *args):
        with self._serial:
            return self._pool.async_task(method, *args)

    def execute(self, query, args=None):
        """The cursor's ``execute(query[, args])``, in the pool. Blocks the
        calling coroutine only.

        :returns: what the cursor's execute returns.
        """
        if args is None:
            return self._run(self._cursor.execute, query)
        return self._run(self._cursor.execute, query, args)

    def executemany(self, query, args):
        """The cursor's ``executemany(query, args)``, in the pool."""
        return self._run(self._cursor.executemany, query, args)

    def callproc(self, proc, args=()):
        """The cursor's ``callproc(proc, args)``, in the pool."""
        return self._run(self._cursor.callproc, proc, args)

    def __getattr__(self, name):
        return getattr(self._cursor, name)

