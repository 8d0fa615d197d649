"""The distributed layer with real processes on 127.0.0.1 (docs/guide/distributed.rst).

A server program publishes a coroutine, a channel and an RCI; client programs
find them (by discovery, or by peer()) and use them. Each test has its own UDP
port, so runtimes of different tests never discover each other.
"""

import hashlib
import os
import subprocess

import pytest

from conftest import free_udp_port, options, read_line, split_log
from test_operations import wait_for_line

TIMEOUT = 60

SERVER = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro

rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def echo(coro=None):
    coro.set_daemon()
    coro.register('echo')
    while True:
        msg = yield coro.receive()
        if msg[0] == 'die':
            raise ValueError('told to die: %s' % msg[1])
        if msg[0] == 'end':
            raise StopIteration('ended as asked')
        reply_to, payload = msg
        reply_to.send(('echo', payload))

def rci_mul(a, b=1, coro=None):
    yield coro.sleep(0.01)
    if b == 0:
        raise ZeroDivisionError('b is zero')
    raise StopIteration(a * b)

asyncoro.RCI(rci_mul).register()
news = asyncoro.Channel('news')
news.register()
local_subscriber = None

def local_listener(coro=None):
    coro.set_daemon()
    yield news.subscribe(coro)
    while True:
        msg = yield coro.receive()
        print('server subscriber got', msg, flush=True)

asyncoro.Coro(echo)
asyncoro.Coro(local_listener)
print('ready', rt.location, flush=True)
sys.stdin.read()       # serve until the test closes stdin
'''


def run_client(processes, source, *argv, timeout=TIMEOUT, logs=None, env=None):
    """Run a client program to its end; its output lines (log lines go to
    `logs` when a list is given)."""
    proc = processes(source, *argv, ready=False, env=env)
    out, err = proc.communicate(b'', timeout=timeout)
    assert proc.returncode == 0, 'client failed:\n%s\n%s' % (out.decode(), err.decode())
    lines, log_lines = split_log(out.decode())
    if logs is not None:
        logs.extend(log_lines)
    return lines


def stop(proc):
    """Close a server's stdin so that it ends; all it printed since."""
    proc.stdin.close()
    out = bytes(proc.__dict__.get('_pending_output', b'')) + proc.stdout.read()
    proc.wait(TIMEOUT)
    return out.decode()


@pytest.mark.expected_tracebacks('ValueError: told to die: now')
def test_locate_send_deliver_reply_monitor_between_processes(processes):
    port = free_udp_port()
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    echo = yield asyncoro.Coro.locate('echo', timeout=10)      # found by discovery
    print('found', isinstance(echo, asyncoro.Coro), echo.name, echo.location)
    for i in range(5):
        assert echo.send((coro, i)) == 0
    got = []
    for i in range(5):
        got.append((yield coro.receive(timeout=10)))
    print('replies', got)
    print('deliver', (yield echo.deliver((coro, 'acked'), timeout=10)))
    print('reply', (yield coro.receive(timeout=10)))
    assert (yield coro.monitor(echo)) == 0
    echo.send(('die', 'now'))
    msg = yield coro.receive(timeout=10)
    print('monitor', type(msg).__name__, msg.args[0] == echo, msg.args[1][0].__name__,
          msg.args[1][1])
    print('after death', (yield echo.deliver((coro, 'late'), timeout=10)))

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port))
    assert lines == [
        'found True echo %s' % where,
        "replies [('echo', 0), ('echo', 1), ('echo', 2), ('echo', 3), ('echo', 4)]",
        'deliver 1',
        "reply ('echo', 'acked')",
        'monitor MonitorException True ValueError told to die: now',
        'after death -1',
    ]


def test_channel_reaches_subscribers_in_two_processes(processes):
    port = free_udp_port()
    server, _ = processes(SERVER, options(node='127.0.0.1', udp_port=port))
    subscriber_source = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def listener(coro=None):
    news = yield asyncoro.Channel.locate('news', timeout=10)
    assert (yield news.subscribe(coro)) == 0
    print('ready subscribed', flush=True)
    for _ in range(3):
        msg = yield coro.receive(timeout=20)
        print('got', msg, flush=True)
    assert (yield news.unsubscribe(coro)) == 0

asyncoro.Coro(listener)
'''
    subs = [processes(subscriber_source, options(node='127.0.0.1', udp_port=port))[0]
            for _ in range(2)]
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def publisher(coro=None):
    news = yield asyncoro.Channel.locate('news', timeout=10)
    # two remote subscribers + the server's own: deliver counts end recipients
    print('delivered to', (yield news.deliver('first', n=3, timeout=10)))
    news.send('second')
    news.send('third')

