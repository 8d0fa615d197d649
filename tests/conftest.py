"""Shared fixtures: a per-test watchdog, helpers to run coroutines and programs.

Every test is bounded: the autouse `deadline` fixture kills the test's greenlet
when it runs too long, and helpers that wait on the runtime or on processes
pass explicit timeouts (a thread blocked on an OS lock cannot be interrupted
by the watchdog). Processes started by a test are killed by PID.
"""

import json
import logging
import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import time

import gevent
import gevent.util
import psutil
import pytest

# Nothing the tests start may bind to (or broadcast on) a real interface, the
# test process included, whatever imports it does.
os.environ['ASYNCORO_NODE'] = '127.0.0.1'
# The hub's rule checked as everything runs (asyncoro.strict), in this
# process and in every program a test starts: a step of the hub greenlet
# that blocks or runs long is an ERROR line beginning 'strict mode:', which
# fails the test (its marker expected_strict(*patterns) says which it expects)
os.environ['ASYNCORO_STRICT'] = '1'
STRICT_LINE = re.compile(rb'strict mode: (.*)')

DEFAULT_DEADLINE = 60
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class TestHang(Exception):
    """A test ran past its deadline."""


@pytest.fixture(autouse=True)
def deadline(request):
    marker = request.node.get_closest_marker('deadline')
    seconds = marker.args[0] if marker else DEFAULT_DEADLINE
    main = gevent.getcurrent()

    def expire():
        sys.stderr.write('\n'.join(gevent.util.format_run_info()))
        gevent.kill(main, TestHang('%s ran past %ss' % (request.node.nodeid, seconds)))
    # the loop's clock is stale if this thread blocked outside the hub (a test
    # that waited in communicate()): refresh it, or the timer fires early
    gevent.get_hub().loop.update_now()
    watchdog = gevent.spawn_later(seconds, expire)
    yield
    watchdog.kill()


def run_coro(target, *args, timeout=10, **kwargs):
    """Run target as a coroutine and return its value; fail if it does not
    finish within `timeout` seconds."""
    import asyncoro
    coro = asyncoro.Coro(target, *args, **kwargs)
    value = coro.value(timeout=timeout)
    assert not coro.is_alive(), '%s did not finish within %ss' % (coro, timeout)
    return value


def wait_until(predicate, timeout, what):
    """Poll `predicate` until it is true; fail naming `what` after `timeout`.
    Sleeps cooperatively, so the deadline watchdog can still fire."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('%s did not happen within %ss' % (what, timeout))
        gevent.sleep(0.005)


def in_greenlet(func, *args, within=10, **kwargs):
    """Run func(*args, **kwargs) in a greenlet of this thread; return its
    result, or fail with gevent.Timeout after `within` seconds."""
    glet = gevent.spawn(func, *args, **kwargs)
    try:
        return glet.get(timeout=within)
    finally:
        glet.kill()


def program_env(**extra):
    env = dict(os.environ)
    env['ASYNCORO_NODE'] = '127.0.0.1'
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


class _Tee:
    """A process's stdout or stderr that keeps a copy of what is read."""

    def __init__(self, stream, transcript):
        self._stream = stream
        self._transcript = transcript

    def fileno(self):
        return self._stream.fileno()

    def read(self, *args):
        data = self._stream.read(*args)
        self._transcript += data
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        self._transcript += data
        return data

    def __iter__(self):
        return iter(self.readline, b'')

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Process(subprocess.Popen):
    """A program a test starts: everything it prints, on stdout and stderr,
    is kept in `transcript` as the test reads it (and the rest when it is
    reaped), to look for tracebacks nobody expected."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.transcript = bytearray()
        for name in ('stdout', 'stderr'):
            stream = getattr(self, name)
            if stream is not None:
                setattr(self, name, _Tee(stream, self.transcript))

    def communicate(self, input=None, timeout=None):
        streams = (self.stdout, self.stderr)
        self.stdout, self.stderr = [s._stream if isinstance(s, _Tee) else s for s in streams]
        try:
            out, err = super().communicate(input, timeout)
        finally:
            self.stdout, self.stderr = streams
        for data in (out, err):
            if data:
                self.transcript += data
        return out, err


TRACEBACK = re.compile(rb'Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*(\S.*)')


def unexpected_tracebacks(procs, expected):
    """The tracebacks these processes printed whose last lines match none
    of the `expected` patterns (regular expressions): each whole (its last
    3000 characters), so that a failure shows where it came from."""
    found = []
    for proc in procs:
        transcript = getattr(proc, 'transcript', None)
        if transcript is None:
            continue
        for match in TRACEBACK.finditer(bytes(transcript)):
            last = match.group(1).decode(errors='replace')
            if not any(re.search(pattern, last) for pattern in expected):
                whole = match.group(0).decode(errors='replace')[-3000:]
                found.append('pid %s: %s\n%s' % (proc.pid, last, whole))
    return found


def strict_errors(procs, expected):
    """The lines of strict mode (the hub greenlet blocked or ran long) these
    processes printed that match none of the `expected` patterns."""
    found = []
    for proc in procs:
        for match in STRICT_LINE.finditer(bytes(getattr(proc, 'transcript', b''))):
            text = match.group(1).decode(errors='replace')
            if not any(re.search(pattern, text) for pattern in expected):
                found.append('pid %s: strict mode: %s' % (proc.pid, text))
    return found


class _StrictLog(logging.Handler):
    """Keeps the strict-mode lines of this very process (its runtimes)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []

    def emit(self, record):
        if record.getMessage().startswith('strict mode:'):
            self.lines.append(record.getMessage())


