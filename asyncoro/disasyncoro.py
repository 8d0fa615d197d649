"""asyncoro.disasyncoro: the distributed layer.

`import asyncoro.disasyncoro as asyncoro` gives every core name plus the
distributed `AsynCoro`, `PeerStatus`, `RCI`, `SysCoro`, `MsgTimeout` and
`MaxConnectionErrors`; importing it also makes these the top-level package's
(`asyncoro.AsynCoro` is then the distributed runtime).

What it owns: the peer table, remote references (`Coro`, `Channel` and `RCI`
objects that live in another process: pickled as references, their methods
go over the network), the request handlers, locate across peers, discovery,
and file transfer.

How it works:

- One runtime per process: one TCP listener (`Location(node, tcp_port)`) and
  one UDP discovery socket. All sockets are served by greenlets of the
  runtime's hub (netio does the framing, authentication and TLS).
- Frames from this runtime to a peer always go through the one connection
  this runtime opened to it (opened on demand, kept open), so everything sent
  from one process to another arrives in order. A connection the peer opened
  carries only the peer's frames to us.
- A frame is a pickled tuple `(kind, ...)`; `_HANDLERS[kind]` handles it.
  Requests that want an answer carry a request id; the answer comes back as a
  `REPLY` frame and wakes the waiting greenlet (`_call`).
- Discovery: a signed JSON ping broadcast only on the bound address's own
  network (127.255.255.255 when bound to 127.0.0.1). Who hears a ping from a
  runtime it does not know connects to it; the connection's first frame
  (`INFO`) introduces the connecting runtime.
- Liveness while the hub is stuck: a user coroutine that computes without
  yielding (or calls time.sleep) holds the hub. A timer of the hub marks each
  turn (`_beat`); a guard thread that sees no mark for STALL seconds reads
  the connections itself, queues messages for their coroutines, acknowledges
  `deliver`s and hands every other request to the hub for when it is back.
  The hub runs what was handed to it before the next frame it reads, so the
  order of each connection's frames is kept.
"""

import errno
import itertools
import logging
import os
import select
import socket
import tempfile
import time

import gevent
import gevent.event

import asyncoro
from asyncoro import (AsyncSocket, AsynCoroSocket, AsyncThreadPool, AsyncDBCursor,  # noqa: F401
                      CategorizeMessages, Channel, Condition, Coro, Event,
                      HotSwapException, Location, Lock, Logger, MonitorException, RLock,
                      Semaphore, Singleton, deserialize, logger, serialize, unserialize,
                      AsyncoroError, WrongContextError, _current_coro, _get_ident,
                      _REMOTE_FACTORIES, _runtime)
from asyncoro import netio

__all__ = asyncoro.__all__ + ['PeerStatus', 'RCI', 'SysCoro', 'MsgTimeout',
                              'MaxConnectionErrors']

log = logging.getLogger(__name__)

MsgTimeout = asyncoro.MsgTimeout
MaxConnectionErrors = 10
DEFAULT_UDP_PORT = 51350


# the guard: how often the hub marks a turn, and after how long without one the
# guard thread serves the connections
BEAT = 0.05
STALL = 0.25
_sleep = asyncoro._get_original('time', 'sleep')


def _msg_timeout():
    # programs assign asyncoro.MsgTimeout on this module (or the package)
    return globals()['MsgTimeout']


# request kinds: the first element of every frame
INFO = 'info'               # first frame on a connection: who is connecting
INFO_ACK = 'info-ack'       # the answer on that connection: who was reached
SEND = 'send'               # message to a coroutine
DELIVER = 'deliver'         # message to a coroutine, acknowledged
REPLY = 'reply'             # the answer to a request that carried a request id
TERMINATE = 'terminate'
MONITOR = 'monitor'
LOCATE = 'locate'
CHANNEL_SUBSCRIBE = 'ch-sub'
CHANNEL_UNSUBSCRIBE = 'ch-unsub'
CHANNEL_SEND = 'ch-send'
CHANNEL_DELIVER = 'ch-deliver'
RCI_CALL = 'rci'
FILE_BEGIN = 'file-begin'
FILE_CHUNK = 'file-chunk'
FILE_END = 'file-end'
DEL_FILE = 'del-file'
BYE = 'bye'                 # the peer is closing its side deliberately

_HANDLERS = {}      # kind -> handler(runtime, connection, request)


def handler(kind):
    def register(func):
        _HANDLERS[kind] = func
        return func
    return register


_FAILED = object()          # a request whose peer went away: the caller gets its failure value


class PeerStatus:
    """Sent to `peer_status` receivers as peers come (Online) and go (Offline)."""

    Offline, Online = 0, 1

    def __init__(self, location, name, status):
        self.location = location
        self.name = name
        self.status = status

    def __repr__(self):
        return '<PeerStatus %s %s %s>' % (self.name, self.location,
                                          'Online' if self.status else 'Offline')


