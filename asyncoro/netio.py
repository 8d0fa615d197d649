"""asyncoro.netio: THE networking + serialization module of asyncoro.

Every byte that crosses a socket goes through here; no other module frames,
pickles or speaks TLS. So far it holds:

- `serialize` / `deserialize` (alias `unserialize`): pickle with the highest
  protocol (5). `deserialize` trusts its input: the peer layer only hands it
  payloads from authenticated peers.
- `Location(host, tcp_port)`: the address of one runtime's TCP listener; small,
  hashable, pickled by value.
- `AsyncSocket` (alias `AsynCoroSocket`): a socket wrapper whose I/O methods
  block only the calling greenlet, with length-prefixed messages
  (`send_msg`/`recv_msg`) and TLS through `ssl.SSLContext`.

- The peer protocol: `dumps`/`loads` (cloudpickle with protocol 5, so
  functions and classes defined in `__main__` travel by value; plain data
  and references with the plain pickler, which is faster), length-prefixed
  frames, the authentication handshake (`handshake`), `Connection` (an
  authenticated, persistent connection that the hub reads from an io
  watcher's callback, and writes at once or coalesced), UDP discovery pings
  (`encode_ping`/`decode_ping`, `broadcast_address`) and the path rules of
  file transfer (`transfer_target`).

Peer protocol, in order on every TCP connection (after TLS, if configured):
1. client -> server: PROTOCOL + client nonce;
2. server -> client: PROTOCOL + server nonce + HMAC(secret, 'server' + both nonces);
3. client -> server: HMAC(secret, 'client' + both nonces).
Each side checks the other's HMAC before it unpickles anything; handshake
frames are raw bytes, at most HANDSHAKE_LIMIT long. Then both sides exchange
pickled frames, each at most `max_frame_size` bytes: a larger length closes
the connection before the frame is read. What the frames mean is the
business of asyncoro.disasyncoro.

How AsyncSocket waits: the wrapped socket is always in non-blocking mode. An
operation is tried; when it would block, the calling greenlet waits on a
gevent io watcher created in the hub of *the calling thread* (`FdWaiter`),
then tries again. Nothing is bound to a hub when the socket is created, so a
socket made in the main thread can be used by coroutines in the runtime's hub
thread. A timeout is one deadline for the whole call (`recvall`, `sendall`,
connect + TLS handshake), not a limit per wait. In blocking mode the same loop
waits with `poll`/`select` instead, blocking the OS thread.
"""

import builtins
import errno
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import os
import pickle
import select
import socket
import ssl
import struct
import threading
import time

import cloudpickle
import gevent
import gevent.event
import gevent.socket
from gevent.monkey import get_original as _get_original

from asyncoro.failure import spawn

__all__ = ['serialize', 'deserialize', 'unserialize', 'Location', 'AsyncSocket',
           'AsynCoroSocket']

log = logging.getLogger(__name__)

READ = 1           # libev/libuv event mask bits of an io watcher
WRITE = 2
_MSG_HEADER = struct.Struct('>L')   # send_msg/recv_msg frame: 4-byte big-endian length
_CHUNK = 1 << 20    # largest single recv while collecting a message
# A TLS handshake with no timeout set on the socket is still bounded by this,
# so a peer that connects and never speaks TLS cannot hold accept() forever.
_TLS_HANDSHAKE_TIMEOUT = 10
# errno values of a non-blocking connect() that is still in progress.
_CONNECT_PENDING = {errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN,
                    getattr(errno, 'WSAEWOULDBLOCK', errno.EWOULDBLOCK)}


def serialize(obj):
    """Pickle `obj` with the highest pickle protocol.

    :returns: the pickle, as bytes.
    :raises pickle.PicklingError: (or another error of `pickle.dumps`) if
        `obj` cannot be pickled.
    """
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data):
    """Unpickle what :func:`serialize` made (also ``unserialize``).

    Only for data from a trusted peer: unpickling can run any code.

    :returns: the object.
    :raises pickle.UnpicklingError: (or another error of `pickle.loads`) for
        data that is not a valid pickle.
    """
    return pickle.loads(data)


unserialize = deserialize


def _is_ip_literal(host):
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except (OSError, ValueError):   # not an address of this family
            continue
    return False


class Location:
    """The address of one runtime's TCP listener.

    :param host: an IP address, or a host name, resolved here with
        getaddrinfo (blocking; IPv4 preferred).
    :param tcp_port: the port (an int, or what `int()` takes).
    :raises TypeError: if `host` is not a str.
    :raises OSError: if a host name does not resolve.

    The attributes are `addr` (an IP address, as a str) and `port` (an
    int). Two Locations are equal when both are; a Location is hashable,
    `str` and `repr` give ``'addr:port'``, and it pickles by value.
    """

    __slots__ = ('addr', 'port')

    def __init__(self, host, tcp_port):
        if not isinstance(host, str):
            raise TypeError('Location host must be a str, not %r' % (host,))
        if not _is_ip_literal(host):
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
            if not infos:
                raise OSError('host name %r did not resolve to an address' % host)
            infos.sort(key=lambda info: info[0] != socket.AF_INET)
            host = infos[0][4][0]
        self.addr = host
        self.port = int(tcp_port)

    def __eq__(self, other):
        if not isinstance(other, Location):
            return NotImplemented
        return self.addr == other.addr and self.port == other.port

    def __hash__(self):
        return hash((self.addr, self.port))

    def __repr__(self):
        return '%s:%s' % (self.addr, self.port)

    __str__ = __repr__

    def __reduce__(self):
        return (_rebuild_location, (self.addr, self.port))

    def copy(self):
        """An equal Location, without resolving its address again."""
        location = _new_location(Location)
        location.addr = self.addr
        location.port = self.port
        return location


def _rebuild_location(addr, port):
    """A Location unpickled: its address as it was resolved where it was
    made, not looked up again here (that could block the hub on a name, and
    costs an inet_pton for every Location of every frame)."""
    if type(addr) is not str or type(port) is not int:
        raise TypeError('a Location of %r, %r: not an address and a port' % (addr, port))
    location = _new_location(Location)
    location.addr = addr
    location.port = port
    return location


_new_location = object.__new__


class FdWaiter:
    """Blocks the calling greenlet until a descriptor is ready.

    Works in whichever thread's hub calls it: each wait makes its own io
    watcher in the current thread's hub. `cancel(error)` wakes every greenlet
    still waiting (in any thread) with `error`; owners call it before closing
    the descriptor, because a closed descriptor is silently dropped by epoll
    and its waiter would otherwise sleep until its deadline, or forever.
    """

    __slots__ = ('_pending',)

    def __init__(self):
        # (started io watcher, the hub it waits in) of each wait: a list, as
        # append and remove are atomic and an emptied list frees its room (a
        # dict kept 160 bytes after its first wait, on each of thousands of
        # sockets)
        self._pending = []

    def wait(self, fd, event, deadline, timeout_error):
        """Wait for `event` (READ/WRITE) on `fd`; `deadline` is a
        time.monotonic() value or None; raise timeout_error() when it passes."""
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise timeout_error()
        hub = gevent.get_hub()
        watcher = hub.loop.io(fd, event)
        entry = (watcher, hub)
        self._pending.append(entry)
        try:
            if timeout is None:
                hub.wait(watcher)
            else:
                with gevent.Timeout(timeout, timeout_error()):
                    hub.wait(watcher)
        finally:
            self._pending.remove(entry)
            watcher.close()

    def cancel(self, error):
        here = threading.get_ident()
        # list() of a list is atomic under the GIL; the waiting threads may be
        # adding and removing watchers while this runs.
        for entry in list(self._pending):
            watcher, hub = entry
            if hub.thread_ident == here:
                hub.cancel_wait(watcher, error)
            else:
                hub.loop.run_callback_threadsafe(self._cancel_in_hub, entry, error)

    def _cancel_in_hub(self, entry, error):
        # Runs in the waiter's hub thread; the wait may have ended meanwhile.
        if any(entry is waiting for waiting in self._pending):
            entry[1].cancel_wait(entry[0], error)