asyncoro.Coro(publisher)
''', options(node='127.0.0.1', udp_port=port))
    assert lines == ['delivered to 3']
    for sub in subs:
        got = [read_line(sub, 20) for _ in range(3)]
        assert got == ['got first', 'got second', 'got third']
        assert sub.wait(TIMEOUT) == 0
    assert split_log(stop(server))[0] == ['server subscriber got %s' % m
                                          for m in ('first', 'second', 'third')]


@pytest.mark.expected_tracebacks('ZeroDivisionError: b is zero')
def test_rci_creates_a_remote_coroutine_whose_value_comes_back(processes):
    port = free_udp_port()
    processes(SERVER, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    rci = yield asyncoro.RCI.locate('rci_mul', timeout=10)
    print('rci', rci.name)
    for args, kwargs in [((6,), {'b': 7}), ((5,), {'b': 0})]:
        rcoro = yield rci(*args, **kwargs)
        yield coro.monitor(rcoro)
        msg = yield coro.receive(timeout=10)
        kind, value = msg.args[1]
        print('value', kind.__name__, value)
    try:
        yield rci('too', 'many', 'arguments', 'here')
    except Exception as exc:
        print('error', 'TypeError' in str(exc))
    missing = yield asyncoro.RCI.locate('no_such_rci', timeout=0.5)
    print('missing', missing)

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port))
    assert lines == ['rci rci_mul', 'value StopIteration 42', 'value ZeroDivisionError b is zero',
                     'error True', 'missing None']


def test_peer_finds_a_runtime_that_does_not_discover(processes):
    port = free_udp_port()
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port,
                                              discover_peers=False))
    host, tcp = where.split(':')
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(host, port, coro=None):
    print('before peer', (yield asyncoro.Coro.locate('echo', timeout=1)))
    print('peer', (yield rt.peer(asyncoro.Location(host, port))))
    echo = yield asyncoro.Coro.locate('echo', timeout=10)
    echo.send((coro, 'x'))
    print('reply', (yield coro.receive(timeout=10)))
    print('peers', rt.peers() == [asyncoro.Location(host, port)])
    print('bad peer', (yield rt.peer(asyncoro.Location('127.0.0.1', 1))))

asyncoro.Coro(client, sys.argv[2], int(sys.argv[3]))
''', options(node='127.0.0.1', udp_port=port, discover_peers=False), host, tcp)
    assert lines == ['before peer None', 'peer 0', "reply ('echo', 'x')", 'peers True',
                     'bad peer -1']


# a program whose coroutine 'server_coro' prints what it receives
SERVER_CORO = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def server_coro(coro=None):
    coro.set_daemon()
    coro.register('server_coro')
    while True:
        msg = yield coro.receive()
        print('Received', msg, flush=True)

