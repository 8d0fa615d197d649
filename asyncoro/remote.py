"""asyncoro.remote: what lives in another process, seen from this one.

What it owns: `_RemoteCoro` and `_RemoteChannel` (references to a coroutine
or channel of another runtime: they pickle as a reference and their methods
go over the network), `SysCoro` (system coroutines, named with '!'), `RCI`
(the Remote Coroutine Interface) and `PeerStatus` (what `peer_status`
receivers are told). asyncoro.disasyncoro makes them the package's.

How it works: unpickling a coroutine or channel reference calls the core's
factory for its kind (filled here); a reference to something of this very
process unpickles to the object itself. A reference's methods build frames
of the kinds in asyncoro.handlers and hand them to the runtime, which owns
the connections.
"""

import logging

from asyncoro import core, netio
from asyncoro.channel import Channel
from asyncoro.core import Coro, WrongContextError, _get_ident, _runtime
from asyncoro.netio import Location
from asyncoro.handlers import (CHANNEL_DELIVER, CHANNEL_SEND, CHANNEL_SUBSCRIBE,
                               CHANNEL_UNSUBSCRIBE, DELIVER, MONITOR, RCI_CALL, SEND, TERMINATE)

__all__ = ['PeerStatus', 'RCI', 'SysCoro']

log = logging.getLogger(__name__)

_msg_timeout = core._msg_timeout


class PeerStatus:
    """The message `peer_status` receivers get as peers come and go.

    :param location: the peer's Location.
    :param name: the peer runtime's name.
    :param status: ``PeerStatus.Online`` (1) or ``PeerStatus.Offline`` (0).

    The attributes are `location`, `name` and `status`. A receiver gets it
    with ``msg = yield coro.receive()``.
    """

    Offline, Online = 0, 1

    def __init__(self, location, name, status):
        self.location = location
        self.name = name
        self.status = status

    def __repr__(self):
        return '<PeerStatus %s %s %s>' % (self.name, self.location,
                                          'Online' if self.status else 'Offline')



class _RemoteCoro(Coro):
    """A Coro of another process: `send`, `deliver`, `terminate`, `monitor`
    (as the watched one), `name`, `location`, `==`, `hash` and pickling work;
    the rest is local only."""

    __slots__ = ('_where', '_rprefix', '_head', '_link')
    _remote = True

    def __init__(self, name, coro_id, location):     # not super().__init__: that would start a coroutine
        prefix = name[0] if name[:1] in ('~', '!') else '~'
        self._rprefix = prefix
        self._name = name[1:] if name[:1] in ('~', '!') else name
        self._id = coro_id
        self._rt = _runtime()
        self._where = self._rt.peer_table.intern(location)
        self._head = (SEND, coro_id, prefix + self._name)     # every send starts so
        self._link = None       # the _Peer it was last sent through (see send)

    @property
    def location(self):
        return self._where.copy()

    def __eq__(self, other):
        # as Coro's, without making two Locations: the scheduler looks a
        # job up by its remote coroutine in every job's end
        if self is other:
            return True
        if not isinstance(other, Coro) or self._id != other._id:
            return False
        where = self._where
        there = other._where if isinstance(other, _RemoteCoro) else other.location
        return where is there or where == there

    __hash__ = Coro.__hash__

    def __repr__(self):
        return '%s%s/%s@%s' % (self._rprefix, self._name, self._id, self._where)

    __str__ = __repr__

    def __reduce__(self):      # the same reference as Coro.__reduce__ gives
        where = self._where
        return (core._rebuild_coro, (self._head[2], self._id, where.addr, where.port))

    def _ref(self):
        return (self._id, self._rprefix + self._name)

    def send(self, message):
        # fast path: the peer it was sent through last time is still the
        # current one and connected, and we are in the hub thread
        peer = self._link
        rt = self._rt
        if peer is not None and _get_ident() == rt._tid:
            conn = peer.out
            if conn is not None and not peer.gone:
                try:
                    conn.send_request(self._head, message)
                    return 0
                except Exception:   # the slow path says what is wrong (or sends it)
                    pass
        result = rt.send_frame(self._where, self._head + (message,), self)
        self._link = rt.peer_table.get(self._where)
        return result

    def deliver(self, message, timeout=None):
        return self._rt.request(self._where, DELIVER, self._ref() + (message,), timeout,
                              on_timeout=0, on_failure=-1)

    def terminate(self):
        return self._rt.send_frame(self._where, (TERMINATE,) + self._ref())

    def throw(self, *args):
        log.warning('throw to %s refused: only local coroutines can be thrown at', self)
        return -1

    def notify(self, monitor):
        if not isinstance(monitor, Coro):
            return -1
        return self._rt.request(self._where, MONITOR, self._ref() + (monitor,), _msg_timeout(),
                              on_timeout=-1, on_failure=-1)

    def is_alive(self):
        log.warning('is_alive of remote coroutine %s is not known here', self)
        return None

    def _local_only(self, what):
        log.warning('%s() of remote coroutine %s is not possible', what, self)
        return None

    def value(self, timeout=None):
        return self._local_only('value')

    def finish(self, timeout=None):
        return self._local_only('finish')

    def register(self, name=None):
        log.warning('register of remote coroutine %s refused', self)
        return -1

    unregister = register

    def receive(self, timeout=None, alarm_value=None):
        raise WrongContextError('receive() of %s: only a coroutine itself can receive' % self)

    recv = receive

    def sleep(self, timeout=None, alarm_value=None):
        raise WrongContextError('sleep() of %s: only a coroutine itself can sleep' % self)

    suspend = sleep

    def resume(self, update=None):
        return -1 if self._local_only('resume') is None else 0

    wakeup = resume

    def set_daemon(self, flag=True):
        return -1

    def hot_swap(self, target, *args, **kwargs):
        return -1

    def hot_swappable(self, flag):
        return -1


