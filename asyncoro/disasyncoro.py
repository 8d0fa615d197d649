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
  one UDP discovery socket. All sockets are served in the runtime's hub
  (netio does the framing, authentication and TLS).
- Frames from this runtime to a peer always go through the one connection
  this runtime opened to it (opened on demand, kept open), so everything sent
  from one process to another arrives in order. A connection the peer opened
  carries only the peer's frames to us.
- A frame is a pickled tuple `(kind, ...)`; `HANDLERS[kind]` handles it
  (asyncoro.handlers).
  Requests that want an answer carry a request id; the answer comes back as a
  `REPLY` frame and wakes the waiting greenlet (`request`).
- Discovery: a signed JSON ping broadcast only on the bound address's own
  network (127.255.255.255 when bound to 127.0.0.1). Who hears a ping from a
  runtime it does not know connects to it; the connection's first frame
  (`INFO`) introduces the connecting runtime.
- Liveness while the hub is stuck: a user coroutine that computes without
  yielding (or calls time.sleep) holds the hub. A guard thread looks every
  STALL/2 seconds at the hub loop's count of turns: a hub that has made no
  turn for STALL seconds while a connection has bytes to read or to write
  is stalled (an idle hub waits in the poll, and bytes would wake it). Then
  the guard reads the connections itself, queues messages for their
  coroutines, acknowledges `deliver` requests, writes what is queued, and
  hands every other request to the hub for when it is back. An idle runtime
  so costs a few checks a second, and no wake-up of its hub. (With a loop
  that does not count its turns, libuv's, a timer of the hub marks each turn
  instead.)
  The hub runs what was handed to it before the next frame it reads, so the
  order of each connection's frames is kept.
