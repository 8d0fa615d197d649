"""asyncoro.netio: serialize, Location, AsyncSocket (TCP, UDP, framing, TLS).

Sockets run in gevent greenlets of the test's thread; the tests at the end run
the same calls as generator coroutines in the runtime's hub thread. Everything
binds to 127.0.0.1, port 0, and every wait has a timeout.
"""

import errno
import os
import pickle
import socket
import ssl
import struct
import threading

import gevent
import gevent.event
import pytest

import asyncoro
from asyncoro import asyncfile, netio
from asyncoro.netio import AsyncSocket, AsynCoroSocket, Location, deserialize, serialize
from conftest import in_greenlet, wait_until

LOOPBACK = '127.0.0.1'


def listener(**kwargs):
    sock = AsyncSocket(socket.socket(socket.AF_INET, socket.SOCK_STREAM), **kwargs)
    sock.bind((LOOPBACK, 0))
    sock.listen(8)
    return sock


def connected_pair():
    """(client, server) AsyncSockets connected over 127.0.0.1."""
    with listener() as server:
        accepting = gevent.spawn(server.accept)
        client = AsyncSocket(socket.socket())
        client.connect(server.getsockname())
        conn, _ = accepting.get(timeout=5)
    return client, conn


def test_all_is_pinned():
    assert netio.__all__ == ['serialize', 'deserialize', 'unserialize', 'Location',
                             'AsyncSocket', 'AsynCoroSocket']


def test_serialize_round_trip_with_highest_protocol():
    obj = {'a': [1, 2.5, 'x', b'\x00\xff'], ('t', 1): None, 'loc': Location(LOOPBACK, 5)}
    data = serialize(obj)
    assert isinstance(data, bytes)
    assert data[:2] == b'\x80\x05'      # PROTO opcode, protocol 5
    assert deserialize(data) == obj
    assert netio.unserialize is deserialize
    assert asyncoro.serialize is serialize


def test_location_fields_equality_hash_and_text():
    loc = Location(LOOPBACK, '51347')
    assert (loc.addr, loc.port) == (LOOPBACK, 51347)
    assert loc == Location(LOOPBACK, 51347)
    assert loc != Location(LOOPBACK, 51348)
    assert loc != Location('127.0.0.2', 51347)
    assert loc != (LOOPBACK, 51347)
    assert {loc: 'x'}[Location(LOOPBACK, 51347)] == 'x'
    assert len({loc, Location(LOOPBACK, 51347), Location(LOOPBACK, 1)}) == 2
    assert str(loc) == repr(loc) == '127.0.0.1:51347'
    assert Location('::1', 7).addr == '::1'
    copy = loc.copy()
    copy.port = 1
    assert type(copy) is Location and copy == Location(LOOPBACK, 1) and loc.port == 51347


def test_location_pickles_by_value_and_small():
    loc = Location(LOOPBACK, 51347)
    data = pickle.dumps(loc, pickle.HIGHEST_PROTOCOL)
    copy = pickle.loads(data)
    assert copy == loc and copy is not loc
    assert (copy.addr, copy.port) == (LOOPBACK, 51347)
    assert len(data) < 100
    assert not hasattr(loc, '__dict__')


def test_location_resolves_names():
    assert Location('localhost', 1).addr in ('127.0.0.1', '::1')
    with pytest.raises(TypeError, match='must be a str'):
        Location(None, 1)


def test_send_msg_recv_msg_round_trip_and_clean_close():
    client, conn = connected_pair()
    messages = [b'x', bytes(range(256)) * 400, b'\x00' * (3 * 1024 * 1024 + 7)]

    def send():
        for message in messages:
            client.send_msg(message)
        client.close()

    def receive():
        got = []
        while True:
            message = conn.recv_msg()
            if not message:
                return got
            got.append(message)

    sender = gevent.spawn(send)
    try:
        assert in_greenlet(receive) == messages
        sender.get(timeout=5)
        assert conn.recv_msg() == b''       # still b'' after the close
    finally:
        conn.close()