def _block_until_ready(fd, event, deadline, timeout_error):
    """The blocking-mode counterpart of FdWaiter.wait: blocks the OS thread."""
    timeout = None
    if deadline is not None:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise timeout_error()
    if hasattr(select, 'poll'):
        poller = select.poll()
        poller.register(fd, select.POLLIN if event == READ else select.POLLOUT)
        ready = poller.poll(None if timeout is None else timeout * 1000)
    else:
        wanted = [fd]
        ready = select.select(wanted, [], [], timeout)[0] if event == READ else \
            select.select([], wanted, [], timeout)[1]
    if not ready:
        raise timeout_error()


def _socket_timeout():
    return socket.timeout('timed out')


def _pinned_tls_version(ssl_version):
    """The single TLS version an `ssl.PROTOCOL_*` (or `ssl.TLSVersion`) value
    asks for, or None when it means 'negotiate the best'."""
    if ssl_version is None:
        return None
    if isinstance(ssl_version, ssl.TLSVersion):
        return ssl_version
    name = getattr(ssl_version, 'name', '')
    if name in ('PROTOCOL_TLS', 'PROTOCOL_SSLv23', 'PROTOCOL_TLS_CLIENT', 'PROTOCOL_TLS_SERVER'):
        return None
    if name.startswith('PROTOCOL_TLSv'):
        return ssl.TLSVersion[name[len('PROTOCOL_'):]]
    raise ValueError('unsupported ssl_version %r: use an ssl.PROTOCOL_TLS* constant or an '
                     'ssl.TLSVersion' % (ssl_version,))


