"""asyncoro.asyncfile: AsyncFile over pipes and sockets, AsyncPipe over real
processes (sha1sum, sort, grep | wc, cat).

The first tests drive the files from gevent greenlets of the test's thread;
the last ones run the same calls as generator coroutines in the runtime's hub
thread (`data = yield afile.read()`). Processes are killed by PID in finally;
sockets bind to 127.0.0.1, port 0; every wait has a timeout.
"""

import errno
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess

import gevent
import pytest

import asyncoro
from asyncoro import asyncfile
from asyncoro.asyncfile import AsyncFile, AsyncPipe
from asyncoro.netio import AsyncSocket
from conftest import in_greenlet

LOOPBACK = '127.0.0.1'
PIPE = subprocess.PIPE


def run_coro(target, *args, timeout=10):
    coro = asyncoro.Coro(target, *args)
    value = coro.value(timeout=timeout)
    assert not coro.is_alive(), '%s did not finish within %ss' % (coro, timeout)
    return value


def need(*commands):
    missing = [command for command in commands if shutil.which(command) is None]
    if missing:
        pytest.skip('command(s) not installed: %s' % ', '.join(missing))


@pytest.fixture
def popen():
    """Start processes with plain subprocess.Popen; killed by PID at the end."""
    procs = []

    def start(args, **kwargs):
        kwargs.setdefault('env', dict(os.environ, LC_ALL='C'))
        proc = subprocess.Popen(args, **kwargs)
        procs.append(proc)
        return proc
    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def text_lines(count, seed):
    """Deterministic text: `count` lines, about a third containing 'error' in
    some letter case."""
    rnd = random.Random(seed)
    lines = []
    for n in range(count):
        word = rnd.choice(['error', 'Error', 'ERROR', 'warning', 'info', 'eror'])
        lines.append('%06d %s %s\n' % (n, word, 'x' * rnd.randrange(0, 200)))
    return lines


def test_all_is_pinned():
    assert asyncfile.__all__ == ['AsyncFile', 'AsyncPipe', 'Popen']
    assert issubclass(asyncfile.Popen, subprocess.Popen)


def test_sha1sum_through_stdin_and_stdout(popen):
    need('sha1sum')
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 11)     # far more than a pipe buffer
    apipe = AsyncPipe(popen(['sha1sum'], stdin=PIPE, stdout=PIPE))

    def feed():
        for start in range(0, len(data), 100000):
            chunk = data[start:start + 100000]
            assert apipe.write(chunk, full=True, timeout=10) == len(chunk)
        apipe.stdin.close()

    feeder = gevent.spawn(feed)
    output = in_greenlet(apipe.read)
    feeder.get(timeout=5)
    assert output == ('%s  -\n' % hashlib.sha1(data).hexdigest()).encode()
    apipe.close()


def test_communicate_with_text_mode_file(popen, tmp_path):
    need('sha1sum')
    path = tmp_path / 'input.txt'
    path.write_text(''.join(text_lines(5000, seed=2)))
    expected = hashlib.sha1(path.read_bytes()).hexdigest()
    apipe = AsyncPipe(popen(['sha1sum'], stdin=PIPE, stdout=PIPE))
    source = open(path)     # text mode: communicate reads its descriptor
    stdout, stderr = in_greenlet(apipe.communicate, source)
    assert (stdout, stderr) == (('%s  -\n' % expected).encode(), None)
    assert source.closed        # the input object is closed when exhausted


@pytest.mark.parametrize('given', [b'b\nc\na\n', 'b\nc\na\n', io.BytesIO(b'b\nc\na\n'),
                                   io.StringIO('b\nc\na\n')],
                         ids=['bytes', 'str', 'BytesIO', 'StringIO'])
def test_sort_through_communicate(popen, given):
    need('sort')
    apipe = AsyncPipe(popen(['sort'], stdin=PIPE, stdout=PIPE, stderr=PIPE))
    assert in_greenlet(apipe.communicate, given) == (b'a\nb\nc\n', b'')