def test_recv_msg_cut_short_raises_epipe():
    client, conn = connected_pair()
    with client, conn:
        client.sendall(b'\x00\x00\x00\x64' + b'y' * 10)     # announces 100 bytes, sends 10
        client.close()
        with pytest.raises(OSError) as info:
            in_greenlet(conn.recv_msg)
        assert info.value.errno == errno.EPIPE
        assert 'message of 100 bytes cut short after 10 bytes' in str(info.value)


def test_recv_msg_cut_inside_header_raises_epipe():
    client, conn = connected_pair()
    with client, conn:
        client.sendall(b'\x00\x00')
        client.close()
        with pytest.raises(OSError) as info:
            in_greenlet(conn.recv_msg)
        assert info.value.errno == errno.EPIPE


def test_recvall_collects_pieces_and_returns_partial_on_timeout():
    client, conn = connected_pair()
    with client, conn:
        def trickle():
            for piece in (b'ab', b'cd', b'ef'):
                client.sendall(piece)
                gevent.idle()
        gevent.spawn(trickle)
        assert in_greenlet(conn.recvall, 6) == b'abcdef'

        conn.settimeout(0.2)
        assert conn.gettimeout() == 0.2
        client.sendall(b'12345')
        assert in_greenlet(conn.recvall, 10) == b'12345'
        with pytest.raises(socket.timeout):
            in_greenlet(conn.recvall, 10)
        with pytest.raises(socket.timeout):
            in_greenlet(conn.recv_msg)
        with pytest.raises(socket.timeout):
            in_greenlet(conn.recv, 10)


def test_recv_with_zero_timeout_polls():
    client, conn = connected_pair()
    with client, conn:
        conn.settimeout(0)
        with pytest.raises(socket.timeout):
            conn.recv(10)


def test_send_recv_and_eof():
    client, conn = connected_pair()
    with client, conn:
        assert in_greenlet(client.send, b'hello') == 5
        assert in_greenlet(conn.recv, 100) == b'hello'
        client.close()
        assert in_greenlet(conn.recv, 100) == b''


def test_connect_refused_raises():
    probe = socket.socket()
    probe.bind((LOOPBACK, 0))
    address = probe.getsockname()
    probe.close()       # nothing listens on that port now
    with AsyncSocket(socket.socket()) as sock:
        with pytest.raises(ConnectionRefusedError):
            in_greenlet(sock.connect, address)


def test_create_connection_sets_timeout_and_connects():
    with listener() as server:
        accepting = gevent.spawn(server.accept)
        with AsyncSocket(socket.socket()) as sock:
            assert in_greenlet(sock.create_connection, server.getsockname(), 3) == 0
            assert sock.gettimeout() == 3
            conn, addr = accepting.get(timeout=5)
            with conn:
                assert addr == sock.getsockname()
                sock.send_msg(b'via create_connection')
                assert in_greenlet(conn.recv_msg) == b'via create_connection'


def test_accept_times_out():
    with listener() as server:
        server.settimeout(0.1)
        with pytest.raises(socket.timeout):
            in_greenlet(server.accept)


def test_udp_sendto_recvfrom():
    with AsyncSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as receiver, \
            AsyncSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sender:
        receiver.bind((LOOPBACK, 0))
        sender.bind((LOOPBACK, 0))
        waiting = gevent.spawn(receiver.recvfrom, 1000)
        gevent.idle()
        assert sender.sendto(b'datagram', receiver.getsockname()) == 8
        assert waiting.get(timeout=5) == (b'datagram', sender.getsockname())


def test_close_wakes_a_waiting_reader():
    client, conn = connected_pair()
    with client:
        reader = gevent.spawn(conn.recv, 10)
        gevent.idle()       # let it start waiting
        conn.close()
        with pytest.raises(OSError) as info:
            reader.get(timeout=5)
        assert info.value.errno == errno.EBADF


def test_blocking_mode_over_socketpair():
    left, right = socket.socketpair()
    left, right = AsyncSocket(left, blocking=True), AsyncSocket(right, blocking=True)
    with left, right:
        left.send_msg(b'sync frame')
        assert right.recv_msg() == b'sync frame'
        right.settimeout(0.1)
        with pytest.raises(socket.timeout):
            right.recvall(4)
        left.sendall(b'ab')
        assert right.recvall(4) == b'ab'
        right.setblocking(False)        # same socket, now greenlet-async
        left.sendall(b'cd')
        assert in_greenlet(right.recv, 10) == b'cd'


