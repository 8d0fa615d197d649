"""A thousand nodes for the web monitor: the status messages a scheduler
sends for a cluster of `nodes` nodes with `servers` servers each and jobs
running on them, and a program that feeds them to a real HTTPServer.

Not a test module: the monitor's tests import it (in-process, through
Monitor.update, as HTTPServer's status coroutine does) and run it as a
program (the browser test), and bench/monitor.py runs it to measure the
monitor at 8 to 1,024 nodes. The scheduler's side of such a cluster is
proven elsewhere (hollow nodes); this is the monitor's side, with the
records asyncoro.records defines and a real scheduler sends:
DiscoroStatus (NodeDiscovered, NodeInitialized, ServerDiscovered,
ServerInitialized, CoroCreated with a DiscoroCoroInfo), DiscoroNodeAvailInfo
(a node's pulse, with its server processes' figures) and MonitorException
(a job's end).

    python tests/monitor_fleet.py --nodes 1024 --servers 8 --jobs 1

prints ``ready http://127.0.0.1:PORT/`` once the monitor holds the whole
cluster, then keeps it alive (pulses, jobs ending and starting) until
``quit`` or the end of its input; then how many full garbage collections
the process made meanwhile, the longest, and how long one takes then (they
stop the hub's thread, and at a thousand nodes they are not short).
"""

import argparse
import collections
import gc
import itertools
import json
import os
import sys
import time
import urllib.request

os.environ.setdefault('ASYNCORO_NODE', '127.0.0.1')

from asyncoro import MonitorException  # noqa: E402
from asyncoro.discoro import (DiscoroCoroInfo, DiscoroNodeAvailInfo,  # noqa: E402
                              DiscoroNodeInfo, DiscoroStatus, Scheduler)
from asyncoro.netio import Location  # noqa: E402

NODE_PORT = 9700        # a node's port; its servers have the ports after it
GIB = 1 << 30