asyncoro.Coro(server_coro)
print('ready', rt.location, flush=True)
sys.stdin.read()
'''


def test_queued_sends_are_flushed_before_a_client_exits(processes):
    port = free_udp_port()
    server, where = processes(SERVER_CORO, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    server = yield asyncoro.Coro.locate('server_coro', timeout=10)
    print('server is at', server.location)
    for i in range(10):
        server.send('message %d' % i)      # and the program ends at once

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port))
    assert lines == ['server is at %s' % where]
    assert [read_line(server, 20) for _ in range(10)] == ['Received message %d' % i
                                                          for i in range(10)]


@pytest.mark.deadline(60)
def test_a_message_for_a_peer_that_cannot_be_reached_is_named_as_it_is_dropped(processes):
    """A send to a runtime that has gone (its connection closed, and a new
    one refused) drops the message with one WARNING that names it."""
    port = free_udp_port()
    server, where = processes(SERVER_CORO, options(node='127.0.0.1', udp_port=port))
    client = processes(r"""
import sys, json
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    server = yield asyncoro.Coro.locate('server_coro', timeout=10)
    rt.peer_status(coro)
    print('located', server, flush=True)
    while True:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.PeerStatus) and msg.status == asyncoro.PeerStatus.Offline:
            break
    print('sent', server.send('too late'), flush=True)

asyncoro.Coro(client)
""", options(node='127.0.0.1', udp_port=port), ready=False)
    located = wait_for_line(client, 20, 'the located line', lambda line: line.startswith('located'))
    server.kill()
    server.wait(10)
    assert wait_for_line(client, 20, 'the send', lambda line: line.startswith('sent')) == 'sent 0'
    dropped = wait_for_line(client, 20, 'the warning', lambda line: 'cannot reach peer' in line)
    assert dropped.endswith('; 1 queued message(s) dropped: message for %s'
                            % located.split()[1]), dropped
    assert 'cannot reach peer %s (' % where in dropped, dropped
    client.stdin.close()
    assert client.wait(20) == 0


@pytest.mark.deadline(60)
def test_a_peer_that_resets_the_connection_it_just_took_is_not_waited_for(processes):
    """The peer takes the connection (handshake done) and resets it before
    the first frame: the queued message is dropped with a WARNING naming it
    (it was an error from a dead greenlet, and the peer was never connected
    to again: later messages queued for it forever)."""
    peer, port = processes(r"""
import socket, struct, sys
from asyncoro import netio
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(1)
print('ready', listener.getsockname()[1], flush=True)
raw, _ = listener.accept()
netio.accept(netio.AsyncSocket(raw, blocking=True), netio.secret_key(''), 10)
listener.close()        # the next connection is refused
raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
raw.close()             # a reset, right after the handshake
print('reset', flush=True)
sys.stdin.read()
""")
    client = processes(r"""
import select, sys, json
import asyncoro.disasyncoro as asyncoro
from asyncoro import core, netio
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))
connect = netio.connect

def connect_and_wait_for_the_reset(addr, *args):
    sock = connect(addr, *args)
    select.select([sock._sock], [], [], 10)       # the reset has come
    return sock

netio.connect = connect_and_wait_for_the_reset
far = core._rebuild_coro('~far', 1, '127.0.0.1', int(sys.argv[2]))
print('sent', far.send('first'), flush=True)
sys.stdin.readline()
print('sent', far.send('second'), flush=True)
sys.stdin.readline()
""", options(node='127.0.0.1', udp_port=free_udp_port()), port, ready=False)
    assert read_line(peer, 20, 'the reset') == 'reset'
    warning = '; 1 queued message(s) dropped: message for ~far/1@127.0.0.1:%s' % port
    first = wait_for_line(client, 20, 'the first warning', lambda line: 'cannot reach' in line)
    assert first.endswith(warning) and 'closed' in first, first
    client.stdin.write(b'again\n')
    client.stdin.flush()
    second = wait_for_line(client, 20, 'the second warning', lambda line: 'cannot reach' in line)
    assert second.endswith(warning) and 'refused' in second, second
    client.stdin.close()
    assert client.wait(20) == 0

FILE_CLIENT = r'''
import sys, json, os
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(host, port, coro=None):
    loc = asyncoro.Location(host, port)
    assert (yield rt.peer(loc)) == 0
    for line in sys.argv[4:]:
        op, path, *rest = line.split(',')
        if op == 'send':
            overwrite = 'overwrite' in rest
            subdir = [r[4:] for r in rest if r.startswith('dir=')]
            result = yield rt.send_file(loc, path, dir=subdir[0] if subdir else None,
                                        overwrite=overwrite, timeout=30)
        elif op == 'raw-name':      # a name with a path in it, straight to the wire
            answer = rt.request(loc, 'file-begin', ('', path, 1, 0, 0, 0o644, True), 10,
                                on_timeout=None, on_failure=None)
            # refused, and the answer says why
            result = -1 if 'refused it: file name' in str(answer) else answer
        else:
            result = yield rt.del_file(loc, path, dir=rest[0] if rest else None)
        print(line, result, flush=True)