def test_passthrough_unwrap_and_alias():
    assert AsynCoroSocket is AsyncSocket is asyncoro.AsyncSocket
    raw = socket.socket()
    sock = AsyncSocket(raw)
    assert sock.fileno() == raw.fileno()
    assert sock.family == socket.AF_INET
    assert raw.gettimeout() == 0.0      # taken over: non-blocking underneath
    sock.settimeout(2.5)
    assert sock.unwrap() is raw
    assert raw.gettimeout() == 2.5
    with pytest.raises(OSError):
        sock.recv(1)
    raw.close()


def test_set_ssl_version_rejects_unknown_values():
    with pytest.raises(ValueError, match='unsupported ssl_version'):
        AsyncSocket.set_ssl_version('TLS-please')
    assert AsyncSocket.get_ssl_version() == ssl.PROTOCOL_TLS


# -- TLS ------------------------------------------------------------------------------

def _accept_outcome(server):
    """accept() once; returns ('ok', first message) or ('error', exception)."""
    try:
        conn, _ = server.accept()
    except OSError as exc:
        return 'error', exc
    with conn:
        message = conn.recv_msg()
        conn.send_msg(message.upper())
        return 'ok', message


def test_tls_round_trip(certs):
    certfile, keyfile = certs['good']
    with listener(certfile=certfile, keyfile=keyfile) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), certfile=certfile, keyfile=keyfile) as client:
            client.settimeout(5)
            assert in_greenlet(client.connect, server.getsockname()) == 0
            assert client.version().startswith('TLS')      # passed through to the SSLSocket
            client.send_msg(b'secret payload')
            assert in_greenlet(client.recv_msg) == b'SECRET PAYLOAD'
        assert serving.get(timeout=5) == ('ok', b'secret payload')


def test_tls_pinned_version(certs):
    certfile, keyfile = certs['good']
    with listener(certfile=certfile, keyfile=keyfile) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), certfile=certfile, keyfile=keyfile,
                         ssl_version=ssl.PROTOCOL_TLSv1_2) as client:
            in_greenlet(client.connect, server.getsockname())
            assert client.version() == 'TLSv1.2'
            client.send_msg(b'v')
            assert in_greenlet(client.recv_msg) == b'V'
        assert serving.get(timeout=5) == ('ok', b'v')


def test_tls_client_rejects_unknown_server_certificate(certs):
    with listener(certfile=certs['other'][0], keyfile=certs['other'][1]) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), certfile=certs['good'][0],
                         keyfile=certs['good'][1]) as client:
            with pytest.raises(ssl.SSLCertVerificationError):
                in_greenlet(client.connect, server.getsockname())
        outcome, exc = serving.get(timeout=5)
        assert outcome == 'error' and isinstance(exc, OSError)


def _openssl(*args, cwd):
    import shutil
    import subprocess
    openssl = shutil.which('openssl')
    if openssl is None:
        pytest.skip('the openssl command is not installed')
    subprocess.run([openssl] + list(args), check=True, capture_output=True, timeout=30,
                   cwd=str(cwd))