STRICT_LOG = _StrictLog()
logging.getLogger('asyncoro').addHandler(STRICT_LOG)


@pytest.fixture(autouse=True)
def hub_rule(request):
    """Fail a test whose own process broke the hub's rule (strict mode)."""
    del STRICT_LOG.lines[:]
    yield
    marker = request.node.get_closest_marker('expected_strict')
    expected = marker.args if marker else ()
    broken = [line for line in STRICT_LOG.lines
              if not any(re.search(pattern, line) for pattern in expected)]
    if broken:
        pytest.fail('the hub greenlet blocked or ran long in this process:\n  %s'
                    % '\n  '.join(broken), pytrace=False)


def reap(procs, request=None):
    """Kill each process with its descendants and close its pipes; then, with
    `request`, fail the test if one printed a traceback the test did not
    expect (its marker `expected_tracebacks(*patterns)` says which it does)."""
    for proc in procs:
        kill_tree(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                if isinstance(stream, _Tee):
                    try:
                        stream.read()
                    except (OSError, ValueError):   # closed by the test already
                        pass
                stream.close()
        if proc.stdin is not None:
            proc.stdin.close()
    if request is None:
        return
    marker = request.node.get_closest_marker('expected_tracebacks')
    found = unexpected_tracebacks(procs, marker.args if marker else ())
    marker = request.node.get_closest_marker('expected_strict')
    found += strict_errors(procs, marker.args if marker else ())
    if found:
        pytest.fail('a program printed a traceback (or broke the hub\'s rule) the test did '
                    'not expect:\n  %s' % '\n  '.join(found), pytrace=False)


def kill_tree(proc, timeout=5):
    """Kill a subprocess and its descendants by PID, and reap the child."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)


@pytest.fixture(scope='session')
def certs(tmp_path_factory):
    """Two self-signed certificates: {'good': (certfile, keyfile), 'other': ...}."""
    openssl = shutil.which('openssl')
    if openssl is None:
        pytest.skip('the openssl command is not installed, so no test certificate can be made')
    folder = tmp_path_factory.mktemp('certs')
    made = {}
    for name in ('good', 'other'):
        certfile, keyfile = str(folder / (name + '.pem')), str(folder / (name + '.key'))
        subprocess.run([openssl, 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyfile,
                        '-out', certfile, '-days', '2', '-subj', '/CN=127.0.0.1'],
                       check=True, capture_output=True, timeout=30)
        made[name] = (certfile, keyfile)
    return made


def free_udp_port():
    """A UDP port nobody on 127.0.0.1 uses now, for one test's discovery."""
    for _ in range(50):
        port = random.randint(40000, 60000)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(('', port))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise RuntimeError('no free UDP port found')


def read_line(proc, timeout, what='a line'):
    """The next line of proc's stdout (decoded, without the newline); fail
    after `timeout` seconds. Reads the pipe's descriptor itself, so lines that
    arrive together are not hidden in a buffer from select()."""
    pending = proc.__dict__.setdefault('_pending_output', bytearray())
    deadline = time.monotonic() + timeout
    while b'\n' not in pending:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        if not ready:
            raise AssertionError('%s from pid %s did not come within %ss (so far: %r)'
                                 % (what, proc.pid, timeout, bytes(pending[-500:])))
        data = os.read(proc.stdout.fileno(), 65536)
        if hasattr(proc, 'transcript'):
            proc.transcript += data
        if not data:
            raise AssertionError('pid %s ended before %s; stderr: %s'
                                 % (proc.pid, what, proc.stderr.read().decode()[-2000:]))
        pending += data
    line, _, rest = bytes(pending).partition(b'\n')
    pending[:] = rest
    return line.decode()


LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \S+ - ')


def split_log(text):
    """(program output lines, asyncoro log lines) of a program's stdout."""
    lines = text.splitlines()
    return ([line for line in lines if not LOG_LINE.match(line)],
            [line for line in lines if LOG_LINE.match(line)])


@pytest.fixture
def processes(tmp_path, request):
    """Run Python programs (source text + argv) as subprocesses with
    ASYNCORO_NODE=127.0.0.1; every one is killed by PID at the end.
    `start(source, *argv, ready=True)` waits for the program's 'ready ...'
    line when `ready` is set and returns (proc, rest of that line)."""
    procs = []

    def start(source, *argv, ready=True, env=None):
        script = tmp_path / ('prog%d.py' % len(procs))
        script.write_text(source)
        proc = Process([sys.executable, str(script)] + [str(a) for a in argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=program_env(**(env or {})),
                                cwd=str(tmp_path))
        procs.append(proc)
        if not ready:
            return proc
        while True:
            line = read_line(proc, 30, 'the ready line')
            if line.startswith('ready'):
                return proc, line[len('ready'):].strip()
    yield start
    reap(procs, request)


def options(**kwargs):
    """AsynCoro options as one JSON argument for the programs below."""
    return json.dumps(kwargs)


@pytest.fixture
def services(tmp_path, request):
    """Start the package's programs (`python -m asyncoro.<module> ...`) on
    127.0.0.1: start(module, argv, ready, console=False) -> proc, once it
    printed a line starting with `ready` (proc.ready_line); with `console`
    its stdin is a pipe, with console='devnull' it is /dev/null (as for a
    container started without -i), otherwise --daemon is added. Every one,
    and what it started, is killed by PID at the end."""
    procs = []

    def start(module, argv, ready, console=False):
        cmd = [sys.executable, '-m', 'asyncoro.' + module] + [str(a) for a in argv]
        proc = Process(cmd + ([] if console else ['--daemon']),
                                stdin=subprocess.PIPE if console is True else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=program_env(), cwd=str(tmp_path))
        procs.append(proc)
        while True:
            line = read_line(proc, 30, 'the %s ready line' % module)
            if line.startswith(ready):
                proc.ready_line = line
                return proc
    yield start
    reap(procs, request)


@pytest.fixture
def discoronode(services, tmp_path):
    """Start `discoronode.py` processes on 127.0.0.1 with ports of their own:
    start(*options) -> (proc, udp ports dict); waits for its ready line; every
    node and its servers are killed by PID at the end. With `console` the
    node reads commands from proc.stdin (a pipe) instead of running --daemon
    (console='devnull': its stdin is /dev/null, without --daemon)."""
    count = iter(range(1000))

    def start(*argv, cpus=2, ports=None, dest=None, console=False):
        ports = ports or {'scheduler': free_udp_port(), 'node': free_udp_port()}
        dest = dest or tmp_path / ('node%d' % next(count))
        argv = ([] if cpus is None else ['-c', cpus]) + [
            '-u', ports['node'], '--scheduler_port', ports['scheduler'],
            '--dest_path', dest] + list(argv)
        proc = services('discoronode', argv, 'discoronode ready', console)
        proc.location = proc.ready_line.split()[2]
        proc.node_dir = proc.ready_line.split('dir=', 1)[1]
        return proc, ports
    return start


@pytest.fixture
def scheduler_program(services, tmp_path):
    """Start `discoro.py` (python -m asyncoro.discoro) on 127.0.0.1:
    start(ports, *options, console=False) -> proc, once it printed its ready line."""
    count = iter(range(1000))

    def start(ports, *argv, console=False):
        argv = ['-u', ports['scheduler'], '--discoronode_port', ports['node'],
                '--dest_path', tmp_path / ('scheduler%d' % next(count))] + list(argv)
        proc = services('discoro', argv, 'discoro scheduler ready', console)
        proc.location = proc.ready_line.split()[3]
        return proc
    return start


@pytest.fixture
def program(processes):
    """Start a Python program (source text) as a subprocess, not waiting for a
    ready line; its stdin is a pipe. Killed by PID at the end."""
    def start(source, *argv):
        return processes(source, *argv, ready=False)
    return start