asyncoro.Coro(client, sys.argv[2], int(sys.argv[3]))
'''


def sha1(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.deadline(120)
def test_send_file_moves_50_mb_intact_and_honours_overwrite_and_paths(processes, tmp_path):
    port = free_udp_port()
    dest = tmp_path / 'server-dest'
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port,
                                              dest_path=str(dest), discover_peers=False))
    big = tmp_path / 'big.bin'
    with open(big, 'wb') as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    small = tmp_path / 'small' / 'big.bin'         # same name, other content
    small.parent.mkdir()
    small.write_bytes(b'different content\n')
    host, tcp = where.split(':')
    ops = ['send,%s' % big,                        # 50 MB
           'send,%s' % big,                        # identical: nothing sent, 0
           'send,%s' % small,                      # differs, no overwrite: -1
           'send,%s,overwrite' % small,            # 0
           'send,%s,dir=sub/deeper' % big,         # into a subdirectory
           'send,%s,dir=../escape' % small,        # outside dest_path: -1
           'send,%s,dir=/abs' % small,             # absolute dir: -1
           'raw-name,../evil.txt',                 # a name that escapes: -1
           'send,%s' % (tmp_path / 'missing'),     # no such file: -1
           'del,big.bin,sub/deeper',               # 0, and the empty dirs go too
           'del,big.bin,../escape']                # -1
    lines = run_client(processes, FILE_CLIENT, options(node='127.0.0.1', udp_port=port,
                                                       discover_peers=False),
                       host, tcp, *ops, timeout=100)
    assert [line.rsplit(' ', 1)[1] for line in lines] == [
        '0', '0', '-1', '0', '0', '-1', '-1', '-1', '-1', '0', '-1']
    assert (dest / 'big.bin').read_bytes() == b'different content\n'
    assert not (dest / 'sub').exists()
    assert not (tmp_path / 'escape').exists() and not (tmp_path / 'evil.txt').exists()
    assert not [p for p in dest.rglob('*') if '.part' in p.name]
    # the 50 MB copy was intact before it was overwritten: check a fresh copy
    lines = run_client(processes, FILE_CLIENT, options(node='127.0.0.1', udp_port=port,
                                                       discover_peers=False),
                       host, tcp, 'send,%s,dir=again' % big, timeout=100)
    assert lines == ['send,%s,dir=again 0' % big]
    copy = dest / 'again' / 'big.bin'
    assert sha1(copy) == sha1(big)
    assert os.stat(copy).st_mode & 0o777 == os.stat(big).st_mode & 0o777
    assert abs(os.stat(copy).st_mtime - os.stat(big).st_mtime) < 1
    server_log = stop(server)
    assert 'exists and differs' in server_log
    assert 'lies outside dest_path' in server_log


@pytest.mark.deadline(120)
def test_a_200_mb_file_on_its_way_keeps_a_ping_pong_with_its_peer_quick(processes, tmp_path):
    # the receiver writes each chunk, and the sender reads it, off the hub:
    # the messages of both keep coming meanwhile
    port = free_udp_port()
    dest = tmp_path / 'dest'
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port, dest_path=str(dest),
                                              discover_peers=False))
    big = tmp_path / 'big.bin'
    with open(big, 'wb') as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    host, tcp = where.split(':')
    lines = run_client(processes, r'''
import sys, json, time
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))
loc = asyncoro.Location(sys.argv[2], int(sys.argv[3]))
sending = [True]

def pinger(echo, coro=None):
    rtts = []
    while sending[0]:
        t0 = time.perf_counter()
        echo.send((coro, len(rtts)))
        reply = yield coro.receive(timeout=10)
        assert reply == ('echo', len(rtts)), reply
        rtts.append(time.perf_counter() - t0)
    return rtts

def client(coro=None):
    assert (yield rt.peer(loc)) == 0
    echo = yield asyncoro.Coro.locate('echo', loc, timeout=10)
    ping = asyncoro.Coro(pinger, echo)
    yield coro.sleep(0.2)                   # the ping-pong is going
    t0 = time.perf_counter()
    result = yield rt.send_file(loc, sys.argv[4], timeout=60)
    seconds = time.perf_counter() - t0
    sending[0] = False
    rtts = sorted((yield ping.finish()))
    print('sent', result, round(seconds, 2), flush=True)
    print('pings', len(rtts), round(rtts[int(len(rtts) * 0.99)] * 1000, 2), flush=True)

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port, discover_peers=False), host, tcp, str(big),
                       timeout=100)
    sent = next(line for line in lines if line.startswith('sent')).split()
    pings = next(line for line in lines if line.startswith('pings')).split()
    assert sent[1] == '0', lines
    assert os.path.getsize(dest / 'big.bin') == 200 << 20
    assert int(pings[1]) >= 100, lines         # round trips made while it went
    assert float(pings[2]) < 20, 'p99 of the round trips %s ms while 200 MB went (%s s)' % (
        pings[2], sent[2])
    stop(server)


def test_max_file_size_refuses_before_sending(processes, tmp_path):
    port = free_udp_port()
    dest = tmp_path / 'dest'
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port, dest_path=str(dest),
                                              max_file_size=100000, discover_peers=False))
    big = tmp_path / 'over.bin'
    big.write_bytes(b'x' * 100001)
    fits = tmp_path / 'fits.bin'
    fits.write_bytes(b'y' * 100000)
    host, tcp = where.split(':')
    lines = run_client(processes, FILE_CLIENT, options(node='127.0.0.1', udp_port=port,
                                                       discover_peers=False),
                       host, tcp, 'send,%s' % big, 'send,%s' % fits)
    assert [line.rsplit(' ', 1)[1] for line in lines] == ['-1', '0']
    assert not (dest / 'over.bin').exists()
    assert (dest / 'fits.bin').read_bytes() == b'y' * 100000
    assert 'max_file_size=100000' in stop(server)