def test_tls_between_two_certificates_of_one_authority(tmp_path):
    """The recipe of docs/guide/distributed.rst (TLS): an authority of one's
    own signs a certificate per machine; each certfile holds the machine's
    certificate, then the authority's, so peers with different certificates
    trust each other, and a stranger's certificate is refused."""
    curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    _openssl('req', '-x509', *curve, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
             '-subj', '/CN=asyncoro-ca', cwd=tmp_path)
    for name in ('node1', 'node2'):
        _openssl('req', *curve, '-keyout', name + '.key', '-out', name + '.csr',
                 '-subj', '/CN=' + name, cwd=tmp_path)
        _openssl('x509', '-req', '-in', name + '.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                 '-CAcreateserial', '-out', name + '.crt', '-days', '2', cwd=tmp_path)
        with open(tmp_path / (name + '.pem'), 'wb') as pem:
            pem.write((tmp_path / (name + '.crt')).read_bytes() +
                      (tmp_path / 'ca.pem').read_bytes())
    _openssl('req', '-x509', *curve, '-keyout', 'stranger.key', '-out', 'stranger.pem',
             '-days', '2', '-subj', '/CN=stranger', cwd=tmp_path)

    def pem(name):
        return dict(certfile=str(tmp_path / (name + '.pem')),
                    keyfile=str(tmp_path / (name + '.key')))
    with listener(**pem('node1')) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), **pem('node2')) as client:
            client.settimeout(5)
            assert in_greenlet(client.connect, server.getsockname()) == 0
            client.send_msg(b'signed alike')
            assert in_greenlet(client.recv_msg) == b'SIGNED ALIKE'
        assert serving.get(timeout=5) == ('ok', b'signed alike')
    with listener(**pem('stranger')) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), **pem('node2')) as client:
            with pytest.raises(ssl.SSLCertVerificationError):
                in_greenlet(client.connect, server.getsockname())
        assert serving.get(timeout=5)[0] == 'error'


def test_plaintext_client_to_tls_server_fails_cleanly(certs):
    certfile, keyfile = certs['good']
    with listener(certfile=certfile, keyfile=keyfile) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket()) as plain:
            plain.settimeout(5)
            in_greenlet(plain.connect, server.getsockname())
            plain.send_msg(b'not a TLS hello')
            outcome, exc = serving.get(timeout=5)
            assert outcome == 'error'
            assert isinstance(exc, ssl.SSLError)
            try:
                answer = in_greenlet(plain.recv, 100)
            except ConnectionResetError:
                answer = b''
            assert answer == b''    # the server dropped the connection
        # ... and the server still serves a proper TLS client afterwards.
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), certfile=certfile, keyfile=keyfile) as client:
            in_greenlet(client.connect, server.getsockname())
            client.send_msg(b'after')
            assert in_greenlet(client.recv_msg) == b'AFTER'
        assert serving.get(timeout=5) == ('ok', b'after')


def test_asyncfile_refuses_a_tls_socket(certs):
    certfile, keyfile = certs['good']
    with listener(certfile=certfile, keyfile=keyfile) as server:
        serving = gevent.spawn(_accept_outcome, server)
        with AsyncSocket(socket.socket(), certfile=certfile, keyfile=keyfile) as client:
            in_greenlet(client.connect, server.getsockname())
            with pytest.raises(ValueError, match='cannot take over TLS socket'):
                asyncfile.AsyncFile(client)
            client.send_msg(b'still usable')
            assert in_greenlet(client.recv_msg) == b'STILL USABLE'
        assert serving.get(timeout=5) == ('ok', b'still usable')


# -- through the runtime: generator coroutines in the hub thread ---------------------

def run_coro(target, *args, timeout=10):
    coro = asyncoro.Coro(target, *args)
    value = coro.value(timeout=timeout)
    assert not coro.is_alive(), '%s did not finish within %ss' % (coro, timeout)
    return value


def test_coroutines_exchange_messages_over_asyncsocket():
    # Sockets made here in the main thread, used by coroutines in the hub thread.
    server = listener()
    client = AsyncSocket(socket.socket())

    def server_proc(coro=None):
        conn, _ = yield server.accept()
        received = []
        while True:
            message = yield conn.recv_msg()
            if not message:
                break
            received.append(message)
            yield conn.send_msg(b'ack ' + message)
        conn.close()
        return received

    def client_proc(address, coro=None):
        yield client.connect(address)
        acks = []
        for n in range(3):
            yield client.send_msg(b'msg %d' % n)
            acks.append((yield client.recv_msg()))
        client.close()
        return acks

    try:
        server_coro = asyncoro.Coro(server_proc)
        assert run_coro(client_proc, server.getsockname()) == [b'ack msg 0', b'ack msg 1',
                                                               b'ack msg 2']
        assert server_coro.value(timeout=5) == [b'msg 0', b'msg 1', b'msg 2']
    finally:
        server.close()
        client.close()