def test_communicate_with_a_pipe_as_input(popen):
    need('sort')
    read_end, write_end = os.pipe()
    source = os.fdopen(read_end, 'rb')
    apipe = AsyncPipe(popen(['sort'], stdin=PIPE, stdout=PIPE))
    writer = AsyncFile(write_end)

    def produce():
        for word in (b'pear\n', b'apple\n', b'fig\n'):
            writer.write(word, full=True, timeout=5)
            gevent.idle()
        writer.close()

    producing = gevent.spawn(produce)
    assert in_greenlet(apipe.communicate, source) == (b'apple\nfig\npear\n', None)
    producing.get(timeout=5)
    assert source.closed


def test_communicate_reads_stderr_and_timeout(popen):
    need('sh')
    apipe = AsyncPipe(popen(['sh', '-c', 'echo out; echo err >&2'], stdout=PIPE, stderr=PIPE))
    assert in_greenlet(apipe.communicate) == (b'out\n', b'err\n')
    slow = AsyncPipe(popen(['sh', '-c', 'exec sleep 30'], stdout=PIPE))
    with pytest.raises(subprocess.TimeoutExpired):
        in_greenlet(slow.communicate, None, 0.2)


def test_chained_grep_and_wc(popen):
    need('grep', 'wc')
    lines = text_lines(20000, seed=3)
    expected = sum('error' in line.lower() for line in lines)
    grep = popen(['grep', '-i', 'error'], stdin=PIPE, stdout=PIPE)
    wc = popen(['wc', '-l'], stdin=grep.stdout, stdout=PIPE)
    apipe = AsyncPipe(grep, wc)
    assert apipe.pid == wc.pid          # other attributes are the last process's

    def feed():
        for line in lines:
            apipe.stdin.write(line.encode(), full=True, timeout=10)
        apipe.stdin.close()

    feeder = gevent.spawn(feed)
    line = in_greenlet(apipe.readline)
    feeder.get(timeout=5)
    assert int(line) == expected and line.endswith(b'\n')
    assert in_greenlet(apipe.readline) == b''
    assert wc.wait(5) == 0 and apipe.poll() == 0


def test_readline_over_a_pipe(popen):
    need('cat')
    lines = [line.encode() for line in text_lines(3000, seed=4)] + [b'no newline at the end']
    apipe = AsyncPipe(popen(['cat'], stdin=PIPE, stdout=PIPE))

    def feed():
        apipe.write(b''.join(lines), full=True, timeout=10)
        apipe.stdin.close()

    feeder = gevent.spawn(feed)

    def read_lines():
        got = []
        while True:
            line = apipe.readline(timeout=5)
            if not line:
                return got
            got.append(line)

    assert in_greenlet(read_lines) == lines
    feeder.get(timeout=5)


def test_readline_size_limit_and_read_after_readline():
    read_end, write_end = os.pipe()
    with AsyncFile(read_end) as reader, AsyncFile(write_end) as writer:
        writer.write(b'0123456789\nrest of it', full=True)
        writer.close()
        assert in_greenlet(reader.readline, 4) == b'0123'
        assert in_greenlet(reader.readline) == b'456789\n'
        assert in_greenlet(reader.read, 4) == b'rest'
        assert in_greenlet(reader.read) == b' of it'
        assert in_greenlet(reader.read) == b''