def test_tls_between_processes_and_plaintext_refused(processes, certs):
    certfile, keyfile = certs['good']
    port = free_udp_port()
    tls = dict(node='127.0.0.1', udp_port=port, certfile=certfile, keyfile=keyfile,
               discover_peers=False)
    server, where = processes(SERVER, options(**tls))
    host, tcp = where.split(':')
    client = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(host, port, coro=None):
    print('peer', (yield rt.peer(asyncoro.Location(host, port))))
    echo = yield asyncoro.Coro.locate('echo', asyncoro.Location(host, port), timeout=5)
    if echo is not None:
        echo.send((coro, 'over tls'))
        print('reply', (yield coro.receive(timeout=10)))

asyncoro.Coro(client, sys.argv[2], int(sys.argv[3]))
'''
    assert run_client(processes, client, options(**tls), host, tcp) == [
        'peer 0', "reply ('echo', 'over tls')"]
    plain = dict(tls)
    del plain['certfile'], plain['keyfile']
    assert run_client(processes, client, options(**plain), host, tcp) == ['peer -1', ]
    assert 'TLS handshake with' in stop(server)


# ---------------------------------------------------------------- discovery stays on loopback

CAPTURE = r'''
import json, socket, struct, sys, time, threading
import asyncoro.disasyncoro as asyncoro

seen = []
def capture(sock):
    while True:
        try:
            frame, addr = sock.recvfrom(65535)
        except OSError:
            return
        if len(frame) >= 34 and frame[12:14] == b'\x08\x00':
            seen.append((addr[0], socket.inet_ntoa(frame[30:34])))

raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # every frame, every interface
threading.Thread(target=capture, args=(raw,), daemon=True).start()
rt = asyncoro.AsynCoro(node='127.0.0.1', udp_port=int(sys.argv[1]), discover_peers=True)
for _ in range(3):
    rt.discover_peers()
rt.peer('127.0.0.1')            # a unicast ping to a host
deadline = time.monotonic() + 10
while sum(1 for _, dst in seen if dst == '127.255.255.255') < 4 and time.monotonic() < deadline:
    time.sleep(0.01)            # polling the capture thread's list, with a deadline
time.sleep(0.2)                 # and whatever else those pings set off
raw.close()
print(json.dumps(seen))
'''


def test_discovery_sends_nothing_outside_loopback(tmp_path):
    """In a network namespace with a default route (so that a packet to
    the all-ones broadcast address or any other would really be sent), capture every
    IPv4 packet while a runtime bound to 127.0.0.1 discovers."""
    script = tmp_path / 'capture.py'
    script.write_text(CAPTURE)
    # lo gets a second address and the default route: a packet to anywhere
    # else (the all-ones broadcast address included) would then be captured with that
    # destination instead of failing to route
    setup = ('ip link set lo up && ip addr add 10.253.0.1/24 dev lo && '
             'ip route add default dev lo && exec "$0" "$@"')
    try:
        result = subprocess.run(['unshare', '-n', 'sh', '-c', setup, os.sys.executable,
                                 str(script), str(free_udp_port())],
                                capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip('unshare is not installed')
    if result.returncode != 0 and (b'Operation not permitted' in result.stderr or
                                   b'ip: not found' in result.stderr or
                                   b'unshare failed' in result.stderr):
        pytest.skip('cannot make a network namespace here: %s' % result.stderr.decode()[-300:])
    assert result.returncode == 0, result.stderr.decode()
    import json
    seen = json.loads(result.stdout.decode().splitlines()[-1])
    destinations = {dst for _, dst in seen}
    assert '127.255.255.255' in destinations        # the capture did see the pings
    assert all(dst.startswith('127.') for dst in destinations), destinations


HOG_SERVER = SERVER.replace("asyncoro.Coro(echo)\n", r'''asyncoro.Coro(echo)

def hog(coro=None):
    coro.set_daemon()
    coro.register('hog')
    import time
    while True:
        how, seconds = yield coro.receive()
        print('hogging', how, flush=True)
        end = time.monotonic() + seconds
        if how == 'sleep':
            time.sleep(seconds)          # blocks the whole hub
        else:
            while time.monotonic() < end:
                pass                     # computes without yielding
        print('hog done', flush=True)