"""

import itertools
import logging
import os
import select
import socket
import sys
import tempfile
import time

import gevent
import gevent.event

import asyncoro
from asyncoro import (AsyncSocket, AsynCoroSocket, AsyncThreadPool, AsyncDBCursor,  # noqa: F401
                      CategorizeMessages, Channel, Condition, Coro, Event,    # (the core's
                      HotSwapException, Location, Lock, Logger, MonitorException,  # names
                      RLock, Semaphore, Singleton, deserialize, logger, serialize,  # are this
                      unserialize, AsyncoroError)                             # module's)
from asyncoro import core, netio
from asyncoro.core import WrongContextError, _get_ident
from asyncoro.failure import run_guarded, spawn
from asyncoro.handlers import (BYE, DEL_FILE, DELIVER, FAILED, HANDLERS, INFO, LOCATE, REPLY,
                               SEND,
                               local_coro)
from asyncoro.remote import RCI, PeerStatus, SysCoro
from asyncoro.transfers import Transfers

__all__ = asyncoro.__all__ + ['PeerStatus', 'RCI', 'SysCoro', 'MsgTimeout',
                              'MaxConnectionErrors']

log = logging.getLogger(__name__)

MaxConnectionErrors = 10
DEFAULT_UDP_PORT = 51350


# the guard: how often the hub marks a turn, and after how long without one the
# guard thread serves the connections
BEAT = 0.05
STALL = 0.25
_sleep = core._get_original('time', 'sleep')


_msg_timeout = core._msg_timeout
_loads = netio.loads


# request kinds: the first element of every frame

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
        self.pending = []           # (frame, what, quiet) queued while `out` is being opened
        self.connecting = None      # the greenlet opening `out`
        self.errors = 0             # consecutive failures to connect
        self.online = False
        self.requests = set()       # ids of our requests it has not answered
        self.stream_send = False
        self.ready = gevent.event.Event()       # set when it is online
        self.gone = False                       # removed from the peer table


def default_node():
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


def env_port(name, default):
    """The port number in $`name`, else `default`."""
    value = os.environ.get(name)
    if not value:
        return default
    port = int(value) if value.isdecimal() else 0
    if not 0 < port < 65536:
        raise ValueError('%s=%r is not a port number (1-65535)' % (name, value))
    return port


def resolve(host):
    return Location(host, 0).addr


class _Then:
    """Where a request_then's answer is set (as an AsyncResult's is): the
    callback runs at once, in the hub greenlet that read the reply; a
    failure (the peer went) is called back a loop turn later, not from
    inside the closing of a connection."""

    __slots__ = ('rt', 'then', 'on_failure', 'request_id', 'peer', 'done')

    def __init__(self, rt, then, on_failure):
        self.rt = rt
        self.then = then
        self.on_failure = on_failure
        self.request_id = self.peer = None
        self.done = False

    def ready(self):
        return self.done

    def set(self, answer):
        if self.done:
            return
        self.done = True
        if self.request_id is not None:
            self.rt._end_request(self.request_id, self.peer)
        if answer is FAILED:
            self.rt._loop.run_callback(run_guarded, self.then, self.on_failure)
        else:
            run_guarded(self.then, answer)


class AsynCoro(core.AsynCoro):
    """The distributed runtime: the core runtime plus the network.

    The network: a TCP listener, UDP discovery, peers, remote references and
    file transfer. A singleton: the first construction wins (later calls return it and
    ignore their arguments); the first Coro made starts one with the
    defaults if the program did not.

    :param udp_port: the UDP port of discovery; 0: $ASYNCORO_UDP_PORT, else
        51350.
    :param tcp_port: the port to listen on; 0: any free one.
    :param node: the host name or IP address to bind; None: $ASYNCORO_NODE,
        else the first IPv4 address of an interface that is up and has a
        broadcast address, else 127.0.0.1.
    :param ext_ip_addr: the address peers are given in this runtime's
        Location, if not `node`'s (behind NAT, say).
    :param socket_family: of the listener; None: from the address.
    :param name: the runtime's name; None: its Location, as text.
    :param discover_peers: broadcast a discovery ping at the start.
    :param secret: what peers must share to connect; '' or None:
        $ASYNCORO_SECRET, else ''.
    :param certfile: a certificate: every peer connection uses TLS.
    :param keyfile: the private key, if it is not in `certfile`.
    :param notifier: accepted, as in asyncoro 4.5, and not used.
    :param dest_path: the folder received files go to (created); None:
        ``asyncoro`` in the system's temporary folder.
    :param max_file_size: the largest file accepted from peers, in bytes;
        None or 0: no limit.
    :param max_frame_size: the largest frame sent or accepted, in bytes.
    :raises OSError: naming the address, if the TCP port cannot be bound.
    :raises ValueError: if $ASYNCORO_UDP_PORT is not a port number.

    Blocks until the listener is bound and serving. When the runtime stops
    (finish() or terminate()), it first sends what is queued for peers and
    tells them it is going, waiting up to MsgTimeout.
    """

    def __init__(self, udp_port=0, tcp_port=0, node=None, ext_ip_addr=None, socket_family=None,
                 name=None, discover_peers=True, secret='', certfile=None, keyfile=None,
                 notifier=None, dest_path=None, max_file_size=None,
                 max_frame_size=netio.DEFAULT_MAX_FRAME_SIZE):
        node = resolve(node or default_node())
        self._udp_port = udp_port or env_port('ASYNCORO_UDP_PORT', DEFAULT_UDP_PORT)
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
        self.transfers = Transfers(self)    # files sent here, and sent from here
        self._connections = set()       # every live Connection (the guard reads them)
        self._beat = time.monotonic()   # the hub's last turn
        self._closing = False
        self.auth_failures = {}         # address -> why a peer there failed authentication
        self._told_other_secret = set()     # addresses whose other-secret pings were logged
        super().__init__(name=name or str(self._location))
        self._run_here(self._start_network, listener)
        log.debug('runtime %s at %s (udp %s)', self._name, self._location, self._udp_port)

    # ------------------------------------------------ properties

    @property
    def location(self):
        """This runtime's Location.

        Its listener's address (`ext_ip_addr`, if given) and port.
        """
        return self._location

    @property
    def root_dest_path(self):
        """The folder under which `dest_path` always lies.

        It is the `dest_path` given at the start.
        """
        return self._root_dest

    @property
    def udp_port(self):
        """The UDP port this runtime listens on for discovery."""
        return self._udp_port

    @property
    def dest_path(self):
        """The folder received files go to (with a `dir`, in that folder under it).

        Assigning a path makes it relative to `root_dest_path` (one that
        would lie outside is put inside it) and creates the folder.
        """
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
        """The peers online now.

        :returns: a list of their Locations.
        """
        return [loc for loc, peer in self._peers.items() if peer.online]

    # ------------------------------------------------ network start

    def _start_network(self, listener):
        self._listener = AsyncSocket(listener)
        spawn(self._accept_loop)
        self._udp = None
        try:
            self._udp = netio.udp_socket(self._udp_port)
        except OSError as exc:
            log.warning('discovery disabled: cannot bind udp port %s: %s', self._udp_port, exc)
        if self._udp is not None:
            spawn(self._udp_loop)
            if self._discover:
                self.discover_peers()
        self._beat_timer = None
        if getattr(self._loop, 'iteration', -1) < 0:    # the loop does not count its turns
            self._beat_timer = self._loop.timer(BEAT, BEAT)
            self._beat_timer.start(self._mark_beat)
        core._start_new_thread(self._guard_main, ())

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
            spawn(self._serve_incoming, sock, addr)

    def _serve_incoming(self, sock, addr):
        peer = '%s:%s' % addr[:2]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            netio.accept(sock, self._key, _msg_timeout(), self._certfile, self._keyfile)
        except (OSError, netio.PeerError) as exc:
            if isinstance(exc, netio.AuthError):
                self.auth_failures[addr[0]] = str(exc)
            # a peer that goes away while it connects (a server killed as its
            # computation closes, say) is no news; another secret, TLS trouble
            # or a stranger are
            gone = isinstance(exc, (netio.PeerGone, ConnectionResetError, BrokenPipeError))
            log.log(logging.DEBUG if gone else logging.WARNING, 'peer %s refused: %s', peer,
                    exc)
            sock.close()
            return
        self._open(sock, peer, None)

    def _open(self, sock, peer, location):
        conn = netio.Connection(sock, peer, self._max_frame_size, self._on_frames,
                                self._on_connection_closed, self._run_after)
        conn.info = location
        self._connections.add(conn)
        conn.start()
        return conn

    # ------------------------------------------------ frames in

    def _on_frames(self, conn, payloads):
        """The frames of one read of `conn`, in the hub greenlet (handlers do
        not block). This is the path of every message: keep it lean."""
        if self._xq:
            self._drain_foreign()       # what the guard handed over comes first
        handlers = HANDLERS
        for payload in payloads:
            try:
                request = _loads(payload)
                kind = request[0]
                handle = handlers.get(kind)
            except Exception as exc:      # anything a malformed frame raises while unpickling
                log.warning('malformed frame from %s (%s: %s); connection closed',
                            conn.peer, type(exc).__name__, exc)
                conn.close('malformed frame')
                return
            if handle is None or conn.info is None:
                self._dispatch(conn, request, kind)     # says what is wrong, or INFO
            else:
                try:
                    handle(self, conn, request)
                except Exception:     # our bug in a handler: log it, keep the connection
                    log.error('handling %s from %s failed', kind, conn.peer, exc_info=True)
            if conn.closed:         # by a handler (BYE, say): the rest is not read
                return

    def _dispatch(self, conn, request, kind):
        if conn.closed:
            return
        try:
            handle = HANDLERS.get(kind)
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

    def reply(self, conn, request_id, value, push=False):
        """Answer the request `request_id` that came on `conn`.

        For the layers above. The answer goes on our own connection to that peer, like all we send
        it.

        :param value: the answer.
        :param push: write it before this greenlet goes on.
        :returns: 0; -1 if it could not be sent (the log says why).
        """
        sent = self.send_frame(conn.info, (REPLY, request_id, value), what='reply', quiet=True)
        if push and sent == 0:
            peer = self._peers.get(conn.info)
            if peer is not None and peer.out is not None:
                peer.out.push()
        return sent

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

    def send_frame(self, location, request, what='request', quiet=False):
        """Queue `request` for the peer at `location`, connecting on demand.

        For the layers above: the path of every remote send.

        :param request: the frame: a tuple whose first item is its kind.
        :param what: names the request in log messages (a remote coroutine
            stands for 'message for' it).
        :param quiet: dropping it for a peer that cannot be reached is no
            news: a request (its caller gets the failure) or a reply (its
            asker has gone away).
        :returns: 0; -1, with a WARNING, if it cannot be pickled, is larger
            than max_frame_size, or is for this runtime itself.

        Does not wait for the connection; may be called from any thread.
        """
        if _get_ident() != self._tid:
            return self._run_here(self.send_frame, location, request, what, quiet)
        peer = self._peers.get(location)
        if peer is None and location == self._location:
            log.warning('%s for this runtime itself (%s) dropped: the coroutine or channel is '
                        'gone', _what(what), location)
            return -1
        try:
            payload = netio.dumps(request)
        except Exception as exc:      # whatever pickling raises: the caller's data is at fault
            if isinstance(request[-1], MonitorException):
                return self.send_frame(location, request[:-1] + (_picklable_monitor(request[-1]),),
                                       what, quiet)
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
            peer.pending.append((payload, what, quiet))
            if peer.connecting is None:
                peer.connecting = spawn(self._connect, peer)
        return 0

    def _connect(self, peer):
        """Open our connection to `peer`, introduce ourselves, send what was
        queued meanwhile."""
        location = peer.location
        try:
            sock = netio.connect((location.addr, location.port), self._key, _msg_timeout(),
                                 self._certfile, self._keyfile)
        except (OSError, netio.PeerError) as exc:
            self._unreachable(peer, exc)
            return
        conn = self._open(sock, str(location), location)
        try:
            conn.send(netio.dumps((INFO, self._location, self._name, asyncoro.__version__)))
            for payload, _, _ in peer.pending:
                conn.send(payload)
        except netio.PeerError:         # it closed at once (conn.closed says why)
            pass
        if conn.closed:     # the peer went away as it took the connection
            self._unreachable(peer, netio.PeerGone('the connection closed at once: %s'
                                                   % conn.closed))
            return
        peer.pending = []
        peer.out = conn
        peer.connecting = None
        peer.errors = 0          # online when its INFO_ACK tells us its name

    def _unreachable(self, peer, exc):
        """A connection to `peer` could not be made (`exc` says why): what was
        queued for it is dropped (messages with a WARNING naming them,
        requests fail to their callers)."""
        location = peer.location
        peer.connecting = None
        peer.errors += 1
        if isinstance(exc, netio.AuthError):
            self.auth_failures[location.addr] = str(exc)
        # messages that nobody waits for, and a peer with another secret, are
        # worth a warning (a peer that just went away is not)
        lost = [what for _, what, quiet in peer.pending if not quiet]
        peer.pending = []
        log.log(logging.WARNING if lost or isinstance(exc, netio.AuthError) else logging.DEBUG,
                'cannot reach peer %s (%s)%s', location, exc,
                '; %d queued message(s) dropped: %s' % (
                    len(lost), ', '.join(str(_what(what)) for what in lost[:3]) +
                    (', ...' if len(lost) > 3 else '')) if lost else '')
        self._fail_requests(peer)
        if peer.online and peer.errors >= MaxConnectionErrors:
            self._set_offline(peer)
        elif not peer.online and not peer.incoming:
            self._forget(peer)

    def _on_connection_closed(self, conn, reason):
        self._connections.discard(conn)
        location = conn.info
        peer = self._peers.get(location) if location is not None else None
        if peer is None:
            return
        if peer.out is conn:
            peer.out = None
            # the answers come on the peer's own connection: what it sent
            # before it went (its connections close together) is read first
            for other in list(peer.incoming):
                other.read_now()
            self._fail_requests(peer)
        peer.incoming.discard(conn)
        self.transfers.cut(conn, reason)
        log.debug('connection %s closed: %s', conn, reason)
        if peer.out is None and not peer.incoming and peer.connecting is None:
            self._set_offline(peer)

    def _fail_requests(self, peer):
        for request_id in list(peer.requests):
            waiter = self._replies.get(request_id)
            if waiter is not None and not waiter.ready():
                waiter.set(FAILED)
        peer.requests.clear()

    def request(self, location, kind, fields, timeout, on_timeout, on_failure):
        """Send a request that wants an answer and wait for it.

        For the layers above.

        :param kind: the request's kind (a handler's name).
        :param fields: a tuple: the rest of the request.
        :param timeout: seconds to wait for the answer; None: no limit.
        :returns: the answer; `on_timeout` when `timeout` passes;
            `on_failure` if the request cannot be sent or the peer goes away
            first.

        Blocks the calling greenlet; may be called from any thread.
        """
        if _get_ident() != self._tid:
            return self._run_here(self.request, location, kind, fields, timeout, on_timeout,
                                  on_failure)
        sent = self._send_request(location, kind, fields)
        if sent is None:
            return on_failure
        request_id, waiter, peer = sent
        try:
            answer = waiter.get(timeout=timeout)
        except gevent.Timeout:
            return on_timeout
        finally:
            self._end_request(request_id, peer)
        return on_failure if answer is FAILED else answer

    def request_then(self, location, kind, fields, then, on_failure):
        """Send a request that wants an answer, and call ``then(answer)``
        when it comes (``then(on_failure)`` if the request cannot be sent or
        the peer goes away first), in the hub greenlet, under spawn's
        catch-all: `then` must not block.

        For the layers above: a caller that waits for many answers at once
        (the scheduler, for its jobs' starts) needs no greenlet per answer.
        No timeout: what waits on `then` ends it when the peer is of no use.

        Does not block; call it in the hub thread.
        """
        waiter = _Then(self, then, on_failure)
        sent = self._send_request(location, kind, fields, waiter)
        if sent is None:        # called back later, never from inside this call
            self._loop.run_callback(run_guarded, then, on_failure)
            return
        waiter.request_id, _, waiter.peer = sent

    def _send_request(self, location, kind, fields, waiter=None):
        """Send a request: (its id, what its answer is set on (an
        AsyncResult unless `waiter` is given), its peer), or None if it
        could not be sent."""
        request_id = next(self._request_ids)
        if waiter is None:
            waiter = gevent.event.AsyncResult()
        self._replies[request_id] = waiter
        peer = self._peer(location) if location != self._location else None
        if peer is None or self.send_frame(location, (kind, request_id) + fields,
                                           what=kind, quiet=True) < 0:
            self._replies.pop(request_id, None)
            return None
        peer.requests.add(request_id)
        return request_id, waiter, peer

    def _end_request(self, request_id, peer):
        self._replies.pop(request_id, None)
        peer.requests.discard(request_id)

    # ------------------------------------------------ the guard thread

    def _guard_main(self):
        """Serve the connections while the hub is stalled (see the module
        docstring). A real OS thread; it touches hub objects only through
        Connection.guard_* (under the connection's lock) and
        _call_threadsafe."""
        loop = self._loop
        counted = self._beat_timer is None      # the loop counts its turns
        turn, since = (loop.iteration if counted else None), time.monotonic()
        while not self._closing:
            _sleep(STALL / 2 if counted else BEAT)
            now = time.monotonic()
            if counted:
                if loop.iteration != turn:      # the hub went round: not stalled
                    turn, since = loop.iteration, now
                    continue
                if now - since < STALL:
                    continue
            elif now - self._beat < STALL:
                continue
            conns = [c for c in list(self._connections) if not c.closed]
            for conn in conns:
                failed = conn.guard_flush()
                if failed:
                    self._call_threadsafe(conn.close, failed)
            try:
                readable = select.select(conns, [], [], 0 if counted else BEAT)[0] \
                    if conns else []
            except (OSError, ValueError):      # a connection closed under us: next round
                continue
            for conn in readable:
                failed = conn.guard_read(self._on_guard_frames)
                if failed:
                    self._call_threadsafe(conn.close, failed)

    def _on_guard_frames(self, conn, payloads):
        for payload in payloads:
            self._on_guard_frame(conn, payload)

    def _on_guard_frame(self, conn, payload):
        """A frame read by the guard thread: messages are queued for their
        coroutines and `deliver`s acknowledged now; the rest waits for the hub."""
        try:
            request = netio.loads(payload)
            kind = request[0]
        except Exception:      # malformed: the hub logs it and closes the connection
            self._call_threadsafe(self._on_frames, conn, [payload])
            return
        if kind == SEND or kind == DELIVER:
            coro_id, name, message = request[-3:]
            coro = local_coro(self, coro_id, name)
            alive = coro is not None and coro.is_alive()
            if alive:
                self._call_threadsafe(coro._send_here, message)
            elif kind == SEND:
                self._call_threadsafe(HANDLERS[SEND], self, conn, request)    # it logs the drop
            if kind == DELIVER:
                reply = netio.dumps((REPLY, request[1], 1 if alive else -1))
                peer = self._peers.get(conn.info)
                if peer is None or peer.out is None or not peer.out.guard_send(reply):
                    self._call_threadsafe(self.reply, conn, request[1], 1 if alive else -1)
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
            spawn(self._ask, peer.location, kind, name, waiter)

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
        """Have PeerStatus messages sent to `coro` as peers come and go.

        At once it gets an Online message for each peer online now. Several
        receivers may be registered; one that has finished is dropped.

        :param coro: the receiver, a coroutine local or of another process;
            None: remove every receiver.
        :returns: 0; -1 if `coro` is neither a coroutine nor None.
        """
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
        """Pair with another runtime.

        :param loc: a Location with a port: connect and authenticate now. A
            host name, or a Location with port 0: send a discovery ping to
            that host; pairing happens when it answers.
        :param udp_port: the UDP port to ping; 0: this runtime's.
        :param stream_send: accepted, as in asyncoro 4.5: here every peer
            connection stays open and carries frames in order.
        :param broadcast: ask the pinged runtime to broadcast a discovery
            ping of its own.
        :returns: for a Location with a port, 0 once the peer is online, -1
            if it cannot be reached or authenticated (or is this runtime);
            for a ping, 0 once sent, -1 if it cannot be sent.

        With a Location, blocks the calling coroutine while it connects: up
        to twice MsgTimeout, then up to MsgTimeout for the peer to be
        online. Call form: ``yield rt.peer(loc)``.
        """
        if isinstance(loc, str) or (isinstance(loc, Location) and not loc.port):
            host = loc if isinstance(loc, str) else loc.addr
            return self._run_here(self._ping, resolve(host), udp_port or self._udp_port,
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
            peer.connecting = spawn(self._connect, peer)
        peer.connecting.join(timeout=_msg_timeout() * 2)
        if peer.out is not None:
            peer.ready.wait(_msg_timeout())
        return 0 if peer.out is not None and peer.online else -1

    def discover_peers(self, port=None):
        """Broadcast a discovery ping on this runtime's network (again).

        Runtimes that hear it and share the secret pair with this one.

        :param port: the UDP port to ping; None: this runtime's.
        :returns: None (no ping is sent, and a WARNING says why, if the
            bound address has no broadcast address).
        """
        target = netio.broadcast_address(self._node)
        if target is None:
            log.warning('no broadcast address for %s: discovery pings not sent', self._node)
            return
        self._run_here(self._ping, target, port or self._udp_port, False)

    def ignore_peers(self, ignore):
        """Ignore discovery pings from other runtimes (True), or not.

        :param ignore: whether to ignore them; peer() still pairs.
        """
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
            if info is None:
                self._other_secret(netio.unverified_ping(datagram), addr)
                continue
            if self._ignore_peers:
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
                self._peer(location).connecting = spawn(self._connect, self._peer(location))

    def _other_secret(self, claimed, addr):
        """A discovery ping signed with another secret (or damaged): once per
        sender, say so, and try a connection to where it claims to listen,
        so that both sides log that the secrets differ."""
        if claimed is None or self._ignore_peers or addr[0] in self._told_other_secret:
            return
        self._told_other_secret.add(addr[0])
        try:
            location = Location(*claimed['location'])
        except (KeyError, TypeError, ValueError, OSError):
            location = None
        self.auth_failures[addr[0]] = 'its discovery pings are signed with another secret'
        log.warning('discovery ping from %s (%s, %s) is signed with another secret (or damaged); '
                    'ignored', addr[0], claimed.get('name'), location)
        if location is not None and location != self._location:
            peer = self._peer(location)
            if peer.out is None and peer.connecting is None:
                peer.connecting = spawn(self._connect, peer)

    def locate(self, name, timeout=None):
        """Find the runtime named `name`, asking every peer if need be.

        :param timeout: seconds to wait at most; None: no limit.
        :returns: its Location (this runtime's own, for its own name); None
            on timeout.

        Blocks the calling coroutine only. Call form:
        ``loc = yield rt.locate('server')``.
        """
        return self._run_here(self._locate_peer, name, timeout)

    def _locate_peer(self, name, timeout):
        if name == self._name:
            return self._location
        for peer in self._peers.values():
            if peer.online and peer.name == name:
                return peer.location
        return self._locate('peer', name, None, timeout, False)

    def close_peer(self, location, timeout=None):
        """Send what is queued for the peer, tell it we are going, forget it.

        Receivers of peer_status() are told it is Offline.

        :param location: the peer's Location.
        :param timeout: seconds to wait for each of the connection and the
            sending; None: MsgTimeout.
        :returns: 0; -1 if no such peer is known.

        Blocks the calling coroutine. Call form:
        ``yield rt.close_peer(loc)``.
        """
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
            return self.request(location, LOCATE, (kind, name), timeout, on_timeout=None,
                              on_failure=None)
        waiter = gevent.event.AsyncResult()
        entry = (kind, name, waiter)
        self._locators.append(entry)
        try:
            for peer in list(self._peers.values()):
                if peer.online:
                    spawn(self._ask, peer.location, kind, name, waiter)
            try:
                return waiter.get(timeout=timeout)
            except gevent.Timeout:
                return None
        finally:
            self._locators.remove(entry)

    def _ask(self, location, kind, name, waiter):
        found = self.request(location, LOCATE, (kind, name), _msg_timeout(), on_timeout=None,
                           on_failure=None)
        if found is not None and not waiter.ready():
            waiter.set(found)

    # ------------------------------------------------ files

    def send_file(self, location, file, dir=None, overwrite=False, timeout=None):
        """Copy the local `file` to the peer at `location`.

        :param file: the path of a readable regular file.
        :param dir: where it goes, relative to the peer's `dest_path`; None:
            there.
        :param overwrite: replace a different file of that name there
            (otherwise the peer refuses).
        :param timeout: seconds to wait for each answer of the peer; None:
            MsgTimeout.
        :returns: 0 once the file is there (also when a copy of the same
            size, mode and modification time is there already); -1, with a
            WARNING saying why, on any failure.

        Blocks the calling coroutine. Call form:
        ``yield rt.send_file(loc, path)``.
        """
        failed = self.transfer_file(location, file, dir, overwrite, timeout)
        if failed:
            log.warning('send_file %s to %s: %s', file, location, failed)
            return -1
        return 0

    def transfer_file(self, location, file, dir=None, overwrite=False, timeout=None):
        """As :meth:`send_file`, for the layers above.

        :returns: None once the file is there; else why it is not, in words
            (the peer's own reason when it refused it).
        """
        if _get_ident() != self._tid:
            return self._run_here(self.transfer_file, location, file, dir, overwrite, timeout)
        timeout = _msg_timeout() if timeout is None else timeout
        if dir and os.path.isabs(dir):
            return 'dir %r must be relative' % dir
        if not isinstance(location, Location):
            return '%r is not a Location' % (location,)

        def request(location, kind, fields, on_failure):
            return self.request(location, kind, fields, timeout, on_failure, on_failure)
        return self.transfers.send(location, file, dir, overwrite, timeout, request)

    def del_file(self, location, file, dir=None, timeout=None):
        """Delete a file that :meth:`send_file` sent to the peer at `location`.

        The file is ``basename(file)`` in the peer's `dest_path` (and `dir`);
        the folders that leaves empty go too, up to `dest_path`.

        :param dir: as send_file() was given it; it must be relative.
        :param timeout: seconds to wait for the peer's answer; None:
            MsgTimeout.
        :returns: 0; -1 if the file cannot be deleted (the peer logs why),
            `dir` is absolute, or no answer came.

        Blocks the calling coroutine. Call form:
        ``yield rt.del_file(loc, path)``.
        """
        if dir and os.path.isabs(dir):
            return -1
        return self.request(location, DEL_FILE, (dir or '', os.path.basename(file)),
                          _msg_timeout() if timeout is None else timeout,
                          on_timeout=-1, on_failure=-1)

    # ------------------------------------------------ ending

    def _stop(self):
        # flush what is queued for peers before the runtime goes, as asyncoro 4.5 did
        if not self._closing:
            self._run_here(self._close_network, _msg_timeout())
        super()._stop()

    def _close_network(self, timeout):
        deadline = time.monotonic() + timeout
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.join(max(deadline - time.monotonic(), 0))
        for peer in list(self._peers.values()):
            out = peer.out      # (closing, it sets peer.out to None under us)
            if out is not None:
                try:
                    out.send(netio.dumps((BYE,)))
                    out.flush(max(deadline - time.monotonic(), 0))
                except netio.PeerError:     # it closed meanwhile: no one to say goodbye to
                    pass
        self._closing = True
        if self._beat_timer is not None:
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



# ---------------------------------------------------------------- the package face

# The first Coro or Channel made from now on starts the distributed runtime;
# the package's names become this module's, as programs written for asyncoro 4.5 expect.
core._RUNTIME_CLASS[0] = AsynCoro
for _name in ('AsynCoro', 'PeerStatus', 'RCI', 'SysCoro', 'MaxConnectionErrors'):
    setattr(asyncoro, _name, globals()[_name])
del _name
# MsgTimeout read or assigned here is the core's (programs do either)
sys.modules[__name__].__class__ = core._ShowsMsgTimeout