class _RemoteChannel(Channel):
    """A Channel of another process: subscribe, unsubscribe, send and deliver
    go to its owner."""

    _remote = True

    def __init__(self, name, location):     # not Channel.__init__: that would add a local channel
        self._name = name
        self._where = location
        self._rt = _runtime()
        self._transform = None
        self._subscribers = {}

    @property
    def location(self):
        return self._where.copy()

    def __repr__(self):
        return '~%s@%s' % (self._name, self._where)

    __str__ = __repr__

    __reduce__ = Channel.__reduce__     # a reference by name and location, like any channel

    def subscribe(self, subscriber, timeout=None):
        if not isinstance(subscriber, (Coro, Channel)):
            return -1
        return self._rt.request(self._where, CHANNEL_SUBSCRIBE, (self._name, subscriber), timeout,
                              on_timeout=-1, on_failure=-1)

    def unsubscribe(self, subscriber, timeout=None):
        return self._rt.request(self._where, CHANNEL_UNSUBSCRIBE, (self._name, subscriber), timeout,
                              on_timeout=-1, on_failure=-1)

    def send(self, message):
        return self._rt.send_frame(self._where, (CHANNEL_SEND, self._name, message),
                                      what='message for channel %s' % self)

    def deliver(self, message, timeout=None, n=0):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return -1
        return self._rt.request(self._where, CHANNEL_DELIVER, (self._name, message, timeout, n),
                              None if timeout is None else timeout + _msg_timeout(),
                              on_timeout=0, on_failure=-1)

    def register(self):
        return -1

    unregister = register

    def set_transform(self, transform):
        return -1

    def close(self):
        log.warning('close of remote channel %s ignored', self)


_MAX_REFERENCES = 1024
_LOCATIONS = {}         # (addr, port) -> the Location the references made lately share


def _remote_coro(name, coro_id, addr, port):
    """The factory of coroutine references (see core._rebuild_coro). It
    keeps the references it makes in core._REFERENCES (emptied when full): a
    coroutine named again in a later message is then the same object, which
    knows the peer it was last sent through, so that answering it takes the
    fast path of _RemoteCoro.send."""
    where = _LOCATIONS.get((addr, port))
    if where is None:
        where = Location(addr, port)
    ref = _RemoteCoro(name, coro_id, where)
    references = core._REFERENCES
    if len(references) >= _MAX_REFERENCES:
        references.clear()
        _LOCATIONS.clear()
    _LOCATIONS[(addr, port)] = where
    references[(coro_id, addr, port)] = (name, ref._rt, ref)
    return ref


