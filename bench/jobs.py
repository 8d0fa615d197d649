"""discoro job throughput against a local node with 2 servers.

Run by hand: `python bench/jobs.py [--trivial N] [--cpu N]`. It starts a
discoronode with `-c 2` on 127.0.0.1 (ports of its own) and a private
scheduler, then prints from one run:

- jobs/second for N trivial jobs (run_results of a job that returns at once);
- wall time for N jobs of 10 ms CPU each, next to the ideal (N * 10 ms / 2).

Targets (issue 4): at least 3,000 trivial jobs/s; the CPU variant within 10%
of the ideal (1.0 s for 200 jobs).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ['ASYNCORO_NODE'] = '127.0.0.1'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncoro.disasyncoro as asyncoro                  # noqa: E402
from asyncoro.discoro import Computation, Scheduler     # noqa: E402


def trivial(x, coro=None):
    yield
    return x


def cpu_10ms(x, coro=None):
    import time
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
        pass
    yield
    return x


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def measure(trivial_jobs, cpu_jobs, coro=None):
    computation = Computation([trivial, cpu_10ms])
    assert (yield computation.schedule()) == 0
    yield computation.run_results(trivial, range(100))          # warm up
    t0 = time.perf_counter()
    results = yield computation.run_results(trivial, range(trivial_jobs))
    trivial_time = time.perf_counter() - t0
    assert results == list(range(trivial_jobs)), 'wrong results'
    t0 = time.perf_counter()
    results = yield computation.run_results(cpu_10ms, range(cpu_jobs))
    cpu_time = time.perf_counter() - t0
    assert results == list(range(cpu_jobs)), 'wrong results'
    yield computation.close()
    return trivial_time, cpu_time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trivial', type=int, default=2000)
    parser.add_argument('--cpu', type=int, default=200)
    args = parser.parse_args(argv)
    scheduler_port, node_port = free_udp_port(), free_udp_port()
    with tempfile.TemporaryDirectory(prefix='asyncoro-bench-') as work:
        node = subprocess.Popen([sys.executable, '-m', 'asyncoro.discoronode', '-c', '2',
                                 '-i', '127.0.0.1', '-u', str(node_port), '--scheduler_port',
                                 str(scheduler_port), '--dest_path', work, '--daemon'],
                                stdout=subprocess.PIPE, text=True, cwd=work)
        try:
            for line in node.stdout:
                if line.startswith('discoronode ready'):
                    break
            Scheduler(node='127.0.0.1', udp_port=scheduler_port, discoronode_port=node_port)
            trivial_time, cpu_time = asyncoro.Coro(measure, args.trivial, args.cpu).value()
        finally:
            node.terminate()
            node.wait(10)
    ideal = args.cpu * 0.010 / 2
    print('discoro jobs on one node with 2 servers (private scheduler, 127.0.0.1)')
    print('  %d trivial jobs (run_results)     %8.0f jobs/s  (%.2f s)'
          % (args.trivial, args.trivial / trivial_time, trivial_time))
    print('  %d jobs of 10 ms CPU              %8.2f s wall  (ideal %.2f s: %+.0f%%)'
          % (args.cpu, cpu_time, ideal, (cpu_time / ideal - 1) * 100))
    return 0


if __name__ == '__main__':
    sys.exit(main())
