"""Hostile peers against a real server process (docs/guide/distributed.rst,
"Security").

The test process plays the attacker with raw sockets: nothing it sends before
authenticating may be unpickled, a malformed or oversized frame closes only
that connection, and the server keeps serving a well-behaved client after all
of it.
"""

import os
import pickle
import socket
import struct

import pytest

from asyncoro import netio
from conftest import free_udp_port, in_greenlet, options, split_log
from test_disasyncoro import SERVER, run_client, stop

SECRET = 'right secret'


class Evil:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def framed(payload):
    return struct.pack('>I', len(payload)) + payload


def raw_connect(where):
    host, port = where.split(':')
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_by_server(sock, timeout=10):
    """True when the server closes the connection (EOF or reset)."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


ECHO_CLIENT = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

def client(host, port, coro=None):
    result = yield rt.peer(asyncoro.Location(host, port))
    print('peer', result)
    if result != 0:
        return
    echo = yield asyncoro.Coro.locate('echo', asyncoro.Location(host, port), timeout=5)
    echo.send((coro, 'still served'))
    print('reply', (yield coro.receive(timeout=10)))

asyncoro.Coro(client, sys.argv[2], int(sys.argv[3]))
'''


@pytest.fixture
def server(processes):
    proc, where = processes(SERVER, options(node='127.0.0.1', udp_port=free_udp_port(),
                                            secret=SECRET, discover_peers=False))
    return proc, where


def still_serves(processes, where, secret=SECRET):
    host, port = where.split(':')
    return run_client(processes, ECHO_CLIENT, options(node='127.0.0.1', secret=secret,
                                                      udp_port=free_udp_port(),
                                                      discover_peers=False), host, port)


def test_wrong_secret_is_refused_and_its_pickle_never_unpickled(processes, server, tmp_path):
    proc, where = server
    marker = tmp_path / 'unpickled'
    evil = framed(pickle.dumps(Evil(str(marker))))

    # 1. a pickle instead of the handshake
    sock = raw_connect(where)
    sock.sendall(evil)
    assert closed_by_server(sock)

    # 2. a real handshake with the wrong secret, then the pickle anyway
    sock = raw_connect(where)
    nonce = os.urandom(32)
    sock.sendall(framed(netio.PROTOCOL + nonce))
    sock.settimeout(10)
    reply = sock.recv(4096)
    assert reply[4:4 + len(netio.PROTOCOL)] == netio.PROTOCOL
    wrong = netio._mac(netio.secret_key('wrong secret'), b'client',
                       reply[4 + len(netio.PROTOCOL):4 + len(netio.PROTOCOL) + 32], nonce)
    sock.sendall(framed(wrong) + evil)
    assert closed_by_server(sock)

    # 3. a whole runtime with the wrong secret
    assert still_serves(processes, where, secret='wrong secret') == ['peer -1']

    assert not marker.exists()
    assert still_serves(processes, where) == ['peer 0', "reply ('echo', 'still served')"]
    assert proc.poll() is None
    log = split_log(stop(proc))[1]
    assert any('failed authentication (not the same secret)' in line for line in log)
    assert any('does not speak asyncoro-gevent/2' in line for line in log)


def test_garbage_and_a_4_gib_frame_close_only_that_connection(processes, server):
    proc, where = server
    key = netio.secret_key(SECRET)

    # keep one honest connection open through all of it
    host, port = where.split(':')
    honest = in_greenlet(netio.connect, (host, int(port)), key, 10)

    sock = raw_connect(where)
    sock.sendall(os.urandom(3000))                     # garbage before the handshake
    assert closed_by_server(sock)

    sock = raw_connect(where)
    sock.sendall(b'\xff\xff\xff\xff' + b'x' * 100)      # claims 4 GiB before the handshake
    assert closed_by_server(sock)

    attacker = in_greenlet(netio.connect, (host, int(port)), key, 10)
    attacker.sendall(b'\xff\xff\xff\xff')               # claims 4 GiB after authenticating
    raw = attacker.unwrap()
    assert closed_by_server(raw)

    for payload in (b'not a pickle at all', netio.dumps(('no-such-request', 1))):
        attacker = in_greenlet(netio.connect, (host, int(port)), key, 10)
        attacker.sendall(framed(payload))
        assert closed_by_server(attacker.unwrap())

    # the honest connection is still open and works: it introduces itself and
    # the server answers who it is
    honest.sendall(framed(netio.dumps(('info', netio.Location('127.0.0.1', 9), 'honest',
                                       '4.5.6'))))
    honest.settimeout(10)
    answer = netio.loads(honest.recv_msg())
    assert answer == ('info-ack', where)        # the server's default name is its location
    honest.close()

    assert still_serves(processes, where) == ['peer 0', "reply ('echo', 'still served')"]
    log = split_log(stop(proc))[1]
    assert any('frame of 4294967295 bytes from 127.0.0.1:' in line and
               'exceeds max_frame_size=67108864; connection closed' in line for line in log)
    assert any('malformed frame from' in line for line in log)
    assert any("unexpected request 'no-such-request'" in line for line in log)