def test_asyncfile_over_tcp_socket_file_checksums():
    data = ''.join(text_lines(20000, seed=5)).encode()
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(1)
    listener.setblocking(False)

    def client():
        sock = AsyncSocket(socket.socket())
        sock.settimeout(5)
        sock.connect(listener.getsockname())
        with AsyncFile(sock) as afd:    # takes over the AsyncSocket's descriptor
            for start in range(0, len(data), 16 * 1024):
                chunk = data[start:start + 16 * 1024]
                assert afd.write(chunk, full=True, timeout=10) == len(chunk)
        return hashlib.sha1(data).hexdigest()

    def server():
        gevent.socket.wait_read(listener.fileno(), timeout=5)
        conn, _ = listener.accept()     # a plain socket, as socket_afile.py has
        csum, count = hashlib.sha1(), 0
        with AsyncFile(conn) as afd:
            while True:
                line = afd.readline(timeout=5)
                if not line:
                    break
                csum.update(line)
                count += 1
        return csum.hexdigest(), count

    try:
        serving = gevent.spawn(server)
        client_csum = in_greenlet(client)
        assert serving.get(timeout=10) == (client_csum, 20000)
    finally:
        listener.close()


def test_asyncfile_over_socketpair_both_ways():
    left, right = socket.socketpair()
    with AsyncFile(left) as a, AsyncFile(right) as b:
        assert in_greenlet(a.write, b'ping\n') == 5
        assert in_greenlet(b.readline) == b'ping\n'
        assert in_greenlet(b.write, b'pong', full=True) == 4
        assert in_greenlet(a.read, 4, full=True) == b'pong'
    assert left.fileno() == -1 and right.fileno() == -1     # closed with the AsyncFiles


def test_read_timeout_raises_or_returns_partial():
    left, right = socket.socketpair()
    with AsyncFile(left) as reader, AsyncFile(right) as writer:
        with pytest.raises(IOError) as info:
            in_greenlet(reader.read, 10, timeout=0.1)
        assert str(info.value) == 'timedout'
        writer.write(b'abc')
        assert in_greenlet(reader.read, 10, full=True, timeout=0.1) == b'abc'
        writer.write(b'def')
        assert in_greenlet(reader.read, timeout=0.1) == b'def'      # to EOF, cut by the timeout
        with pytest.raises(IOError, match='timedout'):
            reader.read(1, timeout=0)           # poll: nothing is ready


def test_readline_timeout_keeps_the_partial_line():
    left, right = socket.socketpair()
    with AsyncFile(left) as reader, AsyncFile(right) as writer:
        writer.write(b'par')
        with pytest.raises(IOError, match='timedout'):
            in_greenlet(reader.readline, timeout=0.1)
        writer.write(b'tial\nnext')
        assert in_greenlet(reader.readline, timeout=5) == b'partial\n'


def test_write_timeout_returns_count_written():
    left, right = socket.socketpair()
    with AsyncFile(left) as writer, AsyncFile(right) as reader:
        written = in_greenlet(writer.write, b'z' * (32 * 1024 * 1024), full=True, timeout=0.2)
        assert 0 < written < 32 * 1024 * 1024   # nobody reads: the buffers filled up
        writer.close()
        assert in_greenlet(reader.read, timeout=10) == b'z' * written


def test_write_to_a_closed_reader_raises_broken_pipe():
    read_end, write_end = os.pipe()
    os.close(read_end)
    with AsyncFile(write_end) as writer:
        with pytest.raises(BrokenPipeError):
            writer.write(b'nobody listens')


def test_close_wakes_a_waiting_reader_and_blocks_further_use():
    read_end, write_end = os.pipe()
    reader = AsyncFile(read_end)
    try:
        waiting = gevent.spawn(reader.read, 10)
        gevent.idle()
        reader.close()
        with pytest.raises(OSError) as info:
            waiting.get(timeout=5)
        assert info.value.errno == errno.EBADF
        with pytest.raises(ValueError, match='closed AsyncFile'):
            reader.read()
        reader.close()      # twice is harmless
    finally:
        os.close(write_end)


def test_context_manager_closes_and_does_not_swallow():
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(ZeroDivisionError):
            with AsyncFile(read_end) as afile:
                assert afile.fileno() == read_end
                raise ZeroDivisionError
        with pytest.raises(OSError) as info:
            os.fstat(read_end)      # the descriptor went with the AsyncFile
        assert info.value.errno == errno.EBADF
    finally:
        os.close(write_end)