# ---------------------------------------------------------------- remote references

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
        self._where = self._rt._intern(location)
        self._head = (SEND, coro_id, prefix + self._name)     # every send starts so
        self._link = None       # the _Peer it was last sent through (see send)

    @property
    def location(self):
        return Location(self._where.addr, self._where.port)

    def __repr__(self):
        return '%s%s/%s@%s' % (self._rprefix, self._name, self._id, self._where)

    __str__ = __repr__

    def __reduce__(self):
        return (asyncoro._rebuild_coro, (self._rprefix + self._name, self._id, self._where))

    def _ref(self):
        return (self._id, self._rprefix + self._name)

    def send(self, message):
        # fast path: the peer it was sent through last time is still the
        # current one and connected, and we are in the hub thread
        peer = self._link
        rt = self._rt
        if peer is not None and peer.out is not None and not peer.gone and \
                _get_ident() == rt._tid:
            try:
                payload = netio.dumps(self._head + (message,))
            except Exception:       # the slow path says what is wrong with it
                return rt._send_request(self._where, self._head + (message,), self)
            if len(payload) <= rt._max_frame_size:
                peer.out.send(payload)
                return 0
        result = rt._send_request(self._where, self._head + (message,), self)
        self._link = rt._peers.get(self._where)
        return result

    def deliver(self, message, timeout=None):
        return self._rt._call(self._where, DELIVER, self._ref() + (message,), timeout,
                              on_timeout=0, on_failure=-1)

    def terminate(self):
        return self._rt._send_request(self._where, (TERMINATE,) + self._ref())

    def throw(self, *args):
        log.warning('throw to %s refused: only local coroutines can be thrown at', self)
        return -1

    def notify(self, monitor):
        if not isinstance(monitor, Coro):
            return -1
        return self._rt._call(self._where, MONITOR, self._ref() + (monitor,), _msg_timeout(),
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
        return Location(self._where.addr, self._where.port)

    def __repr__(self):
        return '~%s@%s' % (self._name, self._where)

    __str__ = __repr__

    def __reduce__(self):
        return (asyncoro.channel._rebuild_channel, (self._name, self._where))

    def subscribe(self, subscriber, timeout=None):
        if not isinstance(subscriber, (Coro, Channel)):
            return -1
        return self._rt._call(self._where, CHANNEL_SUBSCRIBE, (self._name, subscriber), timeout,
                              on_timeout=-1, on_failure=-1)

    def unsubscribe(self, subscriber, timeout=None):
        return self._rt._call(self._where, CHANNEL_UNSUBSCRIBE, (self._name, subscriber), timeout,
                              on_timeout=-1, on_failure=-1)

    def send(self, message):
        return self._rt._send_request(self._where, (CHANNEL_SEND, self._name, message),
                                      what='message for channel %s' % self)

    def deliver(self, message, timeout=None, n=0):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return -1
        return self._rt._call(self._where, CHANNEL_DELIVER, (self._name, message, timeout, n),
                              None if timeout is None else timeout + _msg_timeout(),
                              on_timeout=0, on_failure=-1)

    def register(self):
        return -1

    unregister = register

    def set_transform(self, transform):
        return -1

    def close(self):
        log.warning('close of remote channel %s ignored', self)


_REMOTE_FACTORIES['coro'] = _RemoteCoro
_REMOTE_FACTORIES['channel'] = _RemoteChannel


class SysCoro(Coro):
    """A system coroutine: named with '!', a daemon, found by SysCoro.locate
    (never by Coro.locate)."""

    __slots__ = ()
    _prefix = '!'
    _start_daemon = True
    _registry_kind = 'syscoro'

    def register(self, name=None):
        return self._rt._run_here(self._rt._register, 'syscoro', name or self._name, self)

    def unregister(self, name=None):
        return self._rt._run_here(self._rt._unregister, 'syscoro', name or self._name, self)


class RCI:
    """Remote Coroutine Interface: `RCI(method, name=None)` publishes a
    generator function so that other processes can start coroutines of it:
    `rci = yield RCI.locate('name')`; `rcoro = yield rci(*args, **kwargs)`."""

    def __init__(self, method, name=None):
        if method is not None and not asyncoro._inspect_target(method)[0]:
            raise RuntimeError('RCI method %r must be a generator function' % (method,))
        self._method = method
        self._name = name or method.__name__
        self._where = _runtime().location

    @property
    def name(self):
        return self._name

    @property
    def location(self):
        return Location(self._where.addr, self._where.port)

    def __repr__(self):
        return '<RCI %s@%s>' % (self._name, self._where)

    def __eq__(self, other):
        return isinstance(other, RCI) and (self._name, self._where) == (other._name, other._where)

    def __hash__(self):
        return hash((self._name, self._where))

    def __reduce__(self):
        return (_rebuild_rci, (self._name, self._where))

    def register(self):
        """Publish under its name; -1 if that name is taken."""
        if self._method is None:
            return -1
        rt = _runtime()
        return rt._run_here(rt._register, 'rci', self._name, self)

    def unregister(self):
        rt = _runtime()
        return rt._run_here(rt._unregister, 'rci', self._name, self)

    @staticmethod
    def locate(name, location=None, timeout=None):
        """Ask `location`, or every peer, for an RCI registered as `name`."""
        rt = _runtime()
        return rt._run_here(rt._locate, 'rci', name, location, timeout, False)

    def __call__(self, *args, **kwargs):
        """Start the coroutine at the RCI's host; returns it (a remote Coro).
        Raises Exception with the host's message if it fails there; None if
        no answer came."""
        rt = _runtime()
        if self._method is not None and self._where == rt.location:
            return Coro(self._method, *args, **kwargs)
        result = rt._call(self._where, RCI_CALL, (self._name, args, kwargs), _msg_timeout(),
                          on_timeout=None, on_failure=None)
        if result is None:
            return None
        ok, value = result
        if not ok:
            raise Exception(value)      # API.md §4.3: the original raises Exception
        return value


def _rebuild_rci(name, location):
    rci = RCI(None, name)
    rci._where = location
    return rci


# ---------------------------------------------------------------- peers

class _Peer:
    """What this runtime knows of another one."""

    __slots__ = ('location', 'name', 'out', 'incoming', 'pending', 'connecting', 'errors',
                 'online', 'requests', 'stream_send', 'ready', 'gone')

    def __init__(self, location):
        self.location = location
        self.name = None
        self.out = None             # our Connection to it: everything we send goes here
        self.incoming = set()       # Connections it opened to us
        self.pending = []           # frames queued while `out` is being opened
        self.connecting = None      # the greenlet opening `out`
        self.errors = 0             # consecutive failures to connect
        self.online = False
        self.requests = set()       # ids of our requests it has not answered
        self.stream_send = False
        self.ready = gevent.event.Event()       # set when it is online
        self.gone = False                       # removed from the peer table


def _default_node():
    """The address to bind to: $ASYNCORO_NODE, else the first IPv4 address of
    an interface that is up and has a broadcast address, else 127.0.0.1."""
    node = os.environ.get('ASYNCORO_NODE')
    if node:
        return node
    try:
        import psutil
        stats = psutil.net_if_stats()
        for ifname, addrs in psutil.net_if_addrs().items():
            if not stats.get(ifname) or not stats[ifname].isup:
                continue
            for entry in addrs:
                if (entry.family == socket.AF_INET and entry.broadcast and
                        not entry.address.startswith('127.')):
                    return entry.address
    except (ImportError, OSError):    # no interface table: loopback is always there
        pass
    return '127.0.0.1'


def _env_port(name, default):
    """The port number in $`name`, else `default`."""
    value = os.environ.get(name)
    if not value:
        return default
    port = int(value) if value.isdecimal() else 0
    if not 0 < port < 65536:
        raise ValueError('%s=%r is not a port number (1-65535)' % (name, value))
    return port


def _resolve(host):
    return Location(host, 0).addr


class AsynCoro(asyncoro.AsynCoro):
    """The distributed runtime: the core runtime plus a TCP listener, UDP
    discovery, peers, remote references and file transfer. A singleton: the
    first construction wins (later calls return it and ignore their
    arguments). $ASYNCORO_NODE, $ASYNCORO_SECRET and $ASYNCORO_UDP_PORT give
    the defaults of `node`, `secret` and `udp_port` (51350).

    Raises OSError with the address if the TCP port cannot be bound."""

    def __init__(self, udp_port=0, tcp_port=0, node=None, ext_ip_addr=None, socket_family=None,
                 name=None, discover_peers=True, secret='', certfile=None, keyfile=None,
                 notifier=None, dest_path=None, max_file_size=None,
                 max_frame_size=netio.DEFAULT_MAX_FRAME_SIZE):
        node = _resolve(node or _default_node())
        self._udp_port = udp_port or _env_port('ASYNCORO_UDP_PORT', DEFAULT_UDP_PORT)
        if secret == '' or secret is None:
            secret = os.environ.get('ASYNCORO_SECRET', '')
        self._key = netio.secret_key(secret)
        self._certfile, self._keyfile = certfile, keyfile
        self._max_frame_size = max_frame_size
        self.max_file_size = max_file_size or 0
        family = socket_family or (socket.AF_INET6 if ':' in node else socket.AF_INET)
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((node, tcp_port))
        except OSError as exc:
            listener.close()
            raise OSError(exc.errno, 'cannot listen on %s:%s: %s' % (node, tcp_port, exc.strerror)) \
                from exc
        listener.listen(128)
        self._node = node
        self._location = Location(ext_ip_addr or node, listener.getsockname()[1])
        self._root_dest = os.path.abspath(dest_path or os.path.join(tempfile.gettempdir(), 'asyncoro'))
        os.makedirs(self._root_dest, exist_ok=True)
        self._dest_path = self._root_dest
        self._peers = {}                # Location -> _Peer
        self._replies = {}              # request id -> gevent AsyncResult
        self._request_ids = itertools.count(1)
        self._status_receivers = []
        self._locators = []             # (kind, name, AsyncResult) of locate()s asking all peers
        self._ignore_peers = False
        self._discover = discover_peers
        self._files = {}                # transfer id -> (file object, target, temp path, meta)
        self._connections = set()       # every live Connection (the guard reads them)
        self._beat = time.monotonic()   # the hub's last turn
        self._closing = False
        super().__init__(name=name or str(self._location))
        self._run_here(self._start_network, listener)
        log.debug('runtime %s at %s (udp %s)', self._name, self._location, self._udp_port)

    # ------------------------------------------------ properties

    @property
    def location(self):
        return self._location

    @property
    def dest_path(self):
        return self._dest_path

    @dest_path.setter
    def dest_path(self, path):
        path = os.path.abspath(os.path.join(self._root_dest, path))
        if os.path.commonpath([self._root_dest, path]) != self._root_dest:
            drive, rest = os.path.splitdrive(path)
            path = os.path.join(self._root_dest, rest.lstrip(os.sep + (os.altsep or '')))
        os.makedirs(path, exist_ok=True)
        self._dest_path = path

    def peers(self):
        """The Locations of the peers known now."""
        return [loc for loc, peer in self._peers.items() if peer.online]

    # ------------------------------------------------ network start

    def _start_network(self, listener):
        self._listener = AsyncSocket(listener)
        gevent.spawn(self._accept_loop)
        self._udp = None
        try:
            self._udp = netio.udp_socket(self._udp_port)
        except OSError as exc:
            log.warning('discovery disabled: cannot bind udp port %s: %s', self._udp_port, exc)
        if self._udp is not None:
            gevent.spawn(self._udp_loop)
            if self._discover:
                self.discover_peers()
        self._beat_timer = self._loop.timer(BEAT, BEAT)
        self._beat_timer.start(self._mark_beat)
        asyncoro._start_new_thread(self._guard_main, ())

    def _mark_beat(self):
        self._beat = time.monotonic()

    def _accept_loop(self):
        while not self._closing:
            try:
                sock, addr = self._listener.accept()
            except OSError as exc:
                if self._closing:
                    return
                log.warning('accept on %s failed: %s', self._location, exc)
                gevent.sleep(0.1)
                continue
            gevent.spawn(self._serve_incoming, sock, addr)

    def _serve_incoming(self, sock, addr):
        peer = '%s:%s' % addr[:2]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            netio.accept(sock, self._key, _msg_timeout(), self._certfile, self._keyfile)
        except (OSError, netio.PeerError) as exc:
            log.warning('peer %s refused: %s', peer, exc)
            sock.close()
            return
        self._open(sock, peer, None)

    def _open(self, sock, peer, location):
        conn = netio.Connection(sock, peer, self._max_frame_size, self._on_frame,
                                self._on_connection_closed)
        conn.info = location
        self._connections.add(conn)
        conn.start()
        return conn

    # ------------------------------------------------ frames in

    def _on_frame(self, conn, payload):
        if self._xq:
            self._drain_foreign()       # what the guard handed over comes first
        try:
            request = netio.loads(payload)
            kind = request[0]
            handle = _HANDLERS.get(kind)
        except Exception as exc:      # anything a malformed frame raises while unpickling
            log.warning('malformed frame from %s (%s: %s); connection closed',
                        conn.peer, type(exc).__name__, exc)
            conn.close('malformed frame')
            return
        if handle is None or conn.info is None:
            self._dispatch(conn, request, kind)     # says what is wrong, or INFO
            return
        try:
            handle(self, conn, request)
        except Exception:     # our bug in a handler: log it, keep the connection
            log.error('handling %s from %s failed', kind, conn.peer, exc_info=True)

    def _dispatch(self, conn, request, kind):
        if conn.closed:
            return
        try:
            handle = _HANDLERS.get(kind)
        except TypeError:      # an unhashable "kind"
            handle = None
        if handle is None or (conn.info is None and kind != INFO):
            log.warning('unexpected request %.40r from %s; connection closed', kind, conn.peer)
            conn.close('unexpected request')
            return
        try:
            handle(self, conn, request)
        except Exception:     # our bug in a handler: log it, keep the connection
            log.error('handling %s from %s failed', kind, conn.peer, exc_info=True)

    def _reply(self, conn, request_id, value):
        self._send_request(conn.info, (REPLY, request_id, value), what='reply')

    # ------------------------------------------------ frames out

    def _intern(self, location):
        """The Location object the peer table uses for `location` (so that
        lookups by it hit on identity), or `location` itself."""
        peer = self._peers.get(location)
        return peer.location if peer is not None else location

    def _peer(self, location):
        peer = self._peers.get(location)
        if peer is None:
            peer = self._peers[location] = _Peer(location)
        return peer

    def _send_request(self, location, request, what='request'):
        """Queue `request` for the peer at `location` (connecting on demand).
        Returns 0, or -1 if it cannot be pickled or sent. Any thread.
        `what` names the request in messages (a remote coroutine stands for
        'message for <it>'); this is the path of every remote send."""
        if _get_ident() != self._tid:
            return self._run_here(self._send_request, location, request, what)
        peer = self._peers.get(location)
        if peer is None and location == self._location:
            log.warning('%s for this runtime itself (%s) dropped: the coroutine or channel is '
                        'gone', _what(what), location)
            return -1
        try:
            payload = netio.dumps(request)
        except Exception as exc:      # whatever pickling raises: the caller's data is at fault
            if isinstance(request[-1], MonitorException):
                return self._send_request(location, request[:-1] + (_picklable_monitor(request[-1]),),
                                          what)
            log.warning('%s to %s cannot be pickled: %s: %s', _what(what), location,
                        type(exc).__name__, exc)
            return -1
        if len(payload) > self._max_frame_size:
            log.warning('%s to %s is %d bytes, more than max_frame_size=%d; not sent',
                        _what(what), location, len(payload), self._max_frame_size)
            return -1
        if peer is None:
            peer = self._peer(location)
        if peer.out is not None:
            peer.out.send(payload)
        else:
            peer.pending.append(payload)
            if peer.connecting is None:
                peer.connecting = gevent.spawn(self._connect, peer)
        return 0

    def _connect(self, peer):
        """Open our connection to `peer`, introduce ourselves, send what was
        queued meanwhile."""
        location = peer.location
        try:
            sock = netio.connect((location.addr, location.port), self._key, _msg_timeout(),
                                 self._certfile, self._keyfile)
        except (OSError, netio.PeerError) as exc:
            peer.connecting = None
            peer.errors += 1
            # requests that wait for an answer fail to their callers; messages
            # that nobody waits for, and a peer with another secret, are worth
            # a warning (a peer that just went away is not)
            lost = len(peer.pending) - len(peer.requests)
            peer.pending = []
            log.log(logging.WARNING if lost > 0 or isinstance(exc, netio.AuthError)
                    else logging.DEBUG,
                    'cannot reach peer %s (%s)%s', location, exc,
                    '; %d queued messages dropped' % lost if lost > 0 else '')
            self._fail_requests(peer)
            if peer.online and peer.errors >= MaxConnectionErrors:
                self._set_offline(peer)
            elif not peer.online and not peer.incoming:
                self._forget(peer)
            return
        conn = self._open(sock, str(location), location)
        conn.send(netio.dumps((INFO, self._location, self._name, asyncoro.__version__)))
        for payload in peer.pending:
            conn.send(payload)
        peer.pending = []
        peer.out = conn
        peer.connecting = None
        peer.errors = 0          # online when its INFO_ACK tells us its name

    def _on_connection_closed(self, conn, reason):
        self._connections.discard(conn)
        location = conn.info
        peer = self._peers.get(location) if location is not None else None
        if peer is None:
            return
        if peer.out is conn:
            peer.out = None
            self._fail_requests(peer)
        peer.incoming.discard(conn)
        for transfer in [t for t, entry in self._files.items() if entry[4] is conn]:
            log.warning('file transfer %s from %s cut off (%s); partial file removed',
                        transfer, location, reason)
            _drop_transfer(self, transfer)
        log.debug('connection %s closed: %s', conn, reason)
        if peer.out is None and not peer.incoming and peer.connecting is None:
            self._set_offline(peer)

    def _fail_requests(self, peer):
        for request_id in list(peer.requests):
            waiter = self._replies.get(request_id)
            if waiter is not None and not waiter.ready():
                waiter.set(_FAILED)
        peer.requests.clear()

    def _call(self, location, kind, fields, timeout, on_timeout, on_failure):
        """Send a request that wants an answer and wait for it (blocks the
        calling greenlet). Returns the answer, `on_timeout` after `timeout`
        seconds, `on_failure` if the peer cannot be reached. Any thread."""
        if _get_ident() != self._tid:
            return self._run_here(self._call, location, kind, fields, timeout, on_timeout,
                                  on_failure)
        request_id = next(self._request_ids)
        waiter = self._replies[request_id] = gevent.event.AsyncResult()
        peer = self._peer(location) if location != self._location else None
        try:
            if peer is None or self._send_request(location, (kind, request_id) + fields,
                                                  what=kind) < 0:
                return on_failure
            peer.requests.add(request_id)
            try:
                answer = waiter.get(timeout=timeout)
            except gevent.Timeout:
                return on_timeout
            return on_failure if answer is _FAILED else answer
        finally:
            self._replies.pop(request_id, None)
            if peer is not None:
                peer.requests.discard(request_id)

    # ------------------------------------------------ the guard thread

    def _guard_main(self):
        """Serve the connections while the hub is stalled (see the module
        docstring). A real OS thread; it touches hub objects only through
        Connection.guard_* (under the connection's lock) and
        _call_threadsafe."""
        while not self._closing:
            _sleep(BEAT)
            if time.monotonic() - self._beat < STALL:
                continue
            conns = [c for c in list(self._connections) if not c.closed]
            for conn in conns:
                failed = conn.guard_flush()
                if failed:
                    self._call_threadsafe(conn.close, failed)
            try:
                readable = select.select(conns, [], [], BEAT)[0] if conns else []
            except (OSError, ValueError):      # a connection closed under us: next round
                continue
            for conn in readable:
                failed = conn.guard_read(self._on_guard_frame)
                if failed:
                    self._call_threadsafe(conn.close, failed)

    def _on_guard_frame(self, conn, payload):
        """A frame read by the guard thread: messages are queued for their
        coroutines and `deliver`s acknowledged now; the rest waits for the hub."""
        try:
            request = netio.loads(payload)
            kind = request[0]
        except Exception:      # malformed: the hub logs it and closes the connection
            self._call_threadsafe(self._on_frame, conn, payload)
            return
        if kind == SEND or kind == DELIVER:
            coro_id, name, message = request[-3:]
            coro = _local_coro(self, coro_id, name)
            alive = coro is not None and coro.is_alive()
            if alive:
                self._call_threadsafe(coro._send_here, message)
            elif kind == SEND:
                self._call_threadsafe(_handle_send, self, conn, request)    # it logs the drop
            if kind == DELIVER:
                reply = netio.dumps((REPLY, request[1], 1 if alive else -1))
                peer = self._peers.get(conn.info)
                if peer is None or peer.out is None or not peer.out.guard_send(reply):
                    self._call_threadsafe(self._reply, conn, request[1], 1 if alive else -1)
            return
        self._call_threadsafe(self._dispatch, conn, request, kind)

    # ------------------------------------------------ peer status

    def _set_online(self, peer, name):
        if name:
            peer.name = name
        if peer.online:
            return
        peer.online = True
        peer.ready.set()
        peer.errors = 0
        log.debug('peer %s (%s) online', peer.location, peer.name)
        self._announce(peer, PeerStatus.Online)
        for kind, name, waiter in list(self._locators):
            gevent.spawn(self._ask, peer.location, kind, name, waiter)

    def _forget(self, peer):
        peer.gone = True
        if self._peers.get(peer.location) is peer:
            del self._peers[peer.location]

    def _set_offline(self, peer):
        self._forget(peer)
        for conn in [peer.out] + list(peer.incoming):
            if conn is not None:
                conn.close('peer offline')
        self._fail_requests(peer)
        if peer.online:
            peer.online = False
            log.debug('peer %s (%s) offline', peer.location, peer.name)
            self._announce(peer, PeerStatus.Offline)
            for channel in list(self._channels.values()):
                for sub in [s for s in channel._subscribers
                            if getattr(s, '_remote', False) and s.location == peer.location]:
                    channel._subscribers.pop(sub, None)

    def _ended(self, coro):
        super()._ended(coro)
        receivers = self._status_receivers
        for index, receiver in enumerate(receivers):
            if receiver is coro:        # a finished receiver is no longer told (nor kept)
                del receivers[index]
                break

    def _announce(self, peer, status):
        for receiver in list(self._status_receivers):
            if receiver.send(PeerStatus(peer.location, peer.name, status)) < 0:
                self._status_receivers.remove(receiver)

    def peer_status(self, coro):
        """Send PeerStatus messages to `coro` (local or remote): Online for
        each known peer now, then as peers come and go. None removes every
        receiver. Several receivers may be registered."""
        return self._run_here(self._peer_status, coro)

    def _peer_status(self, coro):
        if coro is None:
            self._status_receivers = []
            return 0
        if not isinstance(coro, Coro):
            return -1
        if coro not in self._status_receivers:
            self._status_receivers.append(coro)
        for peer in list(self._peers.values()):
            if peer.online:
                coro.send(PeerStatus(peer.location, peer.name, PeerStatus.Online))
        return 0

    # ------------------------------------------------ pairing

    def peer(self, loc, udp_port=0, stream_send=False, broadcast=False):
        """Pair with another runtime. A Location with a port: connect and
        authenticate now; 0 on success, -1 on failure. A host name or a
        Location with port 0: send a discovery ping to that host (pairing
        happens when it answers); 0. Call form: `yield rt.peer(loc)`."""
        if isinstance(loc, str) or (isinstance(loc, Location) and not loc.port):
            host = loc if isinstance(loc, str) else loc.addr
            return self._run_here(self._ping, _resolve(host), udp_port or self._udp_port,
                                  broadcast)
        if not isinstance(loc, Location):
            log.warning('peer: %r is not a Location or host name', loc)
            return -1
        return self._run_here(self._pair, loc, stream_send)

    def _pair(self, loc, stream_send):
        if loc == self._location:
            return -1
        peer = self._peer(loc)
        peer.stream_send = peer.stream_send or stream_send
        if peer.out is not None:
            return 0
        if peer.connecting is None:
            peer.connecting = gevent.spawn(self._connect, peer)
        peer.connecting.join(timeout=_msg_timeout() * 2)
        if peer.out is not None:
            peer.ready.wait(_msg_timeout())
        return 0 if peer.out is not None and peer.online else -1

    def discover_peers(self, port=None):
        """Broadcast a discovery ping on this runtime's network (again)."""
        target = netio.broadcast_address(self._node)
        if target is None:
            log.warning('no broadcast address for %s: discovery pings not sent', self._node)
            return
        self._run_here(self._ping, target, port or self._udp_port, False)

    def ignore_peers(self, ignore):
        """While true, discovery pings from other runtimes are ignored."""
        self._ignore_peers = bool(ignore)

    def _ping(self, addr, port, broadcast):
        if self._udp is None:
            return -1
        datagram = netio.encode_ping(self._key, {
            'location': [self._location.addr, self._location.port], 'name': self._name,
            'version': asyncoro.__version__, 'broadcast': bool(broadcast)})
        try:
            self._udp.sendto(datagram, (addr, port))
        except OSError as exc:
            log.warning('discovery ping to %s:%s failed: %s', addr, port, exc)
            return -1
        return 0

    def _udp_loop(self):
        while not self._closing:
            try:
                datagram, addr = self._udp.recvfrom(4096)
            except OSError as exc:
                if self._closing:
                    return
                log.warning('discovery socket failed: %s', exc)
                gevent.sleep(0.1)
                continue
            info = netio.decode_ping(self._key, datagram)
            if info is None or self._ignore_peers:
                continue
            try:
                location = Location(*info['location'])
            except (KeyError, TypeError, ValueError, OSError):
                continue
            if location == self._location:
                continue
            if info.get('broadcast'):
                self.discover_peers()
            peer = self._peers.get(location)
            if peer is None or (peer.out is None and peer.connecting is None):
                self._peer(location).connecting = gevent.spawn(self._connect, self._peer(location))

    def locate(self, name, timeout=None):
        """The Location of the peer named `name`, asking peers if need be;
        None on timeout. `loc = yield rt.locate('server')`."""
        return self._run_here(self._locate_peer, name, timeout)

    def _locate_peer(self, name, timeout):
        if name == self._name:
            return self._location
        for peer in self._peers.values():
            if peer.online and peer.name == name:
                return peer.location
        return self._locate('peer', name, None, timeout, False)

    def close_peer(self, location, timeout=None):
        """Send what is queued for the peer, tell it we are going, forget it."""
        return self._run_here(self._close_peer, location, timeout or _msg_timeout())

    def _close_peer(self, location, timeout):
        peer = self._peers.get(location)
        if peer is None:
            return -1
        if peer.connecting is not None:
            peer.connecting.join(timeout)
        if peer.out is not None:
            peer.out.send(netio.dumps((BYE,)))
            peer.out.flush(timeout)
        self._set_offline(peer)
        return 0

    # ------------------------------------------------ locate

    def _locate(self, kind, name, location, timeout, local_first=True):
        """Find `name` of `kind` ('coro', 'syscoro', 'channel', 'rci',
        'peer'): here first (unless `local_first` is false), then at
        `location` or at every peer, including peers that appear while it
        waits. The first answer found wins."""
        if location is None or location == self._location:
            if local_first or location == self._location:
                found = self._registry.get((kind, name))
                if found is not None:
                    return found
            if location == self._location:
                return self._locate_local(kind, name, timeout)
        if location is not None:
            return self._call(location, LOCATE, (kind, name), timeout, on_timeout=None,
                              on_failure=None)
        waiter = gevent.event.AsyncResult()
        entry = (kind, name, waiter)
        self._locators.append(entry)
        try:
            for peer in list(self._peers.values()):
                if peer.online:
                    gevent.spawn(self._ask, peer.location, kind, name, waiter)
            try:
                return waiter.get(timeout=timeout)
            except gevent.Timeout:
                return None
        finally:
            self._locators.remove(entry)

    def _ask(self, location, kind, name, waiter):
        found = self._call(location, LOCATE, (kind, name), _msg_timeout(), on_timeout=None,
                           on_failure=None)
        if found is not None and not waiter.ready():
            waiter.set(found)

    # ------------------------------------------------ files

    def send_file(self, location, file, dir=None, overwrite=False, timeout=None):
        """Copy the local `file` to the peer at `location`, into its
        dest_path[/dir]. 0 on success (also when an identical copy is there
        already), -1 on any failure (logged). `yield rt.send_file(loc, path)`."""
        timeout = _msg_timeout() if timeout is None else timeout
        try:
            stat = os.stat(file)
        except OSError as exc:
            log.warning('send_file: %s: %s', file, exc.strerror)
            return -1
        if not os.path.isfile(file) or not os.access(file, os.R_OK):
            log.warning('send_file: %s is not a readable regular file', file)
            return -1
        if dir and os.path.isabs(dir):
            log.warning('send_file: dir %r must be relative', dir)
            return -1
        if not isinstance(location, Location):
            log.warning('send_file: %r is not a Location', location)
            return -1
        meta = (dir or '', os.path.basename(file), stat.st_size, stat.st_mtime, stat.st_atime,
                stat.st_mode & 0o7777, bool(overwrite))
        answer = self._call(location, FILE_BEGIN, meta, timeout, on_timeout=None, on_failure=None)
        if answer is None or answer == -1:
            return -1
        if answer == 'same':
            return 0
        transfer = answer
        try:
            with open(file, 'rb') as source:
                while True:
                    chunk = source.read(netio.FILE_CHUNK)
                    if not chunk:
                        break
                    if self._call(location, FILE_CHUNK, (transfer, chunk), timeout,
                                  on_timeout=-1, on_failure=-1) != 0:
                        return -1
        except OSError as exc:
            log.warning('send_file: reading %s failed: %s', file, exc)
            self._call(location, FILE_END, (transfer, False), timeout, on_timeout=-1,
                       on_failure=-1)
            return -1
        return self._call(location, FILE_END, (transfer, True), timeout, on_timeout=-1,
                          on_failure=-1)

    def del_file(self, location, file, dir=None, timeout=None):
        """Delete dest_path[/dir]/basename(file) at the peer, and the
        directories that leaves empty (up to its dest_path). 0 or -1."""
        if dir and os.path.isabs(dir):
            return -1
        return self._call(location, DEL_FILE, (dir or '', os.path.basename(file)),
                          _msg_timeout() if timeout is None else timeout,
                          on_timeout=-1, on_failure=-1)

    # ------------------------------------------------ ending

    def _stop(self):
        # flush what is queued for peers before the runtime goes (API.md §11.3)
        if not self._closing:
            self._run_here(self._close_network, _msg_timeout())
        super()._stop()

    def _close_network(self, timeout):
        deadline = time.monotonic() + timeout
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.join(max(deadline - time.monotonic(), 0))
        for peer in list(self._peers.values()):
            if peer.out is not None:
                peer.out.send(netio.dumps((BYE,)))
                peer.out.flush(max(deadline - time.monotonic(), 0))
        self._closing = True
        self._beat_timer.close()
        for peer in list(self._peers.values()):
            for conn in [peer.out] + list(peer.incoming):
                if conn is not None:
                    conn.close('runtime finished')
        self._listener.close()
        if self._udp is not None:
            self._udp.close()


def _what(what):
    return 'message for %s' % what if isinstance(what, Coro) else what


def _picklable_monitor(exc):
    """A MonitorException whose value could not be pickled: send its type."""
    coro, (kind, value) = exc.args
    return MonitorException(coro, (kind, type(value)))


# ---------------------------------------------------------------- handlers

def _local_coro(rt, coro_id, name):
    """The live local coroutine a reference names; None if it is gone (or the
    id now belongs to another one)."""
    coro = rt._coros.get(coro_id)
    if coro is not None and name[1:] == coro._name and name[0] == coro._prefix:
        return coro
    return None


@handler(INFO)
def _handle_info(rt, conn, request):
    _, location, name, version = request
    if conn.info is not None:
        log.warning('second INFO from %s; connection closed', conn.peer)
        conn.close('protocol error')
        return
    if version != asyncoro.__version__:
        log.warning('peer %s runs version %s, this runtime %s', location, version,
                    asyncoro.__version__)
    conn.info = location
    peer = rt._peer(location)
    peer.incoming.add(conn)
    conn.send(netio.dumps((INFO_ACK, rt._name)))
    rt._set_online(peer, name)


@handler(INFO_ACK)
def _handle_info_ack(rt, conn, request):
    peer = rt._peers.get(conn.info)
    if peer is not None and peer.out is conn:
        rt._set_online(peer, request[1])


@handler(BYE)
def _handle_bye(rt, conn, request):
    peer = rt._peers.get(conn.info)
    if peer is not None:
        rt._set_offline(peer)


@handler(SEND)
def _handle_send(rt, conn, request):       # the path of every remote message: keep it lean
    _, coro_id, name, message = request
    coro = _local_coro(rt, coro_id, name)
    if coro is not None:
        coro.send(message)
    else:
        log.warning('message from %s for %s/%s dropped: no such coroutine here',
                    conn.info, name, coro_id)


@handler(DELIVER)
def _handle_deliver(rt, conn, request):
    _, request_id, coro_id, name, message = request
    coro = _local_coro(rt, coro_id, name)
    rt._reply(conn, request_id, -1 if coro is None else coro.deliver(message))


@handler(REPLY)
def _handle_reply(rt, conn, request):
    _, request_id, value = request
    waiter = rt._replies.get(request_id)
    if waiter is not None and not waiter.ready():
        waiter.set(value)


@handler(TERMINATE)
def _handle_terminate(rt, conn, request):
    coro = _local_coro(rt, request[1], request[2])
    if coro is not None:
        coro.terminate()


@handler(MONITOR)
def _handle_monitor(rt, conn, request):
    _, request_id, coro_id, name, monitor = request
    coro = _local_coro(rt, coro_id, name)
    rt._reply(conn, request_id, -1 if coro is None else coro.notify(monitor))


@handler(LOCATE)
def _handle_locate(rt, conn, request):
    _, request_id, kind, name = request
    if kind == 'peer':
        found = rt._location if name == rt._name else None
    else:
        found = rt._registry.get((kind, name))
    rt._reply(conn, request_id, found)


def _local_channel(rt, name):
    channel = rt._channels.get(name)
    return channel if channel is not None and not channel._closed else None


@handler(CHANNEL_SUBSCRIBE)
def _handle_subscribe(rt, conn, request):
    _, request_id, name, subscriber = request
    channel = _local_channel(rt, name)
    rt._reply(conn, request_id, -1 if channel is None else channel.subscribe(subscriber))


@handler(CHANNEL_UNSUBSCRIBE)
def _handle_unsubscribe(rt, conn, request):
    _, request_id, name, subscriber = request
    channel = _local_channel(rt, name)
    rt._reply(conn, request_id, -1 if channel is None else channel.unsubscribe(subscriber))


@handler(CHANNEL_SEND)
def _handle_channel_send(rt, conn, request):
    channel = _local_channel(rt, request[1])
    if channel is None:
        log.warning('message from %s for channel %s dropped: no such channel', conn.info,
                    request[1])
    else:
        channel.send(request[2])


@handler(CHANNEL_DELIVER)
def _handle_channel_deliver(rt, conn, request):
    _, request_id, name, message, timeout, n = request
    channel = _local_channel(rt, name)
    if channel is None:
        rt._reply(conn, request_id, -1)
        return

    def deliver():     # it may wait for subscribers: not in the reader greenlet
        rt._reply(conn, request_id, channel.deliver(message, timeout, n))
    gevent.spawn(deliver)


@handler(RCI_CALL)
def _handle_rci(rt, conn, request):
    _, request_id, name, args, kwargs = request
    rci = rt._registry.get(('rci', name))
    if rci is None:
        rt._reply(conn, request_id, (False, 'RCI %r is not registered at %s' % (name, rt._location)))
        return
    try:
        coro = Coro(rci._method, *args, **kwargs)
    except Exception as exc:     # bad arguments: the caller gets the message
        rt._reply(conn, request_id, (False, 'RCI %r at %s: %s: %s'
                                     % (name, rt._location, type(exc).__name__, exc)))
        return
    rt._reply(conn, request_id, (True, coro))


@handler(FILE_BEGIN)
def _handle_file_begin(rt, conn, request):
    _, request_id, subdir, name, size, mtime, atime, mode, overwrite = request
    try:
        target = netio.transfer_target(rt._dest_path, subdir, name)
    except ValueError as exc:
        log.warning('file from %s refused: %s', conn.info, exc)
        rt._reply(conn, request_id, -1)
        return
    if rt.max_file_size and size > rt.max_file_size:
        log.warning('file %s from %s refused: %d bytes > max_file_size=%d', name, conn.info,
                    size, rt.max_file_size)
        rt._reply(conn, request_id, -1)
        return
    if os.path.isfile(target):
        st = os.stat(target)
        if st.st_size == size and (st.st_mode & 0o7777) == mode and abs(st.st_mtime - mtime) <= 1:
            rt._reply(conn, request_id, 'same')
            return
        if not overwrite:
            log.warning('file %s from %s refused: it exists and differs (overwrite=False)',
                        target, conn.info)
            rt._reply(conn, request_id, -1)
            return
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = '%s.part-%s' % (target, request_id)
        out = open(partial, 'wb')
    except OSError as exc:
        log.warning('file %s from %s: %s', target, conn.info, exc)
        rt._reply(conn, request_id, -1)
        return
    transfer = '%s/%s' % (conn.info, request_id)
    rt._files[transfer] = (out, target, partial, (size, mtime, atime, mode), conn)
    rt._reply(conn, request_id, transfer)


def _drop_transfer(rt, transfer):
    out, target, partial, meta, conn = rt._files.pop(transfer)
    out.close()
    try:
        os.remove(partial)
    except OSError:      # already gone: nothing left to clean
        pass


@handler(FILE_CHUNK)
def _handle_file_chunk(rt, conn, request):
    _, request_id, transfer, chunk = request
    entry = rt._files.get(transfer)
    if entry is None or entry[4].info != conn.info:
        rt._reply(conn, request_id, -1)
        return
    out, target, partial, (size, _, _, _), _ = entry
    try:
        out.write(chunk)
        if out.tell() > size:
            raise OSError(errno.EFBIG, 'more data than announced (%d bytes)' % size)
    except OSError as exc:
        log.warning('file %s from %s: %s; dropped', target, conn.info, exc)
        _drop_transfer(rt, transfer)
        rt._reply(conn, request_id, -1)
        return
    rt._reply(conn, request_id, 0)


@handler(FILE_END)
def _handle_file_end(rt, conn, request):
    _, request_id, transfer, complete = request
    entry = rt._files.get(transfer)
    if entry is None:
        rt._reply(conn, request_id, -1)
        return
    out, target, partial, (size, mtime, atime, mode), _ = entry
    if not complete or out.tell() != size:
        if complete:
            log.warning('file %s from %s: %d of %d bytes arrived; dropped', target, conn.info,
                        out.tell(), size)
        _drop_transfer(rt, transfer)
        rt._reply(conn, request_id, -1)
        return
    del rt._files[transfer]
    out.close()
    try:
        os.chmod(partial, mode)
        os.utime(partial, (atime, mtime))
        os.replace(partial, target)
    except OSError as exc:
        log.warning('file %s from %s: %s', target, conn.info, exc)
        rt._reply(conn, request_id, -1)
        return
    rt._reply(conn, request_id, 0)


@handler(DEL_FILE)
def _handle_del_file(rt, conn, request):
    _, request_id, subdir, name = request
    try:
        target = netio.transfer_target(rt._dest_path, subdir, name)
        os.remove(target)
    except (ValueError, OSError) as exc:
        log.warning('del_file from %s: %s', conn.info, exc)
        rt._reply(conn, request_id, -1)
        return
    root = os.path.realpath(rt._dest_path)
    parent = os.path.dirname(target)
    while parent != root and parent.startswith(root + os.sep):
        try:
            os.rmdir(parent)
        except OSError:     # not empty: the clean-up stops here
            break
        parent = os.path.dirname(parent)
    rt._reply(conn, request_id, 0)


# ---------------------------------------------------------------- the package face

# The first Coro or Channel made from now on starts the distributed runtime;
# the package's names become this module's (API.md §2).
asyncoro._RUNTIME_CLASS[0] = AsynCoro
for _name in ('AsynCoro', 'PeerStatus', 'RCI', 'SysCoro', 'MaxConnectionErrors'):
    setattr(asyncoro, _name, globals()[_name])
del _name
