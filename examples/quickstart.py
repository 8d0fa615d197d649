"""Quickstart: a real distributed computation on this machine, start to end.

It starts a discoro node with 2 server processes on 127.0.0.1, a private
scheduler in this program and its web monitor (on a free port: the address
is printed), ships `compute` to the servers, prints each job's result, and
shuts everything down. Nothing needs to be running first, and nothing leaves
127.0.0.1:

    python examples/quickstart.py [seconds]

Without an argument it runs 8 short jobs and is done in a few seconds. With
a number of seconds it keeps both servers busy about that long (a job of 2
seconds for each second, two at a time), which leaves time to open the
monitor's address in a browser and watch the jobs come and go.
"""

import os
import socket
import subprocess
import sys
import tempfile

os.environ['ASYNCORO_NODE'] = '127.0.0.1'      # loopback only, before asyncoro starts

import asyncoro.disasyncoro as asyncoro        # noqa: E402
from asyncoro.discoro import Computation, Scheduler   # noqa: E402
from asyncoro.httpd import HTTPServer                 # noqa: E402


def compute(n, pause, coro=None):
    # runs on a server: jobs get only `asyncoro`; they import what they need
    import math
    import time
    started = time.time()
    total = sum(math.sqrt(i) for i in range(n * 20000))     # a little CPU work
    yield coro.sleep(pause)                                  # and some waiting
    return (n, round(total), str(coro.location), round(time.time() - started, 2))


def client(jobs, pause, coro=None):
    computation = Computation([compute])
    # the web monitor: created before schedule(), so it hears of every node and job
    monitor = HTTPServer(computation, host='127.0.0.1', port=0, poll_sec=1)
    print('monitor: %s (nodes, servers and jobs, while this runs)' % monitor.url, flush=True)
    if (yield computation.schedule()) != 0:
        print('no scheduler found')
        monitor.shutdown(wait=False)
        return 1
    results = yield computation.run_results(compute, [(n, pause) for n in range(1, jobs + 1)])
    for n, total, server, seconds in results:
        print('job %2d: sum of square roots = %-10d on server %s in %.2f s'
              % (n, total, server, seconds))
    yield computation.close()
    monitor.shutdown(wait=False)
    return 0


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def main():
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        print('usage: %s [seconds]' % sys.argv[0], file=sys.stderr)
        return 2
    if len(sys.argv) == 2:          # one 2-second job a second, two servers at a time
        jobs, pause = max(int(sys.argv[1]), 1), 2.0
    else:
        jobs, pause = 8, 0.1
    scheduler_port, node_port = free_udp_port(), free_udp_port()
    with tempfile.TemporaryDirectory(prefix='asyncoro-quickstart-') as work:
        node = subprocess.Popen(
            [sys.executable, '-m', 'asyncoro.discoronode', '-c', '2', '-i', '127.0.0.1',
             '-u', str(node_port), '--scheduler_port', str(scheduler_port),
             '--dest_path', work, '--daemon'],
            stdout=subprocess.PIPE, text=True, cwd=work)
        try:
            for line in node.stdout:
                if line.startswith('discoronode ready'):
                    print(line.strip())
                    break
            else:
                print('the node did not start')
                return 1
            Scheduler(node='127.0.0.1', udp_port=scheduler_port, discoronode_port=node_port)
            status = asyncoro.Coro(client, jobs, pause).value()
        finally:
            node.terminate()
            node.wait(10)
    print('done: node and servers stopped')
    return status


if __name__ == '__main__':
    sys.exit(main())