def test_close_from_another_thread_wakes_coroutine():
    client, conn = connected_pair()

    def reader_proc(coro=None):
        try:
            yield conn.recv(10)
        except OSError as exc:
            return exc.errno
        return 'no error'

    with client:
        conn.settimeout(5)
        reader = asyncoro.Coro(reader_proc)
        # The coroutine is blocked in recv once its watcher is registered.
        wait_until(lambda: conn._waiter._pending, 5, 'the coroutine waiting in recv')
        conn.close()        # from the main thread; the waiter is in the hub thread
        assert reader.value(timeout=5) == errno.EBADF


# ---------------------------------------------------------------- Connection: who writes

class _TurnLock:
    """A Connection's lock that can stop the hub at one chosen moment.

    Once `armed`, the hub thread's first release of the lock after it wrote
    to the socket stalls the hub (as a coroutine computing without yielding
    would) until the guard thread is inside its socket send. From then on, the hub thread asking for the
    lock marks that the hub has gone on."""

    def __init__(self):
        self._lock = netio._RLock()
        self.hub = threading.get_ident()
        self.armed = False
        self.hub_wrote = False
        self.stalled = threading.Event()        # the guard may act now
        self.guard_in_send = threading.Event()
        self.hub_went_on = threading.Event()

    def acquire(self, blocking=True):
        if threading.get_ident() == self.hub and self.guard_in_send.is_set():
            self.hub_went_on.set()
        return self._lock.acquire(blocking)

    __enter__ = acquire

    def release(self):
        self._lock.release()
        if self.armed and self.hub_wrote and threading.get_ident() == self.hub and \
                not self._lock._is_owned():
            self.armed = False
            self.stalled.set()
            self.guard_in_send.wait(10)

    def __exit__(self, *exc_info):
        self.release()


class _GuardSendWaits:
    """A connection's raw socket whose sends from the guard thread wait until
    the hub has gone on (the guard blocked in send with the GIL released)."""

    def __init__(self, sock, turns):
        self._sock = sock
        self._turns = turns

    def _hold_guard(self):
        if threading.get_ident() == self._turns.hub:
            self._turns.hub_wrote = True
        else:
            self._turns.guard_in_send.set()
            self._turns.hub_went_on.wait(10)

    def send(self, data):
        self._hold_guard()
        return self._sock.send(data)

    def sendmsg(self, buffers):
        self._hold_guard()
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.mark.deadline(40)
def test_guard_writing_while_the_hub_hands_over_strands_no_bytes():
    """The hub writes part of a frame and is stalled right after; the guard
    thread writes on and is still inside its send when the hub goes on. Every
    byte must arrive without another frame being sent to wake the connection."""
    client, server = connected_pair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    closed = []
    conn = netio.Connection(client, 'the test peer', netio.DEFAULT_MAX_FRAME_SIZE,
                            lambda conn, payloads: None, lambda conn, why: closed.append(why))
    turns = _TurnLock()
    conn._lock = turns
    conn.sock._sock = _GuardSendWaits(conn.sock._sock, turns)
    conn.start()
    payload = os.urandom(4 << 20)       # far more than the socket buffers hold
    expected = netio.frame(payload)
    hub = gevent.get_hub()
    guard_done = gevent.event.Event()
    guard_result = []

    def guard():
        turns.stalled.wait(10)
        guard_result.append(conn.guard_flush())
        hub.loop.run_callback_threadsafe(guard_done.set)

    def hub_goes_on():
        gevent.idle()       # the hub has run everything it had to do
        turns.hub_went_on.set()

    def receive():
        guard_done.wait(10)
        server.settimeout(3)
        received = bytearray()
        try:
            while len(received) < len(expected):
                chunk = server.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:      # nothing more came: some bytes were stranded
            pass
        return bytes(received)

    guard_thread = threading.Thread(target=guard, daemon=True)
    guard_thread.start()
    try:
        conn.send(payload)
        turns.armed = True
        gevent.spawn(hub_goes_on)
        receiver = gevent.spawn(receive)
        received = receiver.get(timeout=30)
        guard_thread.join(10)
        assert turns.stalled.is_set() and turns.guard_in_send.is_set(), \
            'the interleaving was not forced'
        assert guard_result == [None]
        assert len(received) == len(expected), \
            '%d of %d bytes arrived' % (len(received), len(expected))
        assert received == expected
        assert conn.flush(5)
        assert not closed
    finally:
        conn.close()
        server.close()


