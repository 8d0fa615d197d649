"""asyncoro.failure: how a failure travels, and how background work starts.

What it owns: `AsyncoroError` (the base of this package's exceptions),
`Failure` (the one internal form of a failure: what failed, where, why, and
the traceback text of the process it happened in; `NoAnswer` when a peer
gave none) and `spawn`/`spawn_later`
(the one way the package starts work in a greenlet of its own) and
`in_thread` (the one way it runs work that blocks a thread, off the hub). It
imports nothing of the package, so every module can use it.

How it works:

- A failure is a `Failure` from the moment it happens until it reaches a
  public edge: a request that fails is answered with one, a greenlet that
  dies leaves one to whoever waits, a node that refuses a computation says
  why with one. Only at the edge that asyncoro 4.5's API fixes does it turn
  into `-1`, `None`, an error tuple or a `MonitorException`, and it is
  logged there (or where it is dropped), once.
- `spawn(func, ...)` runs `func` in a new greenlet of the calling thread's
  hub. If `func` raises, the exception is logged once at ERROR with its
  traceback (that is a bug of ours: every expected failure is handled where
  it happens), and `fail` (when given) is called with a `Failure` naming
  what died, so that whoever waits on that work is told instead of waiting
  forever. gevent's own printing of the error is never reached.
"""

import logging
import traceback

import gevent
# imported now, not on first use: a program's coroutines may first need the
# thread pool at its exit (after its last line), when that import can no
# longer register its own exit hook
import gevent.threadpool  # noqa: F401

__all__ = []

log = logging.getLogger(__name__)


class AsyncoroError(Exception):
    """Base of the errors this package raises itself."""


class Failure(AsyncoroError):
    """What failed, where and why. ``str()`` gives one line; it pickles by
    value, so a peer can send it.

    :param what: the operation or object ('job compute', 'reserve node
        127.0.0.1').
    :param reason: one line of text.
    :param where: the place: a Location or a description; may be None.
    :param traceback: the traceback text from the process where it
        happened, or None.
    :param error: the exception type when one was raised there, or None.
    """

    def __init__(self, what, reason, where=None, traceback=None, error=None):
        super().__init__(what, reason, where, traceback, error)
        self.what = what
        self.reason = reason
        self.where = where
        self.traceback = traceback
        self.error = error

    def __str__(self):
        place = ' at %s' % (self.where,) if self.where is not None else ''
        return '%s%s: %s' % (self.what, place, self.reason)

    def __repr__(self):
        return '<Failure %s>' % self

    @classmethod
    def from_exception(cls, what, exc, where=None):
        """The Failure of `exc`, raised here while doing `what`; it keeps the
        traceback text, to send it to the process that asked.

        :returns: a Failure (`exc` itself if it is one).
        """
        if isinstance(exc, Failure):
            return exc
        text = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(what, '%s: %s' % (type(exc).__name__, exc), where, text, type(exc))


class NoAnswer(Failure):
    """The Failure of a request that got no answer: the peer went away,
    cannot be reached, or did not answer in time (unlike a refusal, which
    is an answer)."""


def _run(func, args, kwargs, fail):
    try:
        return func(*args, **kwargs)
    except Exception as exc:    # the edge of background work: log once, tell the waiter
        name = getattr(func, '__qualname__', None) or repr(func)
        log.error('%s failed; this is a bug of asyncoro', name, exc_info=True)
        if fail is not None:
            fail(Failure.from_exception(name, exc))
        return None


def spawn(func, *args, fail=None, **kwargs):
    """Run ``func(*args, **kwargs)`` in a new greenlet of this thread's hub.
    An exception it lets out is logged once (ERROR, with the traceback).

    :param fail: called with the Failure of such an exception (pass an
        AsyncResult's ``set`` to wake its waiter).
    :returns: the greenlet.
    """
    return gevent.spawn(_run, func, args, kwargs, fail)


def run_guarded(func, *args, **kwargs):
    """`spawn` without the greenlet: run ``func(*args, **kwargs)`` now, in
    this greenlet (a hub callback's work that never blocks). An exception it
    lets out is logged once (ERROR, with the traceback), not raised.

    :returns: what `func` returns; None if it raised.
    """
    try:        # (_run's edge, written out: every inline operation and answer comes here)
        return func(*args, **kwargs)
    except Exception:
        log.error('%s failed; this is a bug of asyncoro',
                  getattr(func, '__qualname__', None) or repr(func), exc_info=True)
        return None


def in_thread(func, *args):
    """``func(*args)`` in the hub's thread pool, for work that blocks a
    thread (disk I/O, reading /proc); the calling greenlet waits, the hub
    goes on.

    :returns: what `func` returns.
    :raises: what `func` raises, here (not in the pool, which would print it).
    """
    ok, value = gevent.get_hub().threadpool.apply(_caught, (func, args))
    if not ok:
        raise value
    return value


def _caught(func, args):
    try:
        return True, func(*args)
    except Exception as exc:        # raised again in the greenlet that waits (in_thread)
        return False, exc


def spawn_later(seconds, func, *args, fail=None, **kwargs):
    """`spawn`, `seconds` from now.

    :returns: the greenlet.
    """
    return gevent.spawn_later(seconds, _run, func, args, kwargs, fail)