def address(i):
    """The address of the i-th node: 127.1.0.1, ..., 127.1.0.250, 127.1.1.1, ..."""
    return '127.1.%d.%d' % (i // 250, 1 + i % 250)


def name(i):
    """The i-th node's name: rack00-node0000, ... (32 nodes a rack)."""
    return 'rack%02d-node%04d' % (i // 32, i)


def pulse(i, servers, when=0):
    """The i-th node's report of its load (its figures vary with `when`)."""
    addr = address(i)
    processes = [{'location': Location(addr, NODE_PORT + 1 + s), 'pid': 10000 + 8 * i + s,
                  'cpu': float((i + s + when) % 100), 'rss': (40 + (i + s) % 24) << 20}
                 for s in range(servers)]
    return DiscoroNodeAvailInfo(Location(addr, NODE_PORT), float((i * 7 + when) % 100),
                                (4 + i % 12) * GIB, (100 + i % 400) * GIB,
                                float(100 - i % 10), processes)


class Fleet:
    """The cluster's messages. `coro(name, id, location)` makes the
    reference of a job (a remote Coro in a program, a stand-in in-process)."""

    def __init__(self, nodes, servers, jobs, coro):
        self.nodes, self.servers, self.jobs = nodes, servers, jobs
        self.coro = coro
        self.ids = itertools.count(1)
        self.running = collections.deque()     # (number, reference) of the jobs running

    def location(self, i, s):
        return Location(address(i), NODE_PORT + 1 + s)

    def start(self):
        """Every node, its servers and their jobs, as the scheduler tells them."""
        for i in range(self.nodes):
            info = DiscoroNodeInfo(name(i), address(i), self.servers, 'linux-6.1.0-x86_64',
                                   pulse(i, self.servers))
            yield DiscoroStatus(Scheduler.NodeDiscovered, info)
            yield DiscoroStatus(Scheduler.NodeInitialized, info)
            for s in range(self.servers):
                yield DiscoroStatus(Scheduler.ServerDiscovered, self.location(i, s))
                yield DiscoroStatus(Scheduler.ServerInitialized, self.location(i, s))
            yield pulse(i, self.servers)
            for s in range(self.servers):
                for _ in range(self.jobs):
                    yield self.job(self.location(i, s))

    def job(self, location):
        """A job starting on the server at `location`."""
        number = next(self.ids)
        coro = self.coro('compute', number, location)
        self.running.append((number, coro))
        return DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(
            coro, (number, 'part-%06d.csv' % number), {'retries': 3}, time.time()))

    def turn(self):
        """The oldest job ends, and another starts on its server."""
        number, coro = self.running.popleft()
        if number % 50 == 0:
            yield MonitorException(coro, (ValueError, ValueError('row %d has 3 fields'
                                                                 % number)))
        else:
            yield MonitorException(coro, (StopIteration, number))
        yield self.job(coro.location)


# ---------------------------------------------------------------- the program

def _feed(status_coro, messages, coro=None):
    """Send `messages` to the monitor's status coroutine, as a scheduler
    does; the hub's turn every 256 of them."""
    for count, msg in enumerate(messages, 1):
        status_coro.send(msg)
        if count % 256 == 0:
            yield coro.sleep(0)


def _keep_alive(fleet, status_coro, churn, pulse_sec, coro=None):
    """Ten times a second: `churn`/10 jobs end and others start, and the
    nodes pulse, each once every `pulse_sec` seconds."""
    coro.set_daemon()
    nodes = itertools.cycle(range(fleet.nodes))
    for tick in itertools.count():
        yield coro.sleep(0.1)
        for _ in range(churn // 10):
            for msg in fleet.turn():
                status_coro.send(msg)
        for _ in range(max(1, round(fleet.nodes / pulse_sec / 10))):
            status_coro.send(pulse(next(nodes), fleet.servers, tick))


def _holds(url, fleet, timeout=120):
    """Wait until the monitor at `url` holds every node and running job."""
    deadline = time.monotonic() + timeout
    want = (fleet.nodes, fleet.nodes * fleet.servers * fleet.jobs)
    while True:
        with urllib.request.urlopen(url + 'api/cluster?limit=1', timeout=30) as answer:
            data = json.loads(answer.read())
        got = (data['page']['total'], data['coros_running'])
        if got == want:
            return
        if time.monotonic() > deadline:
            raise SystemExit('the monitor holds %s nodes and jobs, not %s, after %ss'
                             % (got, want, timeout))
        time.sleep(0.05)


class _FullCollections:
    """How many full garbage collections this process made, and the longest
    (seconds), from its gc.callbacks."""

    def __init__(self):
        self.count, self.longest, self._began = 0, 0.0, None
        gc.callbacks.append(self)

    def __call__(self, phase, info):
        if info['generation'] != 2:
            return
        if phase == 'start':
            self._began = time.perf_counter()
        elif self._began is not None:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._began)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nodes', type=int, default=1024)
    parser.add_argument('--servers', type=int, default=8)
    parser.add_argument('--jobs', type=int, default=1, help='jobs running on each server')
    parser.add_argument('--churn', type=int, default=100, help='jobs ending (and starting) '
                        'each second')
    parser.add_argument('--pulse', type=float, default=10, help='seconds between two '
                        'reports of a node')
    parser.add_argument('--poll_sec', type=float, default=10)
    args = parser.parse_args(argv)

    import asyncoro.disasyncoro as asyncoro
    import asyncoro.httpd
    from asyncoro.core import _rebuild_coro     # what unpickling a job's reference calls
    from asyncoro.discoro import Computation

    rt = asyncoro.AsynCoro(udp_port=0)
    computation = Computation([_feed])
    httpd = asyncoro.httpd.HTTPServer(computation, host='127.0.0.1', port=0,
                                      poll_sec=args.poll_sec)

    def reference(name, number, location):
        return _rebuild_coro('~' + name, number, location.addr, location.port)
    fleet = Fleet(args.nodes, args.servers, args.jobs, reference)
    started = time.perf_counter()
    asyncoro.Coro(_feed, httpd.status_coro, fleet.start()).value(timeout=300)
    _holds(httpd.url, fleet)
    print('fed %d nodes, %d servers, %d jobs in %.1f s' % (
        args.nodes, args.nodes * args.servers, len(fleet.running),
        time.perf_counter() - started), flush=True)
    gc.collect()        # what the feed left behind: collected before it is served
    full = _FullCollections()
    asyncoro.Coro(_keep_alive, fleet, httpd.status_coro, args.churn, args.pulse)
    print('ready %s' % httpd.url, flush=True)
    for line in sys.stdin:
        if line.strip() == 'quit':
            break
    count, longest = full.count, full.longest
    began = time.perf_counter()
    gc.collect()
    print('full garbage collections since: %d, the longest %.1f ms; one now: %.1f ms'
          % (count, longest * 1000, (time.perf_counter() - began) * 1000), flush=True)
    httpd.shutdown(wait=False)
    rt.terminate()
    return 0


if __name__ == '__main__':
    sys.exit(main())
