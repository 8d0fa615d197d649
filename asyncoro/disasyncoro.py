"""asyncoro.disasyncoro: the distributed layer.

`import asyncoro.disasyncoro as asyncoro` gives every core name plus the
distributed `AsynCoro`, `PeerStatus`, `RCI`, `SysCoro`, `MsgTimeout` and
`MaxConnectionErrors`; importing it also makes these the top-level package's
(`asyncoro.AsynCoro` is then the distributed runtime).

What it owns: `AsynCoro`, the distributed runtime: the core runtime plus
the network, as the asyncoro 4.5 API shows it. It is a front over small
objects, each in a module of its own: the peer table with its connections
and request/reply bookkeeping (asyncoro.peers: `rt.peer_table`), discovery
(asyncoro.discovery), the guard that serves peers while the hub is stuck
(asyncoro.guard) and file transfers (asyncoro.transfers: `rt.transfers`).
Here: the listener, the reading of frames and their dispatch to the
handlers (asyncoro.handlers), locate across peers, and the runtime's end.

How it works:

- One runtime per process: one TCP listener (`Location(node, tcp_port)`) and
  one UDP discovery socket. All sockets are served in the runtime's hub
  (netio does the framing, authentication and TLS).
- A frame is a pickled tuple `(kind, ...)`; `HANDLERS[kind]` handles it, in
  the hub greenlet that read it: a handler never blocks (asyncoro.strict
  checks it in tests).
- Frames from this runtime to a peer always go through the one connection
  this runtime opened to it, so everything sent from one process to another
  arrives in order (asyncoro.peers says how).
"""

import logging
import os
import socket
import sys
import tempfile

import gevent
import gevent.event

import asyncoro
from asyncoro import (AsyncSocket, AsynCoroSocket, AsyncThreadPool, AsyncDBCursor,  # noqa: F401
                      CategorizeMessages, Channel, Condition, Coro, Event,    # (the core's
                      HotSwapException, Location, Lock, Logger, MonitorException,  # names
                      RLock, Semaphore, Singleton, deserialize, logger, serialize,  # are this
                      unserialize, AsyncoroError)                             # module's)
from asyncoro import core, netio, strict
from asyncoro.core import WrongContextError, _get_ident  # noqa: F401 (a name of this module too)
from asyncoro.failure import spawn
from asyncoro.discovery import Discovery
from asyncoro.guard import StallGuard
from asyncoro.handlers import DEL_FILE, HANDLERS, INFO, LOCATE
from asyncoro.peers import MaxConnectionErrors, Peers
from asyncoro.remote import RCI, PeerStatus, SysCoro
from asyncoro.transfers import Transfers

__all__ = asyncoro.__all__ + ['PeerStatus', 'RCI', 'SysCoro', 'MsgTimeout',
                              'MaxConnectionErrors']

log = logging.getLogger(__name__)

DEFAULT_UDP_PORT = 51350