asyncoro.Coro(hog)
''')


# descriptors over 1023 (which select() cannot take) for every socket it opens
HIGH_FDS = r'''
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
_held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
'''


@pytest.mark.parametrize('how', ['cpu', 'sleep', 'cpu, its sockets over descriptor 1023'])
def test_deliver_is_acknowledged_while_a_coroutine_hogs_the_process(processes, how):
    port = free_udp_port()
    source = HOG_SERVER if ',' not in how else HIGH_FDS + HOG_SERVER
    how = how.split(',')[0]
    server, _ = processes(source, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json, time
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(how, coro=None):
    echo = yield asyncoro.Coro.locate('echo', timeout=10)
    hog = yield asyncoro.Coro.locate('hog', timeout=10)
    hog.send((how, 3))
    yield coro.sleep(0.5)                # the hog has the server's hub now
    t0 = time.monotonic()
    acked = yield echo.deliver((coro, 'during'), timeout=2)
    print('deliver', acked, 'fast', time.monotonic() - t0 < 1)
    echo.send((coro, 'after'))
    print('replies', (yield coro.receive(timeout=10)), (yield coro.receive(timeout=10)))

asyncoro.Coro(client, sys.argv[2])
''', options(node='127.0.0.1', udp_port=port), how)
    assert lines == ['deliver 1 fast True', "replies ('echo', 'during') ('echo', 'after')"]
    assert split_log(stop(server))[0] == ['hogging %s' % how, 'hog done']


def test_package_face_after_importing_disasyncoro(processes):
    lines = run_client(processes, r'''
import asyncoro.disasyncoro as asyncoro
import asyncoro.disasyncoro as dis
top = __import__('asyncoro')
checks = {
    'same core names': all(getattr(top, n) is getattr(dis, n) for n in top.__all__
                           if n != 'AsynCoro'),
    'AsynCoro patched': top.AsynCoro is dis.AsynCoro,
    'extras on the package': all(getattr(top, n) is getattr(dis, n)
                                 for n in ('RCI', 'PeerStatus', 'SysCoro')),
    '__all__': sorted(dis.__all__) == sorted(top.__all__ + ['PeerStatus', 'RCI', 'SysCoro',
                                                          'MsgTimeout', 'MaxConnectionErrors']),
    'constants': (dis.MsgTimeout, dis.MaxConnectionErrors,
                  dis.PeerStatus.Online, dis.PeerStatus.Offline) == (10, 10, 1, 0),
}
def first(coro=None):
    yield
    return asyncoro.AsynCoro.instance()
rt = asyncoro.Coro(first).value(timeout=10)
checks['first Coro starts the distributed runtime'] = (
    isinstance(rt, dis.AsynCoro) and rt.location.addr == '127.0.0.1')
print(sorted(k for k, ok in checks.items() if not ok))
''', options())
    assert lines == ['[]']


def test_secret_from_environment_peer_status_names_and_unpicklable(processes, tmp_path):
    port = free_udp_port()
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port, name='the-server'),
                              env={'ASYNCORO_SECRET': 'from env'})
    host, tcp = where.split(':')
    client = r'''
import sys, json, threading
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def watcher(coro=None):
    coro.set_daemon()
    while True:
        status = yield coro.receive()
        print('status', status.name, status.location, status.status, flush=True)

def client(host, port, coro=None):
    loc = asyncoro.Location(host, port)
    paired = yield rt.peer(loc)
    print('peer', paired, flush=True)
    if paired != 0:
        return
    rt.peer_status(asyncoro.Coro(watcher))
    print('located', (yield rt.locate('the-server', timeout=5)) == loc)
    echo = yield asyncoro.Coro.locate('echo', loc, timeout=5)
    print('unpicklable send', echo.send((coro, threading.Lock())))
    print('unpicklable deliver', (yield echo.deliver((coro, threading.Lock()), timeout=5)))
    print('then fine', echo.send((coro, 'ok')), (yield coro.receive(timeout=5)))
    print('close_peer', (yield rt.close_peer(loc)), rt.peers())
    yield coro.sleep(0.2)

asyncoro.Coro(client, sys.argv[2], int(sys.argv[3]))
'''
    logs = []
    lines = run_client(processes, client, options(node='127.0.0.1', udp_port=port,
                                                  discover_peers=False),
                       host, tcp, logs=logs)
    assert lines == ['peer -1']         # no secret: refused
    lines = run_client(processes, client, options(node='127.0.0.1', udp_port=port,
                                                  discover_peers=False, secret='from env'),
                       host, tcp, logs=logs)
    # the watcher's lines and the client's interleave in no fixed order
    assert [line for line in lines if line.startswith('status')] == [
        'status the-server %s 1' % where, 'status the-server %s 0' % where]
    assert [line for line in lines if not line.startswith('status')] == [
        'peer 0', 'located True', 'unpicklable send -1', 'unpicklable deliver -1',
        "then fine 0 ('echo', 'ok')", 'close_peer 0 []']
    assert any("cannot be pickled: TypeError: cannot pickle '_thread.lock' object" in line
               for line in logs)