def _tls_context(server_side, certfile, keyfile, ssl_version):
    """An SSLContext for one side. The client verifies the server's certificate
    against `certfile` itself (both ends share one self-made certificate, so
    there is no host name to check) and presents that certificate too; the
    server does not ask for client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    if not server_side:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certfile)
    context.load_cert_chain(certfile, keyfile)
    pinned = _pinned_tls_version(ssl_version)
    if pinned is not None:
        context.minimum_version = context.maximum_version = pinned
    return context


class AsyncSocket:
    """A socket wrapper whose I/O methods block only the calling greenlet.

    Also ``AsynCoroSocket``.

    :param sock: the socket to wrap. The wrapper takes it over, puts it in
        non-blocking mode and keeps its timeout; an AsyncSocket given here is
        unwrapped first.
    :param blocking: False: the I/O methods block only the calling greenlet;
        True: they block the OS thread.
    :param keyfile: the private key, if it is not in `certfile`.
    :param certfile: a certificate (PEM): `connect` and `accept` then add
        TLS.
    :param ssl_version: the TLS version (as set_ssl_version() takes it);
        None: the class's default.

    Attributes not defined here (bind, listen, getsockname, setsockopt,
    fileno, ...) are the wrapped socket's. A generator coroutine calls the
    I/O methods as ``data = yield sock.recv(1024)``.

    Timeouts: ``settimeout(t)`` bounds each later operation as a whole; when
    `t` passes, the operation raises `socket.timeout` (recvall returns the
    data it has instead, if any). ``t <= 0`` means: do what is possible now.
    """

    _default_ssl_version = ssl.PROTOCOL_TLS

    def __init__(self, sock, blocking=False, keyfile=None, certfile=None, ssl_version=None):
        if isinstance(sock, AsyncSocket):
            sock = sock.unwrap()
        self._timeout = sock.gettimeout() or None
        sock.setblocking(False)
        self._sock = sock
        self._blocking = bool(blocking)
        self._keyfile = keyfile
        self._certfile = certfile
        self._ssl_version = ssl_version if ssl_version is not None else self._default_ssl_version
        self._waiter = FdWaiter()

    def __getattr__(self, name):
        if name.startswith('__') or name == '_sock':
            raise AttributeError(name)
        sock = self._sock
        if sock is None:
            raise AttributeError('%r of an AsyncSocket that was unwrapped' % name)
        return getattr(sock, name)

    def __repr__(self):
        return '<AsyncSocket %s %r>' % ('blocking' if self._blocking else 'async', self._sock)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False

    @classmethod
    def get_ssl_version(cls):
        """The TLS version new AsyncSockets use when given none.

        :returns: an ``ssl.PROTOCOL_*`` constant (``ssl.PROTOCOL_TLS`` unless
            set) or an ``ssl.TLSVersion``.
        """
        return cls._default_ssl_version

    @classmethod
    def set_ssl_version(cls, ssl_version):
        """Set the TLS version of the AsyncSockets made later.

        :param ssl_version: an ``ssl.PROTOCOL_TLS*`` constant
            (``PROTOCOL_TLS`` negotiates the best) or an ``ssl.TLSVersion``.
        :raises ValueError: for any other ``ssl.PROTOCOL_*`` value.
        """
        _pinned_tls_version(ssl_version)    # reject nonsense now, not at connect time
        cls._default_ssl_version = ssl_version

    # -- plain calls ----------------------------------------------------------

    def settimeout(self, timeout):
        """Bound each later operation, as a whole, to `timeout` seconds.

        :param timeout: seconds; None: no bound; <= 0: do only what is
            possible at once.
        """
        self._timeout = None if timeout is None else float(timeout)

    def gettimeout(self):
        """:returns: the bound set by settimeout(), in seconds; None: none."""
        return self._timeout

    def setblocking(self, flag):
        """Switch between blocking and greenlet-async mode.

        :param flag: True: the I/O methods block the OS thread; False: only
            the calling greenlet.
        """
        self._blocking = bool(flag)

    def close(self):
        """Close the socket; greenlets still waiting on it get OSError(EBADF).

        Does nothing once the socket is unwrapped.
        """
        sock = self._sock
        if sock is None:
            return
        self._waiter.cancel(OSError(errno.EBADF, 'socket closed while a greenlet waited on it'))
        sock.close()

    def unwrap(self):
        """Detach the wrapped socket; the wrapper is unusable afterwards.

        Greenlets still waiting on it get OSError(EBADF).

        :returns: the wrapped socket (the TLS socket, if TLS is on), with this
            wrapper's timeout.
        :raises OSError: (EBADF) if it was unwrapped already.
        """
        sock = self._sock
        if sock is None:
            raise OSError(errno.EBADF, 'AsyncSocket was already unwrapped')
        self._waiter.cancel(OSError(errno.EBADF, 'socket unwrapped while a greenlet waited on it'))
        self._sock = None
        if sock.fileno() >= 0:
            sock.settimeout(self._timeout)
        return sock

    # -- the wait/retry loop ----------------------------------------------------

    def _deadline(self):
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, event, deadline):
        if self._blocking:
            _block_until_ready(self._sock.fileno(), event, deadline, _socket_timeout)
        else:
            self._waiter.wait(self._sock.fileno(), event, deadline, _socket_timeout)

    def _io(self, event, deadline, method, *args):
        """Call sock.<method>(*args) until it does not block; waits for `event`
        in between (or for what TLS asks for: a read may need to write)."""
        while True:
            sock = self._sock
            if sock is None:
                raise OSError(errno.EBADF, 'AsyncSocket was unwrapped')
            try:
                return getattr(sock, method)(*args)
            except ssl.SSLWantReadError:
                self._wait(READ, deadline)
            except ssl.SSLWantWriteError:
                self._wait(WRITE, deadline)
            except BlockingIOError:
                self._wait(event, deadline)

    # -- connections --------------------------------------------------------------

    def _resolve(self, address):
        """Resolve a host name in `address` without blocking the hub: gevent's
        resolver in async mode, the stdlib in blocking mode."""
        if self._sock.family not in (socket.AF_INET, socket.AF_INET6) or \
                not isinstance(address, tuple) or _is_ip_literal(address[0]):
            return address
        getaddrinfo = socket.getaddrinfo if self._blocking else gevent.socket.getaddrinfo
        infos = getaddrinfo(address[0], address[1], self._sock.family, self._sock.type)
        if not infos:
            raise OSError('host name %r did not resolve to an address' % (address[0],))
        return infos[0][4]

    def connect(self, address):
        """Connect to `address`; with a certfile, also do TLS's client side.

        The server's certificate is verified against the certfile. A host
        name in `address` is resolved without blocking the hub.

        :param address: what the socket's `connect` takes: ``(host, port)``.
        :returns: 0.
        :raises OSError: if the connection fails (ssl.SSLError for TLS);
            socket.timeout when the timeout passes (connect and TLS handshake
            together).

        Blocks the calling greenlet. Call form:
        ``yield sock.connect((host, port))``.
        """
        deadline = self._deadline()
        address = self._resolve(address)
        err = self._sock.connect_ex(address)
        if err in _CONNECT_PENDING:
            self._wait(WRITE, deadline)
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err and err != errno.EISCONN:
            raise OSError(err, '%s (connecting to %s)' % (os.strerror(err), address))
        if self._certfile:
            self._start_tls(server_side=False, deadline=deadline)
        return 0

    def create_connection(self, host_port, timeout=None, source_address=None):
        """Like `socket.create_connection`, on this socket.

        :param host_port: ``(host, port)`` to connect to, as :meth:`connect`.
        :param timeout: if given, set with settimeout() first (it stays).
        :param source_address: if given, ``(host, port)`` to bind to first.
        :returns: 0.
        :raises OSError: as :meth:`connect`.

        Blocks the calling greenlet. Call form:
        ``yield sock.create_connection((host, port))``.
        """
        if timeout is not None:
            self.settimeout(timeout)
        if source_address:
            self._sock.bind(source_address)
        return self.connect(host_port)

    def accept(self):
        """Wait for a connection on this listening socket.

        With a certfile the server side of the TLS handshake is done here,
        bounded by this socket's timeout (if positive, else 10 seconds).

        :returns: ``(AsyncSocket, addr)``: the new socket has this one's mode
            and TLS settings, and no timeout.
        :raises socket.timeout: when the timeout passes with no connection.
        :raises OSError: if the TLS handshake fails (ssl.SSLError, say) or
            times out: the connection is closed and a WARNING logged.

        Blocks the calling greenlet. Call form:
        ``conn, addr = yield sock.accept()``.
        """
        conn, addr = self._io(READ, self._deadline(), 'accept')
        conn = AsyncSocket(conn, blocking=self._blocking, keyfile=self._keyfile,
                           certfile=self._certfile, ssl_version=self._ssl_version)
        conn._timeout = None
        if self._certfile:
            bound = self._timeout if self._timeout and self._timeout > 0 else _TLS_HANDSHAKE_TIMEOUT
            try:
                conn._start_tls(server_side=True, deadline=time.monotonic() + bound)
            except (OSError, ValueError) as exc:
                log.warning('TLS handshake with %s failed: %s; connection closed', addr, exc)
                conn.close()
                raise
        return conn, addr

    def _start_tls(self, server_side, deadline):
        if deadline is None:
            deadline = time.monotonic() + _TLS_HANDSHAKE_TIMEOUT
        context = _tls_context(server_side, self._certfile, self._keyfile, self._ssl_version)
        self._sock = context.wrap_socket(self._sock, server_side=server_side,
                                         do_handshake_on_connect=False)
        self._io(READ, deadline, 'do_handshake')

    # -- data -----------------------------------------------------------------------

    def recv(self, bufsize):
        """Receive up to `bufsize` bytes, waiting until some arrive.

        :returns: the bytes; ``b''`` at EOF.
        :raises socket.timeout: when the timeout passes before any byte.

        Blocks the calling greenlet. Call form: ``data = yield sock.recv(n)``.
        """
        return self._io(READ, self._deadline(), 'recv', bufsize)

    def recvall(self, bufsize):
        """Receive exactly `bufsize` bytes, or fewer at EOF.

        :returns: the bytes; when the timeout passes, those read so far.
        :raises socket.timeout: when the timeout passes before any byte.

        Blocks the calling greenlet. Call form:
        ``data = yield sock.recvall(n)``.
        """
        return self._recv_exact(bufsize, self._deadline(), partial_ok=True)

    def _recv_exact(self, size, deadline, partial_ok):
        chunks = []
        remaining = size
        try:
            while remaining > 0:
                chunk = self._io(READ, deadline, 'recv', min(remaining, _CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except socket.timeout:
            if not (partial_ok and chunks):
                raise
        return chunks[0] if len(chunks) == 1 else b''.join(chunks)

    def send(self, data):
        """Send what the socket takes of `data`, waiting until it takes some.

        :returns: the number of bytes sent.
        :raises socket.timeout: when the timeout passes first.

        Blocks the calling greenlet. Call form: ``n = yield sock.send(data)``.
        """
        return self._io(WRITE, self._deadline(), 'send', data)

    def sendall(self, data):
        """Send all of `data`.

        :returns: None.
        :raises socket.timeout: when the timeout passes first (part of
            `data` may have been sent).

        Blocks the calling greenlet. Call form: ``yield sock.sendall(data)``.
        """
        self._send_all(data, self._deadline())

    def _send_all(self, data, deadline):
        view = memoryview(data).cast('B')
        sent = 0
        while sent < len(view):
            sent += self._io(WRITE, deadline, 'send', view[sent:])

    def recvfrom(self, bufsize):
        """Receive one datagram of at most `bufsize` bytes.

        :returns: ``(bytes, address)``.
        :raises socket.timeout: when the timeout passes first.

        Blocks the calling greenlet. Call form:
        ``data, addr = yield sock.recvfrom(n)``.
        """
        return self._io(READ, self._deadline(), 'recvfrom', bufsize)

    def sendto(self, data, address):
        """Send one datagram to `address`.

        :returns: the number of bytes sent.
        :raises socket.timeout: when the timeout passes first.

        Blocks the calling greenlet. Call form:
        ``yield sock.sendto(data, address)``.
        """
        return self._io(WRITE, self._deadline(), 'sendto', data, address)

    def send_msg(self, data):
        """Send `data` as one frame: a 4-byte big-endian length, then `data`.

        :returns: None.
        :raises socket.timeout: when the timeout passes first (the frame may
            be cut short).

        Blocks the calling greenlet. Call form: ``yield sock.send_msg(data)``.
        """
        deadline = self._deadline()
        header = _MSG_HEADER.pack(len(data))
        if len(data) <= 65536:      # one syscall for small frames
            self._send_all(header + bytes(data), deadline)
        else:                       # no copy of a big payload
            self._send_all(header, deadline)
            self._send_all(data, deadline)

    def recv_msg(self):
        """Receive one frame sent by :meth:`send_msg`.

        :returns: its payload; ``b''`` when the peer closed the connection
            at a frame boundary (an empty payload also reads as ``b''``).
        :raises OSError: (EPIPE) when the peer closed the connection, or the
            timeout passed, in the middle of a frame.
        :raises socket.timeout: when the timeout passes before any byte.

        Blocks the calling greenlet. Call form:
        ``msg = yield sock.recv_msg()``.
        """
        deadline = self._deadline()
        header = self._recv_exact(_MSG_HEADER.size, deadline, partial_ok=True)
        if not header:
            return b''
        if len(header) < _MSG_HEADER.size:
            raise OSError(errno.EPIPE, 'connection closed inside a message header '
                          '(%d of %d bytes)' % (len(header), _MSG_HEADER.size))
        size = _MSG_HEADER.unpack(header)[0]
        try:
            data = self._recv_exact(size, deadline, partial_ok=True)
        except socket.timeout:
            data = b''
        if len(data) < size:
            raise OSError(errno.EPIPE, 'message of %d bytes cut short after %d bytes'
                          % (size, len(data)))
        return data


AsynCoroSocket = AsyncSocket


# =============================================================== peer protocol

PROTOCOL = b'asyncoro-gevent/2'    # /2: coroutine references pickle flat
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
HANDSHAKE_LIMIT = 256          # the largest frame accepted before authentication
_NONCE_SIZE = 32
_MAC_SIZE = hashlib.sha256().digest_size
_READ_SIZE = 256 * 1024
_READS_PER_TURN = 16           # reads of one connection in one turn of the hub, at most
_INLINE_FLUSH = 256 * 1024     # queued bytes at which send() writes at once
_GATHER_APART = 64 * 1024      # a payload larger than this is queued apart from its header
_GATHER_MAX = 512              # buffers written by one sendmsg (IOV_MAX is 1024 on Linux)
_IDLE, _SCHEDULED, _WRITING = range(3)      # Connection write states
_RLock = _get_original('threading', 'RLock')    # a real lock, even in a patched program
_PING_MAGIC = b'asyncoro-ping/1 '


class PeerError(ConnectionError):
    """A peer connection failed or was refused; the message says which and why."""


class PeerGone(PeerError):
    """The peer closed the connection during the handshake (it went away, or
    is not a peer): nothing to tell anyone about."""


class AuthError(PeerError):
    """The peer does not hold the same secret (or does not speak this protocol)."""


class FrameError(PeerError):
    """A frame was malformed or larger than allowed."""


def secret_key(secret):
    """The HMAC key for a secret given as str, bytes or None (None: '')."""
    if secret is None:
        return b''
    return secret.encode('utf-8') if isinstance(secret, str) else bytes(secret)


class _ReadBuffer(threading.local):
    """Each thread's buffer for Connection reads (frames are copied out)."""

    def __init__(self):
        self.data = bytearray(_READ_SIZE)