_msg_timeout = core._msg_timeout
_loads = netio.loads


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
        udp_port = udp_port or env_port('ASYNCORO_UDP_PORT', DEFAULT_UDP_PORT)
        if secret == '' or secret is None:
            secret = os.environ.get('ASYNCORO_SECRET', '')
        key = netio.secret_key(secret)
        self.max_file_size = max_file_size or 0
        listener = netio.listen(node, tcp_port, socket_family)
        self._location = Location(ext_ip_addr or node, listener.getsockname()[1])
        self._root_dest = os.path.abspath(dest_path or os.path.join(tempfile.gettempdir(), 'asyncoro'))
        os.makedirs(self._root_dest, exist_ok=True)
        self._dest_path = self._root_dest
        self._key, self._certfile, self._keyfile = key, certfile, keyfile
        self._locators = []             # (kind, name, AsyncResult) of locate()s asking all peers
        self._closing = False
        self.peer_table = Peers(self, key, certfile, keyfile, max_frame_size, self.on_frames,
                                self._peer_online, self._peer_offline, self._connection_closed)
        # the peer table's own methods, for the layers above (no call between)
        self.send_frame = self.peer_table.send_frame
        self.request = self.peer_table.request
        self.request_then = self.peer_table.request_then
        self.reply = self.peer_table.reply
        self.transfers = Transfers(self)    # files sent here, and sent from here
        self._discovery = Discovery(self, self.peer_table, key, node, udp_port)
        self._guard = StallGuard(self, self.peer_table, self.on_frames, self._dispatch)
        super().__init__(name=name or str(self._location))
        self._run_here(self._start_network, listener, discover_peers)
        log.debug('runtime %s at %s (udp %s)', self._name, self._location, udp_port)

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
        return self._discovery.udp_port

    @property
    def auth_failures(self):
        """{address: why} of the peers that failed authentication."""
        return self.peer_table.auth_failures

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
        return self.peer_table.online()

    def registered(self, kind, name):
        """What is registered here under `name` ('coro', 'syscoro',
        'channel', 'rci'), or None. For the layers above."""
        return self._registry.get((kind, name))

    def channel(self, name):
        """The open channel of this process named `name`, or None. For the
        layers above."""
        channel = self._channels.get(name)
        return channel if channel is not None and not channel.closed else None

    # ------------------------------------------------ the network

    def _start_network(self, listener, discover):
        self._listener = AsyncSocket(listener)
        spawn(self._accept_loop)
        self._discovery.start(discover)
        self._guard.start()

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
                self.peer_table.auth_failures[addr[0]] = str(exc)
            # a peer that goes away while it connects (a server killed as its
            # computation closes, say) is no news; another secret, TLS trouble
            # or a stranger are
            gone = isinstance(exc, (netio.PeerGone, ConnectionResetError, BrokenPipeError))
            log.log(logging.DEBUG if gone else logging.WARNING, 'peer %s refused: %s', peer,
                    exc)
            sock.close()
            return
        self.peer_table.open(sock, peer, None)

    def on_frames(self, conn, payloads):
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
            if handle is None or conn.info is None or strict.ON:
                self._dispatch(conn, request, kind)     # says what is wrong, INFO; checks
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
            if strict.ON:       # (a step of the hub greenlet: checked in strict mode)
                strict.timed(kind, handle, self, conn, request)
            else:
                handle(self, conn, request)
        except Exception:     # our bug in a handler: log it, keep the connection
            log.error('handling %s from %s failed', kind, conn.peer, exc_info=True)

    def _peer_online(self, location):
        """(The peer table's news) a peer is online: locate()s that wait
        ask it too."""
        for kind, name, waiter in list(self._locators):
            spawn(self._ask, location, kind, name, waiter)

    def _peer_offline(self, location):
        """(The peer table's news) a peer went: channels here forget its
        subscribers."""
        for channel in list(self._channels.values()):
            channel.forget_subscribers_at(location)

    def _connection_closed(self, conn, reason):
        """(The peer table's news) a connection closed: files on their way
        on it are dropped."""
        self.transfers.cut(conn, reason)

    def _ended(self, coro):
        super()._ended(coro)
        self.peer_table.forget_receiver(coro)

    # ------------------------------------------------ peers

    def peer_status(self, coro):
        """Have PeerStatus messages sent to `coro` as peers come and go.

        At once it gets an Online message for each peer online now. Several
        receivers may be registered; one that has finished is dropped.

        :param coro: the receiver, a coroutine local or of another process;
            None: remove every receiver.
        :returns: 0; -1 if `coro` is neither a coroutine nor None.
        """
        return self._run_here(self.peer_table.status_to, coro)

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
            return self._run_here(self._discovery.ping, resolve(host),
                                  udp_port or self._discovery.udp_port, broadcast)
        if not isinstance(loc, Location):
            log.warning('peer: %r is not a Location or host name', loc)
            return -1
        return self._run_here(self.peer_table.pair, loc, stream_send)

    def discover_peers(self, port=None):
        """Broadcast a discovery ping on this runtime's network (again).

        Runtimes that hear it and share the secret pair with this one.

        :param port: the UDP port to ping; None: this runtime's.
        :returns: None (no ping is sent, and a WARNING says why, if the
            bound address has no broadcast address).
        """
        self._run_here(self._discovery.broadcast, port)

    def ignore_peers(self, ignore):
        """Ignore discovery pings from other runtimes (True), or not.

        :param ignore: whether to ignore them; peer() still pairs.
        """
        self._discovery.ignoring = bool(ignore)

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
        return self._run_here(self.peer_table.close, location, timeout or _msg_timeout())

    # ------------------------------------------------ locate

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
        for peer in self.peer_table.table.values():
            if peer.online and peer.name == name:
                return peer.location
        return self._locate('peer', name, None, timeout, False)

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
            for peer_location in self.peer_table.online():
                spawn(self._ask, peer_location, kind, name, waiter)
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
        self.peer_table.close_all(timeout)
        self._closing = True
        self._guard.stop()
        self.peer_table.close_connections('runtime finished')
        self._listener.close()
        self._discovery.stop()


# ---------------------------------------------------------------- the package face

# The first Coro or Channel made from now on starts the distributed runtime;
# the package's names become this module's, as programs written for asyncoro 4.5 expect.
core._RUNTIME_CLASS[0] = AsynCoro
for _name in ('AsynCoro', 'PeerStatus', 'RCI', 'SysCoro', 'MaxConnectionErrors'):
    setattr(asyncoro, _name, globals()[_name])
del _name
# MsgTimeout read or assigned here is the core's (programs do either)
sys.modules[__name__].__class__ = core._ShowsMsgTimeout
