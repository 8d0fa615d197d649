"""discoro job throughput against a local node with 2 servers.

Run by hand: `python bench/jobs.py [--trivial N] [--cpu N]`. It starts a
discoronode with `-c 2` on 127.0.0.1 (ports of its own) and a private
scheduler, then prints from one run:

- jobs/second for N trivial jobs (a job that returns at once) and the wall
  time for N jobs of 10 ms CPU each, next to the ideal (N * 10 ms / 2), for
  two ways of submitting them: `run_results` (all at once, results in
  order), and a loop of `rcoro = yield computation.run(...)` with the
  results taken from status_coro (the seed's first use case: each run()
  returns once its job has started, so the loop keeps both servers busy).

Targets: at least 3,000 trivial jobs/s; the CPU variant within 10% of the
ideal (1.0 s for 200 jobs) for both ways.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ['ASYNCORO_NODE'] = '127.0.0.1'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncoro.disasyncoro as asyncoro                  # noqa: E402
from asyncoro.discoro import Computation, Scheduler     # noqa: E402
from cluster import Ends, free_udp_port, start           # noqa: E402


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


def measure(trivial_jobs, cpu_jobs, coro=None):
    figures = {}
    for way in ('run_results', 'run() loop'):
        ends = Ends() if way == 'run() loop' else None
        computation = Computation([trivial, cpu_10ms], status_coro=ends and ends.coro)
        assert (yield computation.schedule()) == 0
        submitted = 0
        for job, count in ((trivial, 100), (trivial, trivial_jobs), (cpu_10ms, cpu_jobs)):
            t0 = time.perf_counter()
            if ends is None:
                results = yield computation.run_results(job, range(count))
                assert results == list(range(count)), 'wrong results'
            else:
                for i in range(count):
                    rcoro = yield computation.run(job, i)
                    assert isinstance(rcoro, asyncoro.Coro), rcoro
                submitted += count
                ends.until(submitted)       # every job of this round has ended
                assert sorted(value for _, value in ends.ends[submitted - count:]) == \
                    list(range(count))
            figures.setdefault(way, []).append(time.perf_counter() - t0)
        yield computation.close()
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trivial', type=int, default=2000)
    parser.add_argument('--cpu', type=int, default=200)
    args = parser.parse_args(argv)
    scheduler_port, node_port = free_udp_port(), free_udp_port()
    with tempfile.TemporaryDirectory(prefix='asyncoro-bench-') as work:
        node = start('asyncoro.discoronode', ['-c', 2, '-i', '127.0.0.1', '-u', node_port,
                                              '--scheduler_port', scheduler_port, '--dest_path',
                                              work, '--daemon'],
                     'discoronode ready', work, 'node.log')
        try:
            Scheduler(node='127.0.0.1', udp_port=scheduler_port, discoronode_port=node_port)
            figures = asyncoro.Coro(measure, args.trivial, args.cpu).value()
        finally:
            node.terminate()
            node.wait(10)
    ideal = args.cpu * 0.010 / 2
    print('discoro jobs on one node with 2 servers (private scheduler, 127.0.0.1)')
    for way, (_, trivial_time, cpu_time) in sorted(figures.items()):
        print('  %-12s %5d trivial jobs %8.0f jobs/s  (%.2f s)'
              % (way, args.trivial, args.trivial / trivial_time, trivial_time))
        print('  %-12s %5d jobs of 10 ms CPU %6.2f s wall  (ideal %.2f s: %+.0f%%)'
              % (way, args.cpu, cpu_time, ideal, (cpu_time / ideal - 1) * 100))
    return 0


if __name__ == '__main__':
    sys.exit(main())