def test_regular_file_reads_without_waiting(tmp_path):
    path = tmp_path / 'data.bin'
    path.write_bytes(b'line 1\nline 2\n')
    with AsyncFile(open(path, 'rb')) as afile:
        assert afile.readline() == b'line 1\n'
        assert afile.read() == b'line 2\n'


# -- through the runtime: generator coroutines in the hub thread ---------------------

def test_coroutine_pipe_csum_both_ways(popen, tmp_path):
    """pipe_csum.py: communicate() with a text file, and a feeder/reader pair."""
    need('sha1sum')
    path = tmp_path / 'input.txt'
    path.write_text(''.join(text_lines(4000, seed=6)))
    expected = ('%s  -\n' % hashlib.sha1(path.read_bytes()).hexdigest()).encode()
    # Made here in the main thread; used by coroutines in the hub thread.
    first = AsyncPipe(popen(['sha1sum'], stdin=PIPE, stdout=PIPE))
    second = AsyncPipe(popen(['sha1sum'], stdin=PIPE, stdout=PIPE))

    def communicate_proc(coro=None):
        stdout, stderr = yield first.communicate(open(path))
        return stdout, stderr

    def write_proc(fin, coro=None):
        while True:
            data = yield os.read(fin.fileno(), 8 * 1024)
            if not data:
                break
            n = yield second.write(data, full=True)
            assert n == len(data)
        fin.close()
        second.stdin.close()

    def read_proc(coro=None):
        data = yield second.stdout.read()
        second.stdout.close()
        raise StopIteration(data)

    def feeder_proc(coro=None):
        reader = asyncoro.Coro(read_proc)
        asyncoro.Coro(write_proc, open(path))
        return (yield reader.finish())

    assert run_coro(communicate_proc) == (expected, None)
    assert run_coro(feeder_proc) == expected


def test_coroutine_reads_lines_from_socket_afile():
    """socket_afile.py: the main thread accepts, coroutines write and read."""
    data = ''.join(text_lines(5000, seed=7)).encode()
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(1)
    listener.settimeout(10)

    def client_proc(address, coro=None):
        sock = AsyncSocket(socket.socket())
        yield sock.connect(address)
        afd = AsyncFile(sock)
        for start in range(0, len(data), 16 * 1024):
            yield afd.write(data[start:start + 16 * 1024], full=True)
        afd.close()
        return hashlib.sha1(data).hexdigest()

    def server_proc(conn, coro=None):
        afd = AsyncFile(conn)
        csum, count = hashlib.sha1(), 0
        while True:
            line = yield afd.readline()
            if not line:
                break
            csum.update(line)
            count += 1
        afd.close()
        return csum.hexdigest(), count

    try:
        client = asyncoro.Coro(client_proc, listener.getsockname())
        conn, _ = listener.accept()     # blocks the main thread; the coroutine connects
        assert run_coro(server_proc, conn) == (client.value(timeout=5), 5000)
    finally:
        listener.close()


def test_coroutine_read_timeout_and_grep_chain(popen):
    need('grep', 'wc')
    lines = text_lines(2000, seed=8)
    expected = sum('error' in line.lower() for line in lines)
    grep = popen(['grep', '-i', 'error'], stdin=PIPE, stdout=PIPE)
    apipe = AsyncPipe(grep, popen(['wc', '-l'], stdin=grep.stdout, stdout=PIPE))

    def proc(coro=None):
        timed_out = None
        try:
            yield apipe.stdout.read(10, timeout=0.1)    # nothing yet: wc waits for grep
        except IOError as exc:
            timed_out = str(exc)
        for line in lines:
            yield apipe.stdin.write(line.encode(), full=True)
        apipe.stdin.close()
        count = yield apipe.readline()
        return timed_out, int(count)

    assert run_coro(proc) == ('timedout', expected)