# ---------------------------------------------------------------- Connection: reading and writing

def _frames(sizes):
    return [bytes([i % 251]) * size for i, size in enumerate(sizes)]


@pytest.mark.deadline(40)
def test_connection_reads_frames_cut_anywhere_in_order():
    """Frames of every size (empty, small, one bigger than a read, many in
    one write) sent in pieces cut at odd places arrive whole, in order."""
    client, server = connected_pair()
    got, closed = [], []
    done = gevent.event.Event()
    sizes = [0, 1, 100, 3, 70000, 5, (1 << 20) + 7] + [150] * 3000 + [300000, 2]
    payloads = _frames(sizes)

    def on_frames(conn, frames):
        got.extend(bytes(frame) for frame in frames)
        if len(got) == len(payloads):
            done.set()
    conn = netio.Connection(server, 'the test peer', netio.DEFAULT_MAX_FRAME_SIZE, on_frames,
                            lambda conn, why: closed.append(why))
    conn.start()
    stream = b''.join(netio.frame(payload) for payload in payloads)
    pieces, cut, step = [], 0, 1
    while cut < len(stream):        # 1, 2, 3, ... bytes, then big chunks
        step = step + 1 if step < 4000 else 65537
        pieces.append(stream[cut:cut + step])
        cut += step
    try:
        for piece in pieces:
            client.sendall(piece)
            gevent.sleep(0)         # let the hub read each piece as it comes
        assert done.wait(20), '%d of %d frames arrived' % (len(got), len(payloads))
        assert got == payloads
        assert not closed
    finally:
        conn.close()
        client.close()


def test_connection_writes_a_lone_frame_at_once_and_a_burst_together():
    """The first frame of a turn of the hub is on the wire before send()
    returns; the ones after it in the same turn go together at its end."""
    client, server = connected_pair()
    conn = netio.Connection(client, 'the test peer', netio.DEFAULT_MAX_FRAME_SIZE,
                            lambda conn, frames: None, lambda conn, why: None)
    conn.start()
    raw = server._sock
    try:
        conn.send(b'lone')
        assert raw.recv(100, socket.MSG_DONTWAIT) == netio.frame(b'lone')
        for i in range(100):
            conn.send(b'burst %d' % i)
        with pytest.raises(BlockingIOError):        # still queued: nothing was written
            raw.recv(100, socket.MSG_DONTWAIT)
        assert conn.flush(5)
        expected = b''.join(netio.frame(b'burst %d' % i) for i in range(100))
        server.settimeout(5)
        assert server.recvall(len(expected)) == expected
    finally:
        conn.close()
        server.close()


def test_connection_dispatches_nothing_after_the_frame_that_closed_it():
    client, server = connected_pair()
    got = []

    def on_frames(conn, frames):
        for frame in frames:
            got.append(bytes(frame))
            if frame == b'bye':
                conn.close('told to')
                return
    conn = netio.Connection(server, 'the test peer', netio.DEFAULT_MAX_FRAME_SIZE, on_frames,
                            lambda conn, why: got.append(why))
    conn.start()
    try:
        client.sendall(b''.join(netio.frame(p) for p in (b'one', b'bye', b'never')))
        wait_until(lambda: conn.closed, 5, 'the connection closed by its frame')
        assert got == [b'one', b'bye', 'told to']
    finally:
        client.close()


def _by_value():
    return 'made here'


