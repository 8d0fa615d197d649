"""Shared fixtures: a per-test watchdog, helpers to run coroutines and programs.

Every test is bounded: the autouse `deadline` fixture kills the test's greenlet
when it runs too long, and helpers that wait on the runtime or on processes
pass explicit timeouts (a thread blocked on an OS lock cannot be interrupted
by the watchdog). Processes started by a test are killed by PID.
"""

import os
import subprocess
import sys
import time

import gevent
import gevent.util
import psutil
import pytest

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
    """Poll `predicate` until it is true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('%s did not happen within %ss' % (what, timeout))
        time.sleep(0.01)


def in_greenlet(func, *args, within=10, **kwargs):
    """Run func(*args, **kwargs) in a greenlet of this thread; return its
    result, or fail with gevent.Timeout after `within` seconds."""
    glet = gevent.spawn(func, *args, **kwargs)
    try:
        return glet.get(timeout=within)
    finally:
        glet.kill()


def poll_until(predicate, timeout, what):
    """Poll predicate (cooperatively) until true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('%s did not happen within %ss' % (what, timeout))
        gevent.sleep(0.005)


def program_env(**extra):
    env = dict(os.environ)
    env['ASYNCORO_NODE'] = '127.0.0.1'
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


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


@pytest.fixture
def program(tmp_path):
    """Start Python programs (source text) as subprocesses; killed at the end."""
    procs = []

    def start(source, *argv, stdin=subprocess.DEVNULL):
        script = tmp_path / ('prog%d.py' % len(procs))
        script.write_text(source)
        proc = subprocess.Popen([sys.executable, str(script)] + list(argv), stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=program_env(), cwd=str(tmp_path))
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        kill_tree(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