@pytest.mark.expected_tracebacks(r"ValueError: ASYNCORO_UDP_PORT='5135O' is not a port")
def test_udp_port_from_environment_and_a_bad_value_named(processes):
    port = free_udp_port()
    server, where = processes(SERVER, options(node='127.0.0.1'),
                              env={'ASYNCORO_UDP_PORT': str(port)})
    lines = run_client(processes, r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    echo = yield asyncoro.Coro.locate('echo', timeout=10)     # found by discovery on that port
    print('found', echo.location)

asyncoro.Coro(client)
''', options(udp_port=port))
    assert lines == ['found %s' % where]
    proc = processes('import asyncoro.disasyncoro as asyncoro\nasyncoro.AsynCoro()\n',
                     ready=False, env={'ASYNCORO_UDP_PORT': '5135O'})
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "ValueError: ASYNCORO_UDP_PORT='5135O' is not a port number (1-65535)" in err.decode()


SINK_SERVER = r'''
import sys, json, hashlib, time
import asyncoro.disasyncoro as asyncoro

rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def sink(coro=None):
    coro.set_daemon()
    coro.register('sink')
    digests = []
    while True:
        msg = yield coro.receive()
        if msg[0] == 'hog':             # stall the whole hub: only the guard thread serves
            msg[1].send('hogging')
            time.sleep(msg[2])
        elif msg[0] == 'data':
            digests.append(hashlib.sha256(msg[1]).hexdigest())
        elif msg[0] == 'report':
            msg[1].send(digests)
            digests = []

asyncoro.Coro(sink)
print('ready', rt.location, flush=True)
sys.stdin.read()
'''


@pytest.mark.deadline(150)
def test_big_delivers_to_a_stalled_process_are_acknowledged_and_arrive_whole(processes):
    """20 frames of 16 MiB delivered while the receiver's hub is stalled past
    the guard's threshold: every deliver is acknowledged within its timeout
    and every byte arrives (nothing is left half-sent in an outbox)."""
    port = free_udp_port()
    server, where = processes(SINK_SERVER, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json, hashlib, os, time
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    sink = yield asyncoro.Coro.locate('sink', timeout=10)
    assert (yield sink.deliver(('data', b'warm up'), timeout=10)) == 1   # both ways connected
    sink.send(('report', coro))
    yield coro.receive(timeout=10)
    sink.send(('hog', coro, 6))
    print('stalled', (yield coro.receive(timeout=10)))
    sent, acks, slowest = [], [], 0
    for i in range(20):
        data = os.urandom(16 << 20)
        sent.append(hashlib.sha256(data).hexdigest())
        t0 = time.monotonic()
        acks.append((yield sink.deliver(('data', data), timeout=10)))
        slowest = max(slowest, time.monotonic() - t0)
    print('acks', acks, 'within timeout', slowest < 10)
    sink.send(('report', coro))
    got = yield coro.receive(timeout=60)
    print('arrived whole', got == sent, len(got))

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port), timeout=140)
    assert lines == ['stalled hogging', 'acks %s within timeout True' % ([1] * 20),
                     'arrived whole True 20']


ORDER_SERVER = r'''
import sys, json, hashlib
import asyncoro.disasyncoro as asyncoro

rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def collector(coro=None):
    coro.set_daemon()
    coro.register('collector')
    digest, out_of_order, first, others, count = hashlib.sha256(), 0, None, 0, 0
    while True:
        msg = yield coro.receive()
        if msg[0] == 'report':
            msg[1].send((count, out_of_order, others, digest.hexdigest()))
            continue
        reply_to, i, data = msg
        out_of_order += i != count
        count += 1
        first = first or reply_to
        others += reply_to is not first     # the same reference each time?
        digest.update(data)
        if i % 500 == 0:
            reply_to.send(i)            # answered through that reference

asyncoro.Coro(collector)
print('ready', rt.location, flush=True)
sys.stdin.read()
'''


@pytest.mark.deadline(90)
def test_a_burst_of_sends_of_every_size_arrives_in_order_and_whole(processes):
    """3000 messages of 0 bytes to 300 KB sent without yielding (written at
    once, coalesced, and along the burst) arrive in order and intact; the
    sender's coroutine, named in each of them, unpickles to one reference,
    and answers through it come back in order."""
    port = free_udp_port()
    server, _ = processes(ORDER_SERVER, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json, hashlib, random
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(coro=None):
    collector = yield asyncoro.Coro.locate('collector', timeout=10)
    rng = random.Random(7)
    digest = hashlib.sha256()
    for i in range(3000):
        size = rng.choice([0, 1, 100, 150, 4000, 70000, 300000]) if i % 7 == 0 else 100
        data = rng.randbytes(size)
        digest.update(data)
        collector.send((coro, i, data))
    answers = []
    for _ in range(6):
        answers.append((yield coro.receive(timeout=30)))
    collector.send(('report', coro))
    count, out_of_order, others, got = yield coro.receive(timeout=30)
    print('answers', answers)
    print('count', count, 'out of order', out_of_order, 'other references', others,
          'whole', got == digest.hexdigest())

asyncoro.Coro(client)
''', options(node='127.0.0.1', udp_port=port), timeout=80)
    assert lines == ['answers [0, 500, 1000, 1500, 2000, 2500]',
                     'count 3000 out of order 0 other references 0 whole True']
    stop(server)