def test_dumps_writes_plain_data_and_references_as_cloudpickle_would():
    import cloudpickle

    def waits(coro=None):
        yield coro.receive()
    coro = asyncoro.Coro(waits)
    wait_until(lambda: coro._wait == 'receive', 5, 'the coroutine waiting in receive')
    try:
        job = ('call', 9, 4, '!discoro_server', 'job', ('compute', None, (3, [1.5, 'x']),
                                                         {'n': {'deep': (None,)}}, coro))
        ended = asyncoro.MonitorException(coro, (StopIteration, {'value': [1, 2]}))
        for obj in [('send', 7, '~sink', b'x' * 100), ('send', 7, '~echo', (coro, b'data')),
                    Location('127.0.0.1', 5), [1, 2.5, None, True, 'text'], coro, job,
                    ('send', 7, '~sched', ended), (ValueError, KeyError('k'))]:
            assert netio.dumps(obj) == cloudpickle.dumps(obj, protocol=5), obj
        assert netio._plain(job) and netio._plain(ended)
        # what the plain pickler must not take: exceptions it was not told
        # of, data beyond its budget, a function or class of a module, an exception
        # carrying notes (a __dict__ of its own)
        noted = asyncoro.MonitorException(coro, (StopIteration, 1))
        noted.__notes__ = ['a note']
        for obj in [(ValueError, KeyError('k')), list(range(netio._PLAIN_ITEMS + 1)),
                    (coro, _by_value), ('send', noted), {'a': Location},
                    [type(_by_value), type(_by_value.__code__)]]:
            assert not netio._plain(obj), obj
            assert netio.loads(netio.dumps(obj)) is not None
        assert netio.loads(netio.dumps(('send', noted)))[1].__notes__ == ['a note']
        assert netio.loads(netio.dumps(('send', 7, '~echo', (coro, b'data'))))[3][0] is coro
    finally:
        coro.send('end')
    # a function of this test module pickles by reference with plain pickle;
    # one defined at run time goes by value, through cloudpickle
    local = eval('lambda: "made here"')
    assert netio.loads(netio.dumps(local))() == 'made here'
    assert netio.dumps(_by_value) == cloudpickle.dumps(_by_value, protocol=5)


# ---------------------------------------------------------------- the frame decoder, fuzzed

hypothesis = pytest.importorskip('hypothesis', reason='hypothesis (the test extra) fuzzes the '
                                 'frame decoder')
from hypothesis import given, settings, strategies as sts      # noqa: E402


def _stream(payloads):
    return b''.join(struct.pack('>I', len(p)) + p for p in payloads)


@settings(max_examples=300, deadline=None, database=None)
@given(payloads=sts.lists(sts.binary(max_size=300), max_size=20),
       cuts=sts.lists(sts.integers(0, 6100), max_size=30))
def test_the_decoder_gives_back_every_frame_however_the_stream_is_cut(payloads, cuts):
    stream = _stream(payloads)
    decoder = netio.FrameDecoder(1000)
    got, start = [], 0
    for cut in sorted(c for c in cuts if c < len(stream)) + [len(stream)]:
        piece = bytearray(stream[start:cut]) + bytearray(64)    # a read buffer: more room
        got += [bytes(frame) for frame in decoder.feed(piece, cut - start)]
        start = cut
    assert got == payloads and decoder.error is None and decoder.held() == 0


@settings(max_examples=300, deadline=None, database=None)
@given(before=sts.lists(sts.binary(max_size=50), max_size=5), size=sts.integers(101, 2 ** 32 - 1),
       split=sts.integers(0, 3), after=sts.binary(max_size=200))
def test_a_frame_over_the_limit_breaks_the_stream_and_is_never_buffered(before, size, split,
                                                                       after):
    head = _stream(before)
    stream = head + struct.pack('>I', size) + after
    decoder = netio.FrameDecoder(100)
    cut = len(head) + split                 # the big frame's header cut in two, at times
    frames = decoder.feed(bytearray(stream[:cut]), cut)
    frames += decoder.feed(bytearray(stream[cut:]), len(stream) - cut)
    assert [bytes(f) for f in frames] == before         # what came first still counts
    assert decoder.error == 'frame of %d bytes exceeds max_frame_size=100' % size
    assert decoder.oversize == size and decoder.held() == 0
    assert decoder.feed(bytearray(b'\0\0\0\1x'), 5) == []      # broken for good


@settings(max_examples=500, deadline=None, database=None)
@given(garbage=sts.binary(max_size=2000))
def test_garbage_never_raises_and_holds_at_most_a_frame(garbage):
    decoder = netio.FrameDecoder(4096)
    for frame in decoder.feed(bytearray(garbage), len(garbage)):
        assert len(frame) <= 4096
    assert decoder.held() <= max(len(garbage), 0) and (decoder.error is None or
                                                      decoder.oversize > 4096)