_read_buffer = _ReadBuffer()


class _Pickling(threading.local):
    """One reusable cloudpickle Pickler per thread (building one per message
    costs three times the pickling of a small message)."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.pickler = cloudpickle.Pickler(self.buffer, protocol=5)
        self.busy = False


_pickling = _Pickling()


# The types whose instances plain pickle writes exactly as cloudpickle
# would: atomic values, and classes that pickle as a reference through
# __reduce__ and a module-level function (Location here; the coroutine and
# channel references of the layers above, added with plain_type).
_PLAIN_TYPES = {str, bytes, int, float, bool, type(None), Location}

# Types whose instances are plain when their parts are (see plain_type):
# type -> a function giving those parts.
_PLAIN_PARTS = {}

# How many items _plain looks at before it leaves the rest to cloudpickle.
_PLAIN_ITEMS = 256


def plain_type(cls, parts=None):
    """Pickle instances of exactly `cls` with the plain pickler from now on.

    Only for a class whose `__reduce__` gives a module-level function (or
    the class) and plain values (a reference to a coroutine, say):
    cloudpickle would write the same bytes, three to ten times slower.

    :param parts: for a class whose instances carry other data (an
        exception class: its args), a function giving that data as a tuple;
        an instance is then plain when those parts are, and when it has no
        `__dict__` of its own that pickle would add.
    """
    if parts is None:
        _PLAIN_TYPES.add(cls)
    else:
        _PLAIN_PARTS[cls] = parts


def _plain(obj):
    """True for data that plain pickle writes exactly as cloudpickle would:
    values of _PLAIN_TYPES, built-in classes that their name finds
    (StopIteration, say; not `function`), and tuples, lists and dicts of
    such data (a request carrying a job's arguments, say), at most
    _PLAIN_ITEMS items in all; instances of the types plain_type was given
    parts for, when those parts are plain. Anything else goes through
    cloudpickle."""
    plain = _PLAIN_TYPES
    kind = type(obj)
    if kind in plain:
        return True
    todo = [obj]
    left = _PLAIN_ITEMS
    while todo:
        obj = todo.pop()
        kind = type(obj)
        if kind is tuple or kind is list:
            items = obj
        elif kind is dict:
            items = tuple(obj) + tuple(obj.values())
        elif kind is type:      # pickled by name: only a class that name finds
            if obj.__module__ != 'builtins' or getattr(builtins, obj.__qualname__, None) is not obj:
                return False
            continue
        else:
            parts = _PLAIN_PARTS.get(kind)
            if parts is None or getattr(obj, '__dict__', None):
                return False
            items = parts(obj)
        left -= len(items)
        if left < 0:
            return False
        for item in items:
            if type(item) not in plain:
                todo.append(item)
    return True


def dumps(obj):
    """Pickle `obj` for a peer: plain data with pickle protocol 5; functions,
    classes and closures that the peer cannot import (e.g. from `__main__`) by
    value, through cloudpickle. Raises pickle.PicklingError (or TypeError,
    AttributeError) for what cannot be pickled."""
    if _plain(obj):
        return _pickle_dumps(obj, 5)
    state = _pickling
    if state.busy:     # re-entered from a __reduce__: use a fresh pickler
        return cloudpickle.dumps(obj, protocol=5)
    state.busy = True
    buffer = state.buffer
    try:
        buffer.seek(0)
        buffer.truncate()
        state.pickler.clear_memo()
        state.pickler.dump(obj)
        return buffer.getvalue()
    finally:
        state.busy = False


def class_tracker_id(cls):
    """The id under which cloudpickle pickles `cls` by value (made on first
    use); see track_class."""
    return cloudpickle.cloudpickle._get_or_create_tracker_id(cls)


def track_class(tracker_id, cls):
    """Make `cls` (say, a class exec'd here from the source of a class
    elsewhere) the class that instances pickled by value under `tracker_id`
    unpickle to here, and have `cls` pickle under that id: then isinstance
    holds on both sides."""
    cloudpickle.cloudpickle._lookup_class_or_track(tracker_id, cls)


loads = pickle.loads
_pickle_dumps = pickle.dumps

_FRAME_HEADER = struct.Struct('>I')
_unpack_header = _FRAME_HEADER.unpack_from


def frame(payload):
    """`payload` with its 4-byte big-endian length in front."""
    return _FRAME_HEADER.pack(len(payload)) + payload


def read_pipe_frame(fd):
    """The next frame on a pipe (a blocking descriptor): its unpickled
    payload, or None at the end of the pipe (or inside a frame)."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    data = _read_exact(fd, _FRAME_HEADER.unpack(header)[0])
    return None if data is None else loads(data)


def _read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b''.join(chunks)


PIPE_ATOMIC = 4096 - 4     # a frame up to this long is written to a pipe in one piece


def write_pipe_frame(fd, obj):
    """Write `obj` as one frame to a pipe; several processes may write to
    one pipe, and a frame of at most PIPE_ATOMIC bytes never mixes with
    another. Returns the payload's size."""
    payload = dumps(obj)
    data = frame(payload)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(payload)


def _recv_handshake_frame(sock, deadline, peer):
    header = sock._recv_exact(4, deadline, partial_ok=False)
    if len(header) < 4:
        raise PeerGone('%s closed the connection during the handshake' % peer)
    size = _FRAME_HEADER.unpack(header)[0]
    if size > HANDSHAKE_LIMIT:
        raise AuthError('%s sent a %d-byte frame during the handshake (at most %d); '
                        'not an asyncoro peer?' % (peer, size, HANDSHAKE_LIMIT))
    data = sock._recv_exact(size, deadline, partial_ok=False)
    if len(data) < size:
        raise PeerGone('%s closed the connection during the handshake' % peer)
    return data


_OTHER_SECRET = '%s failed authentication (not the same secret)'


def _mac(key, role, first, second):
    return hmac.new(key, role + first + second, hashlib.sha256).digest()


def handshake(sock, server_side, key, timeout, peer):
    """Prove to the peer on `sock` (an AsyncSocket, TLS already on if used)
    that we hold `key`, and check that it does. Blocks the calling greenlet at
    most `timeout` seconds. Raises AuthError (wrong secret, not a peer),
    socket.timeout or OSError; nothing the peer sent is unpickled here."""
    deadline = time.monotonic() + timeout
    mine = os.urandom(_NONCE_SIZE)
    if server_side:
        hello = _recv_handshake_frame(sock, deadline, peer)
        if not hello.startswith(PROTOCOL) or len(hello) != len(PROTOCOL) + _NONCE_SIZE:
            raise AuthError('%s does not speak %s' % (peer, PROTOCOL.decode()))
        theirs = hello[len(PROTOCOL):]
        sock._send_all(frame(PROTOCOL + mine + _mac(key, b'server', theirs, mine)), deadline)
        proof = _recv_handshake_frame(sock, deadline, peer)
        if not hmac.compare_digest(proof, _mac(key, b'client', mine, theirs)):
            raise AuthError(_OTHER_SECRET % peer)
    else:
        sock._send_all(frame(PROTOCOL + mine), deadline)
        reply = _recv_handshake_frame(sock, deadline, peer)
        if (not reply.startswith(PROTOCOL) or
                len(reply) != len(PROTOCOL) + _NONCE_SIZE + _MAC_SIZE):
            raise AuthError('%s does not speak %s' % (peer, PROTOCOL.decode()))
        theirs = reply[len(PROTOCOL):len(PROTOCOL) + _NONCE_SIZE]
        # our proof goes even when theirs failed, so that they find out too
        sock._send_all(frame(_mac(key, b'client', theirs, mine)), deadline)
        if not hmac.compare_digest(reply[-_MAC_SIZE:], _mac(key, b'server', mine, theirs)):
            raise AuthError(_OTHER_SECRET % peer)


def listen(addr, port, family=None):
    """A TCP socket listening on `addr`:`port` (0: any port), with
    SO_REUSEADDR; OSError naming the address if it cannot bind."""
    family = family or (socket.AF_INET6 if ':' in addr else socket.AF_INET)
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((addr, port))
    except OSError as exc:
        listener.close()
        raise OSError(exc.errno, 'cannot listen on %s:%s: %s' % (addr, port, exc.strerror)) \
            from exc
    listener.listen(128)
    return listener


def connect(addr, key, timeout, certfile=None, keyfile=None):
    """An authenticated AsyncSocket connected to `addr` (host, port), TLS if
    certfile is given. Blocks the calling greenlet at most `timeout` seconds
    in all. Raises PeerError (refused, unreachable, wrong secret) or
    socket.timeout."""
    raw = socket.socket(socket.AF_INET6 if ':' in addr[0] else socket.AF_INET,
                        socket.SOCK_STREAM)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = AsyncSocket(raw, certfile=certfile, keyfile=keyfile)
    sock.settimeout(timeout)
    peer = '%s:%s' % addr[:2]
    connected = False
    try:
        try:
            sock.connect(addr)
        except (OSError, ValueError) as exc:
            raise PeerError('cannot connect to %s: %s' % (peer, exc)) from exc
        handshake(sock, False, key, timeout, peer)
        connected = True
    finally:
        if not connected:
            sock.close()
    sock.settimeout(None)
    return sock


def accept(sock, key, timeout, certfile=None, keyfile=None):
    """Finish accepting `sock` (a plain AsyncSocket from a listener): TLS if
    certfile is given, then the handshake. Raises PeerError or socket.timeout."""
    peer = '%s:%s' % sock.getpeername()[:2]
    sock.settimeout(timeout)
    if certfile:
        sock._certfile, sock._keyfile = certfile, keyfile
        try:
            sock._start_tls(server_side=True, deadline=time.monotonic() + timeout)
        except (OSError, ValueError) as exc:
            raise PeerError('TLS handshake with %s failed: %s' % (peer, exc)) from exc
    handshake(sock, True, key, timeout, peer)
    sock.settimeout(None)
    return sock


class FrameDecoder:
    """The frames of one byte stream, without any I/O: each frame is a 4-byte
    big-endian length and that many bytes of payload.

    `feed(data, end)` takes what one read brought (the first `end` bytes of
    `data`) and returns the payloads of the frames it completes, in order;
    the start of a frame it cut is kept for the next feed. A frame announced
    larger than `max_frame_size` is never buffered: `error` then says so,
    what came before it is still returned, and the stream is broken (later
    feeds return nothing).
    """

    __slots__ = ('max_frame_size', 'error', 'oversize', '_held')

    def __init__(self, max_frame_size):
        self.max_frame_size = max_frame_size
        self.error = None           # why the stream is broken
        self.oversize = None        # the size a frame too large announced
        self._held = None           # bytearray: the start of a frame a read cut

    def held(self):
        """How many bytes of a cut frame wait for the rest."""
        return len(self._held) if self._held is not None else 0

    def feed(self, data, end):
        if self.error is not None:
            return []
        held = self._held
        if held:            # the rest of a frame came: parse from what was held
            held += memoryview(data)[:end]
            data, end = held, len(held)
        unpack = _unpack_header
        limit = self.max_frame_size
        frames = []
        start = 0
        while end - start >= 4:
            size = unpack(data, start)[0]
            if size > limit:
                self.error = 'frame of %d bytes exceeds max_frame_size=%d' % (size, limit)
                self.oversize = size
                break
            stop = start + 4 + size
            if stop > end:
                break
            frames.append(data[start + 4:stop])     # one copy
            start = stop
        if self.error is not None:      # broken: nothing more is read, or kept
            self._held = None
        elif held:
            del held[:start]
            if not held:    # (an empty bytearray keeps the room it had)
                self._held = None
        elif start < end:   # keep the start of a frame for the next read
            self._held = bytearray(memoryview(data)[start:end])
        return frames


class Connection:
    """One authenticated peer connection: frames in, frames out.

    `on_frames(conn, payloads)` is called with the frames of each read, in order;
    `on_close(conn, reason)` once, when the connection ends for any reason.
    `send(payload)` queues a frame and never blocks. A frame longer than
    `max_frame_size` closes the connection (reading) or raises FrameError
    (sending). Everything runs in the hub thread that called `start()`, except
    `guard_read`, `guard_send` and `guard_flush`: the guard thread calls those
    while that hub is stalled (a coroutine computing without yielding).

    Reading: an io watcher of the hub calls _on_readable while the socket
    is readable; it reads into its thread's buffer and hands the frames of
    each read to on_frames in the hub greenlet (no reader greenlet: two
    greenlet switches fewer per message). `run_reads`, if given, is how the
    hub calls each read: the runtime passes one that runs the coroutines the
    frames woke right after, in the same turn of the hub.

    Writing: the first frame queued on an idle connection in a turn of the
    hub is written at once (a lone message, a request or its answer, goes
    before its sender parks); the frames that follow it in the same turn
    schedule a flush at the end of the turn (a loop callback, not a
    greenlet), which writes everything queued by then without blocking, many
    frames in one system call. Only when the socket will not take it all
    does a writer greenlet wait for it. A sender that queues more than
    _INLINE_FLUSH bytes without yielding writes what the socket takes as it
    goes, so the far side can start on them.

    Who writes (the invariant that keeps a frame from being stranded
    half-sent):

    - `_lock` is the right to write. Bytes leave `_outbox` only while it is
      held, and whatever the socket did not take is back at the head of
      `_outbox` before it is released. So while the lock is free every unsent
      byte is in `_outbox`, in order, and frames go out whole whoever writes.
    - `_state`, changed only under `_lock` (together with `_outbox`), names
      the one owner of the writing in the hub: IDLE, no one, and then
      `_outbox` is empty; SCHEDULED, the hub's flush callback is queued;
      WRITING, the hub's writer greenlet runs and does not stop while
      `_outbox` holds a byte. So whenever `_outbox` is not empty, a writer in
      the hub is on its way.
    - One exception to "under the lock": send_request, in the hub thread,
      appends a small frame to `_outbox` without the lock when `_state` is
      not IDLE. Only the hub thread makes a connection IDLE, so an owner is
      on its way until send_request returns; and an append at the tail
      (atomic, under the GIL) does not disturb a writer in another thread
      that takes bytes from the head.
    - Whoever else writes does not own the writing: the guard thread, and a
      sender in the hub whose long burst finds the writer greenlet waiting
      for the hub it holds (`_write_along`). They write what the socket
      takes at once, under the lock, and leave `_state` alone; the owner
      finds what is left, or nothing. When the guard queues a frame on an
      IDLE connection, it makes the hub the owner (SCHEDULED, and the flush
      callback queued thread-safely) before it lets go of the lock.
    """

    def __init__(self, sock, peer, max_frame_size, on_frames, on_close, run_reads=None):
        self.sock = sock
        self.peer = peer                    # 'addr:port' of the far end, for messages
        self.max_frame_size = max_frame_size
        self.info = None                    # what the owner learns of the peer
        self._on_frames = on_frames
        self._on_close = on_close
        # bytes to write: frames, or a header and its payload (a list, not a deque:
        # 56 bytes empty against 600, on each of a scheduler's thousands of connections)
        self._outbox = []
        self._sent = 0                      # bytes of _outbox[0] written already
        self._queued = 0                    # bytes queued since the last write (a hint)
        self._state = _IDLE
        # the hub's turn (loop iteration) of the last frame written at once; a
        # loop that does not count its turns (gevent's libuv loop says -1)
        # writes every frame but its first at the end of a turn instead
        self._written_turn = None
        self._loop = None
        self._gather = False                # the socket writes a list of buffers at once
        self._drained = None                # gevent Event while someone waits in flush()
        self._run_reads = run_reads
        self._reading = None                # the hub's io watcher that reads (see start)
        self._writer = None
        self._lock = _RLock()
        self._decoder = FrameDecoder(max_frame_size)    # bytes read -> whole frames
        self._failed = None                 # why reading failed, for the hub to close on
        self._in_read = False               # _on_readable is running (read_now waits for it)
        self.closed = None                  # the reason, once closed

    def __repr__(self):
        return '<Connection %s%s>' % (self.peer, ' closed' if self.closed else '')

    def fileno(self):
        return self.sock.fileno()

    def start(self):
        """Start reading, in the hub of the calling thread: an io watcher of
        that hub calls _on_readable whenever the socket is readable (no
        reader greenlet: frames are handled in the hub greenlet, without two
        switches per read)."""
        self._loop = gevent.get_hub().loop
        raw = self.sock._sock
        self._gather = hasattr(raw, 'sendmsg') and not isinstance(raw, ssl.SSLSocket)
        self._reading = self._loop.io(raw.fileno(), READ)
        self._start_reading()

    def _start_reading(self):
        if self._run_reads is None:
            self._reading.start(self._on_readable)
        else:
            self._reading.start(self._run_reads, self._on_readable)

    def _died(self, failure):
        """A greenlet of this connection died of a bug (logged): the
        connection cannot go on."""
        self.close('internal error: %s' % failure)

    def _queue(self, payload):
        """Put a frame at the end of _outbox (the caller holds _lock)."""
        size = len(payload)
        if size > _GATHER_APART:        # a big payload goes as it is, never copied
            self._outbox.append(_FRAME_HEADER.pack(size))
            self._outbox.append(payload)
        else:
            self._outbox.append(_FRAME_HEADER.pack(size) + payload)
        self._queued += size + 4

    def send(self, payload):
        """Queue one frame; FrameError if too large, PeerError if closed."""
        if self.closed:
            raise PeerError('connection to %s is closed (%s)' % (self.peer, self.closed))
        size = len(payload)
        if size > self.max_frame_size:
            raise FrameError('a %d-byte message for %s exceeds max_frame_size=%d'
                             % (size, self.peer, self.max_frame_size))
        failed = None
        with self._lock:
            state = self._state
            turn = self._loop.iteration
            if state == _IDLE and turn != self._written_turn:
                # the first frame of this turn on an idle connection goes now
                self._written_turn = turn
                if size <= _GATHER_APART:
                    failed = self._write_frame(_FRAME_HEADER.pack(size) + payload)
                else:
                    self._queue(payload)
                    failed = self._write_or_hand_over()
            else:
                self._queue(payload)
                if state == _IDLE:              # a burst: the rest go together
                    self._state = _SCHEDULED
                    self._loop.run_callback(self._flush)
                elif self._queued > _INLINE_FLUSH:  # a long burst: the far side can start on it
                    if state == _SCHEDULED:
                        failed = self._write_or_hand_over()
                    else:   # the writer greenlet owns the writing and waits for the hub
                        failed = self._write_along()
        if failed:
            self.close(failed)

    def _write_frame(self, data):
        """Write one frame on an IDLE connection (the caller holds _lock):
        what the socket does not take goes to the head of _outbox and a
        writer takes it over. Returns why the connection failed, or None."""
        try:
            sent = self.sock._sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except (OSError, ValueError) as exc:
            return 'write failed: %s' % exc
        if sent == len(data):
            return None
        self._outbox.append(data)
        self._sent = sent
        return self._write_or_hand_over()

    def _write_along(self):
        """Write what the socket takes now without taking the writing over
        (the caller holds _lock); returns why the connection failed, or None."""
        try:
            self._write_some()
        except (OSError, ValueError) as exc:
            return 'write failed: %s' % exc
        return None

    def send_request(self, head, message):
        """Pickle `head + (message,)` and queue it, as send() does; `head`
        holds plain values only (a request's kind, ids and names), so only
        `message` is looked at to choose the pickler. In the hub thread only
        (like send). Raises what dumps() and send() raise, and only before it
        queued anything."""
        if type(message) in _PLAIN_TYPES or _plain(message):
            payload = _pickle_dumps(head + (message,), 5)
        else:
            payload = dumps(head + (message,))
        size = len(payload)
        # a stream's common case: an owner of the writing is on its way, so
        # the frame only joins _outbox, and without the lock (see the class
        # docstring: why that is safe here)
        if self._state != _IDLE and self._queued <= _INLINE_FLUSH and size <= _GATHER_APART \
                and size <= self.max_frame_size and self.closed is None:
            self._outbox.append(_FRAME_HEADER.pack(size) + payload)
            self._queued += size + 4
            return
        self.send(payload)

    def push(self):
        """In the hub: write what is queued now, in this greenlet, instead of
        at the hub's next turn (an answer that must be on the wire before
        what it started runs)."""
        failed = None
        with self._lock:
            if self._state == _SCHEDULED and not self.closed:
                failed = self._write_or_hand_over()
        if failed:
            self.close(failed)

    def _write_some(self):
        """Write from the head of _outbox what the socket takes now (the
        caller holds _lock). Returns True once _outbox is empty, else the
        event (WRITE, or READ for TLS) to wait for before writing more.
        Raises OSError or ValueError when the connection failed."""
        outbox = self._outbox
        sock = self.sock._sock
        self._queued = 0
        while outbox:
            head = outbox[0]
            if self._sent:
                head = memoryview(head)[self._sent:]
            try:
                if len(outbox) == 1:
                    sent = sock.send(head)
                elif self._gather:
                    sent = sock.sendmsg([head] + outbox[1:_GATHER_MAX])
                else:
                    sent = sock.send(self._joined(head))
            except (BlockingIOError, ssl.SSLWantWriteError):
                return WRITE
            except ssl.SSLWantReadError:
                return READ
            offset = self._sent + sent
            done = 0
            for item in outbox:
                if offset < len(item):
                    break
                offset -= len(item)
                done += 1
            del outbox[:done]
            self._sent = offset
            if outbox and offset:       # the socket is full
                return WRITE
        return True

    def _joined(self, head):
        """One buffer of the frames at the head of _outbox, at most
        _GATHER_APART bytes if they are small (for a socket that cannot
        write a list, TLS); it replaces them there."""
        outbox = self._outbox
        if len(head) >= _GATHER_APART:
            return head
        parts = [outbox[0][self._sent:]]
        size = len(parts[0])
        taken = 1
        while taken < len(outbox) and size + len(outbox[taken]) <= _GATHER_APART:
            part = outbox[taken]
            parts.append(part)
            size += len(part)
            taken += 1
        joined = b''.join(parts)
        outbox[:taken] = [joined]
        self._sent = 0
        return joined

    def _write_or_hand_over(self):
        """In the hub, holding _lock: write what the socket takes; if it does
        not take it all, the writer greenlet becomes the owner. Returns why
        the connection failed, or None."""
        try:
            done = self._write_some()
        except (OSError, ValueError) as exc:
            return 'write failed: %s' % exc
        if done is True:
            self._state = _IDLE
            self._notify_drained()
        elif self._state != _WRITING:
            self._state = _WRITING
            self._writer = spawn(self._write_loop, done, fail=self._died)
        return None

    def _flush(self):
        """The hub's flush callback (a stale one finds nothing to do)."""
        with self._lock:
            if self._state != _SCHEDULED or self.closed:
                return
            failed = self._write_or_hand_over()
        if failed:
            self.close(failed)

    def _write_loop(self, event):
        """The writer greenlet: waits until the socket takes more, writes,
        until _outbox is empty. It owns the writing (WRITING) until then."""
        failed = None
        while failed is None:
            try:
                self.sock._wait(event, None)
            except OSError:     # the socket was closed under the wait: close() did it all
                return
            with self._lock:
                if self.closed:
                    return
                try:
                    event = self._write_some()
                except (OSError, ValueError) as exc:
                    failed = 'write failed: %s' % exc
                    continue
                if event is True:
                    self._state = _IDLE
                    self._notify_drained()
                    return
        self.close(failed)

    def guard_send(self, payload):
        """For the guard thread while the hub is stalled: queue a frame and
        write what the socket takes now; the rest goes when the hub is back.
        False if the lock is taken (then hand the frame to the hub instead)."""
        if self.closed or not self._lock.acquire(False):
            return False
        try:
            if self.closed:
                return False
            self._queue(payload)
            try:
                self._write_some()
            except (OSError, ValueError) as exc:
                self._loop.run_callback_threadsafe(self.close, 'write failed: %s' % exc)
                return True
            if self._outbox and self._state == _IDLE:
                self._state = _SCHEDULED
                self._loop.run_callback_threadsafe(self._flush)
            return True
        finally:
            self._lock.release()

    @staticmethod
    def with_outbox(connections):
        """Those of `connections` with bytes waiting to be written (a glance,
        without their locks; one pass, for the guard's walk of thousands)."""
        return [conn for conn in connections if conn._outbox]

    def guard_flush(self):
        """For the guard thread while the hub is stalled: write what the
        socket takes now of the frames queued (a job that blocks right after
        its coroutine sent them would otherwise hold them back). Returns why
        the connection failed, or None."""
        if self.closed or not self._outbox or not self._lock.acquire(False):
            return None
        try:
            if self.closed:
                return None
            self._write_some()
            return None
        except (OSError, ValueError) as exc:
            return 'write failed: %s' % exc
        finally:
            self._lock.release()

    def _notify_drained(self):
        if self._drained is not None:
            self._drained.set()

    def flush(self, timeout):
        """Wait until every queued frame is written (or the connection ends);
        True if written."""
        while self._state != _IDLE and not self.closed:
            if self._drained is None or self._drained.is_set():
                self._drained = gevent.event.Event()
            if not self._drained.wait(timeout):
                break
        return self._state == _IDLE and not self.closed

    def _on_readable(self):
        """The hub's callback while the socket is readable. It reads what has
        come, at most _READS_PER_TURN reads (then the others get their turn;
        the watcher calls again at the next one), and hands each whole frame
        to on_frames, in the hub greenlet: on_frames must not block."""
        self._in_read = True
        try:
            for _ in range(_READS_PER_TURN):
                with self._lock:
                    drained = self._read_some(self._on_frames)
                if drained is not False:
                    break
            failed = self._failed
            if failed is None and drained == WRITE and not self.closed:
                # TLS must write before it reads on: wait for that in a
                # greenlet, not reading meanwhile (the socket may well be
                # readable, and every read would say the same)
                self._reading.stop()
                spawn(self._read_when_writable, fail=self._died)
        except Exception:       # our bug: this connection cannot go on, the others can
            log.error('reading from %s failed', self.peer, exc_info=True)
            failed = 'internal error'
        finally:
            self._in_read = False
        if failed is not None:
            self.close(failed)

    def read_now(self):
        """In the hub thread, from any greenlet: read what the socket holds
        now and hand its frames on, as the watcher would at its next call
        (for one who is about to give up on answers that may be there); what
        they wake runs at the hub's next turn. Does nothing while this
        connection is reading already (its frames are being handled)."""
        if self.closed is None and self._reading is not None and not self._in_read:
            self._on_readable()

    def _read_when_writable(self):
        try:
            self.sock._wait(WRITE, None)
        except OSError:     # the socket was closed under the wait: close() did it all
            return
        if not self.closed:
            self._start_reading()
            # TLS may hold what it read already, and the socket stay quiet:
            # read at the hub's next turn all the same (in the hub greenlet)
            if self._run_reads is None:
                self._loop.run_callback(self._on_readable)
            else:
                self._loop.run_callback(self._run_reads, self._on_readable)

    def _read_some(self, on_frames):
        """One non-blocking read; the whole frames it completes go to
        on_frames(self, [payload, ...]), in order (the caller holds _lock). Returns True when the socket looks drained.
        A failure is left in `_failed` for the hub thread to close on.

        It reads into its thread's buffer (a fresh 256 KB bytes object per
        read costs an mmap, mremap and munmap when malloc's heap has no room
        for it); its FrameDecoder keeps only the start of a frame it cut."""
        if self.closed or self._failed:
            return True
        data = _read_buffer.data
        try:
            received = self.sock._sock.recv_into(data)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except ssl.SSLWantWriteError:
            return WRITE
        except (OSError, ValueError) as exc:
            self._failed = 'read failed: %s' % exc
            return True
        if not received:
            self._failed = 'closed by peer'
            return True
        decoder = self._decoder
        frames = decoder.feed(data, received)
        if decoder.error is not None:
            log.warning('frame of %d bytes from %s exceeds max_frame_size=%d; connection closed',
                        decoder.oversize, self.peer, decoder.max_frame_size)
            self._failed = 'frame too large'
        if frames:
            on_frames(self, frames)
        return received < _READ_SIZE or self._failed is not None or self.closed is not None

    def guard_read(self, on_frames):
        """For another thread while the hub is stalled: read what has come and
        hand whole frames to on_frames. Returns the failure that the hub must
        close the connection for, or None."""
        if self.closed or not self._lock.acquire(False):
            return None
        try:
            for _ in range(64):
                if self._read_some(on_frames) is not False:
                    break
            return self._failed
        finally:
            self._lock.release()

    def close(self, reason='closed'):
        """Close now (queued frames are dropped; flush() first to send them)."""
        with self._lock:        # not while the guard thread is inside a write
            if self.closed:
                return
            self.closed = reason
            self._outbox.clear()
            self._sent = self._queued = 0
            if self._reading is not None:
                self._reading.close()   # before the descriptor goes (even in its own callback)
            self.sock.close()
        writer = self._writer
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        if self._drained is not None:
            self._drained.set()
        self._on_close(self, reason)


# ---------------------------------------------------------------- discovery

def broadcast_address(addr):
    """Where discovery pings for a runtime bound to `addr` go: the broadcast
    address of that address's own interface, never 255.255.255.255 or another
    interface. 127.x.x.x gives 127.255.255.255. None if there is none (IPv6,
    or no interface with that address)."""
    ip = ipaddress.ip_address(addr)
    if ip.version != 4:
        return None
    if ip.is_loopback:
        return '127.255.255.255'
    import psutil       # only nodes on a real network need the interface table
    for addrs in psutil.net_if_addrs().values():
        for entry in addrs:
            if entry.family == socket.AF_INET and entry.address == addr and entry.netmask:
                net = ipaddress.ip_network('%s/%s' % (addr, entry.netmask), strict=False)
                return str(net.broadcast_address)
    return None


def encode_ping(key, info):
    """A discovery datagram announcing `info` (a dict of JSON values), signed
    with `key` so that runtimes with another secret ignore it. JSON, not
    pickle: anyone on the network can send these."""
    body = json.dumps(info, sort_keys=True).encode()
    return _PING_MAGIC + hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b' ' + body


def decode_ping(key, datagram):
    """The info dict of a valid ping signed with `key`, else None."""
    if not datagram.startswith(_PING_MAGIC):
        return None
    try:
        mac, body = datagram[len(_PING_MAGIC):].split(b' ', 1)
    except ValueError:
        return None
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        info = json.loads(body)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def unverified_ping(datagram):
    """What a discovery datagram claims (its info dict) without checking its
    signature, or None if it is not a ping at all: to say who sent a ping
    signed with another secret. Trust nothing in it."""
    if not datagram.startswith(_PING_MAGIC):
        return None
    try:
        info = json.loads(datagram[len(_PING_MAGIC):].split(b' ', 1)[1])
    except (ValueError, IndexError):
        return None
    return info if isinstance(info, dict) else None


def udp_socket(port, broadcast=True, addr=''):
    """A UDP AsyncSocket on `port` that other runtimes on this host can share
    (on every address; or `addr` alone, which broadcasts never reach: a
    hollow node of the benchmarks, one of many in a process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, 'SO_REUSEPORT'):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if broadcast:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind((addr, port))
    return AsyncSocket(sock)


# ---------------------------------------------------------------- file transfer

FILE_CHUNK = 1024000


def transfer_target(dest_path, subdir, name):
    """The absolute path a received file goes to: dest_path/subdir/name.
    Raises ValueError if subdir is absolute, if name is not a plain file
    name, or if the result would lie outside dest_path (`..`, links)."""
    if subdir and (os.path.isabs(subdir) or subdir.startswith(('/', '\\'))):
        raise ValueError('directory %r must be relative to dest_path' % subdir)
    if not name or name in ('.', '..') or os.path.basename(name) != name or '\\' in name:
        raise ValueError('file name %r is not a plain name' % name)
    root = os.path.realpath(dest_path)
    parts = [root] + ([subdir.replace('\\', '/')] if subdir else []) + [name]
    target = os.path.realpath(os.path.join(*parts))
    if os.path.commonpath([root, target]) != root or target == root:
        raise ValueError('%r lies outside dest_path %s' % (os.path.join(subdir or '', name), root))
    return target
