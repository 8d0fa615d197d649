"""What the discoro benchmarks share: ports, starting programs, watching jobs.

Not a benchmark itself: jobs.py, scale.py and soak.py import it (they run as
scripts, so this folder is on their sys.path).
"""

import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_udp_port():
    """A UDP port of 127.0.0.1 that nothing uses now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def env():
    """The environment of the programs a benchmark starts: loopback, and
    this checkout's package first."""
    return dict(os.environ, ASYNCORO_NODE='127.0.0.1',
                PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')]
                                                     if p]))


def start(module, argv, ready, work, log_name):
    """Start `python -m <module> argv` with its output in work/<log_name>;
    return it once that says `ready` (RuntimeError if it ends or takes a
    minute)."""
    log_path = os.path.join(work, log_name)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([sys.executable, '-m', module] + [str(a) for a in argv],
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=work, env=env())
    deadline = time.monotonic() + 60
    while True:
        with open(log_path) as log:
            if ready in log.read():
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError('%s did not print %r (see %s)' % (module, ready, log_path))
        time.sleep(0.05)


class Ends:
    """A status_coro that keeps the jobs' ends (where each ran, its value)
    and counts the servers set up; `until(n)` waits (this greenlet) until n
    jobs have ended. Make it in a coroutine or the runtime's thread."""

    def __init__(self):
        import gevent.event
        import asyncoro.disasyncoro as asyncoro
        self.ends = []              # (str of the server's Location, the job's value)
        self.servers = 0
        self._target = 0
        self._reached = gevent.event.Event()
        self.coro = asyncoro.Coro(self._receive)

    def _receive(self, coro=None):
        import asyncoro.disasyncoro as asyncoro
        from asyncoro.discoro import DiscoroStatus, Scheduler
        coro.set_daemon()
        while True:
            msg = yield coro.receive()
            if isinstance(msg, asyncoro.MonitorException):
                self.ends.append((str(msg.args[0].location), msg.args[1][1]))
                if len(self.ends) >= self._target:
                    self._reached.set()
            elif isinstance(msg, DiscoroStatus) and msg.status == Scheduler.ServerInitialized:
                self.servers += 1

    def until(self, count, timeout=None):
        """Wait until `count` jobs have ended (RuntimeError after `timeout`
        seconds, if given)."""
        self._target = count
        if len(self.ends) < count:
            self._reached.clear()
            if not self._reached.wait(timeout):
                raise RuntimeError('%d jobs ended of %d within %ss'
                                   % (len(self.ends), count, timeout))