core._REMOTE_FACTORIES['coro'] = _remote_coro
core._REMOTE_FACTORIES['channel'] = _RemoteChannel
for _kind in (_RemoteCoro, _RemoteChannel, Channel):     # they pickle as references
    netio.plain_type(_kind)
del _kind


class SysCoro(Coro):
    """A system coroutine: a Coro named with '!' that starts as a daemon.

    Made as Coro is. Its `register`, `unregister` and `locate` use names of
    their own: ``SysCoro.locate(name)`` finds it, ``Coro.locate(name)``
    never does.
    """

    __slots__ = ()
    _prefix = '!'
    _start_daemon = True
    _registry_kind = 'syscoro'     # register, unregister and locate use it


netio.plain_type(SysCoro)


class RCI:
    """Remote Coroutine Interface: other processes start coroutines of it.

    It publishes a generator function.

    :param method: the generator function.
    :param name: the name to register under; None: ``method.__name__``.
    :raises RuntimeError: if `method` is not a generator function.

    The process that made it calls :meth:`register`; another finds it with
    ``rci = yield RCI.locate('name')`` and starts a coroutine with
    ``rcoro = yield rci(*args, **kwargs)``. An RCI pickles as a reference.
    """

    def __init__(self, method, name=None):
        if method is not None and not core._inspect_target(method)[0]:
            raise RuntimeError('RCI method %r must be a generator function' % (method,))
        self._method = method
        self._name = name or method.__name__
        self._where = _runtime().location

    @property
    def method(self):
        """The generator function it publishes (None in a reference to an
        RCI of another process)."""
        return self._method

    @property
    def name(self):
        """The name it is registered under."""
        return self._name

    @property
    def location(self):
        """The Location of the runtime whose coroutines it starts."""
        return self._where.copy()

    def __repr__(self):
        return '<RCI %s@%s>' % (self._name, self._where)

    def __eq__(self, other):
        return isinstance(other, RCI) and (self._name, self._where) == (other._name, other._where)

    def __hash__(self):
        return hash((self._name, self._where))

    def __reduce__(self):
        return (_rebuild_rci, (self._name, self._where))

    def register(self):
        """Register it under its name, for :meth:`RCI.locate`.

        :returns: 0; -1 if something else holds that name (with a WARNING),
            or this is a reference to another process's RCI.
        """
        if self._method is None:
            return -1
        rt = _runtime()
        return rt._run_here(rt._register, 'rci', self._name, self)

    def unregister(self):
        """Withdraw its registration.

        :returns: 0; -1 if it is not registered.
        """
        rt = _runtime()
        return rt._run_here(rt._unregister, 'rci', self._name, self)

    @staticmethod
    def locate(name, location=None, timeout=None):
        """Find the RCI registered as `name`.

        :param location: the Location of the runtime to ask; None: every
            peer (also peers that appear while it waits), not this process.
        :param timeout: seconds to wait at most; None: no limit.
        :returns: the RCI; None on timeout or if `location` cannot be
            reached.

        Blocks the calling coroutine only. Call form:
        ``rci = yield RCI.locate('name')``.
        """
        rt = _runtime()
        return rt._run_here(rt._locate, 'rci', name, location, timeout, False)

    def __call__(self, *args, **kwargs):
        """Start a coroutine of the method at the RCI's runtime.

        The coroutine is ``method(*args, **kwargs)``.

        :returns: the coroutine (a reference, if it runs in another
            process); None if the runtime cannot be reached or does not
            answer within MsgTimeout.
        :raises Exception: with the runtime's message, if it could not start
            the coroutine there (a plain Exception, as in asyncoro 4.5).

        Blocks the calling coroutine until the runtime answers. Call form:
        ``rcoro = yield rci(*args, **kwargs)``.
        """
        rt = _runtime()
        if self._method is not None and self._where == rt.location:
            return Coro(self._method, *args, **kwargs)
        result = rt.request(self._where, RCI_CALL, (self._name, args, kwargs), _msg_timeout(),
                          on_timeout=None, on_failure=None)
        if result is None:
            return None
        ok, value = result
        if not ok:
            raise Exception(value)      # asyncoro 4.5 raises a plain Exception here
        return value


def _rebuild_rci(name, location):
    rci = RCI(None, name)
    rci._where = location
    return rci