@pytest.mark.deadline(60)
def test_a_connection_that_closes_as_the_runtime_says_goodbye_ends_it_cleanly(processes):
    # terminate() says BYE to each peer; a connection that closes just then
    # (its peer went too) set peer.out to None under the next line:
    # AttributeError, exit status 1
    port = free_udp_port()
    server, location = processes(SERVER, options(udp_port=port))
    client = processes(r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
from asyncoro import netio
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))
assert rt.peer(asyncoro.Location(*sys.argv[2].rsplit(':', 1))) == 0
send = netio.Connection.send

def closes_at_bye(conn, payload):
    if netio.loads(payload)[0] == 'bye':
        conn.close('the peer went as it was told goodbye')
    return send(conn, payload)

netio.Connection.send = closes_at_bye
rt.terminate()
print('ended', flush=True)
''', options(udp_port=port), location, ready=False)
    assert read_line(client, 30, 'the end') == 'ended'
    assert client.wait(20) == 0


def test_an_idle_runtime_with_a_peer_wakes_at_most_once_a_second(processes):
    """No thread of an idle runtime (a connection to a peer open, nothing to
    do) wakes more than once a second: the hub waits in its poll, and the
    stall guard with it. Counted in voluntary context switches, per thread."""
    port = free_udp_port()
    server, where = processes(SERVER, options(node='127.0.0.1', udp_port=port))
    lines = run_client(processes, r'''
import sys, json, os, time
import asyncoro.disasyncoro as asyncoro
asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def switches():
    counts = {}
    for tid in os.listdir('/proc/self/task'):
        with open('/proc/self/task/%s/status' % tid) as status:
            for line in status:
                if line.startswith('voluntary_ctxt_switches'):
                    counts[tid] = int(line.split()[1])
    return counts

def client(coro=None):
    echo = yield asyncoro.Coro.locate('echo', timeout=10)
    echo.send((coro, 'hello'))
    print('reply', (yield coro.receive(timeout=10)), flush=True)
    yield coro.sleep(6)

talked = asyncoro.Coro(client)
time.sleep(2)       # (this thread is not the hub) the guard sees the hub idle, and waits
before = switches()
time.sleep(4)
after = switches()
print('threads', len(after), 'most wake-ups in 4 s', max(after[tid] - before.get(tid, 0)
                                                         for tid in after))
talked.value()
''', options(node='127.0.0.1', udp_port=port))
    assert lines[0] == "reply ('echo', 'hello')"
    most = int(lines[1].rsplit(None, 1)[1])
    assert most <= 6, lines       # 4, and the turns into and out of the wait (it was 32)
    stop(server)


def test_references_to_one_remote_coroutine_are_equal_and_others_are_not(processes):
    # two references unpickled apart (the reference cache emptied between)
    # are equal and hash alike, so the scheduler finds a job by the rcoro
    # of its end; another id, another port or a local coroutine is not it (and
    # references to a remote channel compare as channels do)
    lines = run_client(processes, r'''
import asyncoro.disasyncoro as asyncoro
from asyncoro import channel, core, netio

def ref(coro_id, port):
    core._REFERENCES.clear()
    return netio.loads(netio.dumps(core._rebuild_coro('~job', coro_id, '127.0.0.9', port)))

def chan(name, port):
    return netio.loads(netio.dumps(channel._rebuild_channel(name, netio.Location('127.0.0.9', port))))

def main(coro=None):
    yield
    a, b = ref(5, 9000), ref(5, 9000)
    checks = {
        'distinct objects': a is not b,
        'equal': a == b and not (a != b) and hash(a) == hash(b) and {a: 1}.get(b) == 1,
        'another id': a != ref(6, 9000),
        'another port': a != ref(5, 9001),
        'not a local coroutine': coro != ref(coro._id, 9000) and ref(coro._id, 9000) != coro,
        'not other things': a != 5 and a != 'job',
        'channels likewise': chan('c', 9000) == chan('c', 9000) and
            hash(chan('c', 9000)) == hash(chan('c', 9000)) and chan('c', 9000) != chan('c', 9001)
            and chan('c', 9000) != chan('d', 9000),
    }
    return sorted(k for k, ok in checks.items() if not ok)

print(asyncoro.Coro(main).value(timeout=10))
''', options())
    assert lines == ['[]']
