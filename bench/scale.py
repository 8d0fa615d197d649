"""The scheduler at 8, 64 and 256 servers: jobs/s, CPU per job, spread.

Run by hand: `python bench/scale.py [--sizes 8,64,256] [--per-node 8]
[--jobs 2000]`. For each size it starts size/per-node discoronode processes,
each on an address of its own (127.0.0.2, 127.0.0.3, ...: the scheduler
knows nodes by address) with `-c per-node`, and a private scheduler in this
process. Then, with trivial jobs (a job that returns at once), it prints:

- jobs/s and this process's CPU seconds per 1,000 jobs (the scheduler and the
  client: one process) for `run_results`, a loop of `run()` with the results
  taken from status_coro, and a loop of `run_async()`;
- the CPU seconds per 1,000 jobs of the nodes and all their processes, and
  how many cores all of it kept busy (on a machine with few cores, many
  server processes compete with the scheduler: jobs/s then shows the
  machine, not the scheduler);
- how the jobs spread over the servers (fewest and most jobs on one server);
- the resident memory of a server process (median over all of them);
- the cores that the nodes with their servers, and this process, keep busy
  while no job runs (pulses, and each runtime's guard thread).

Targets: the scheduler's CPU per 1,000 jobs at 256 servers within 1.5x of
that at 8 servers, and jobs/s not falling as the cluster grows.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import psutil

os.environ['ASYNCORO_NODE'] = '127.0.0.1'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncoro.disasyncoro as asyncoro                  # noqa: E402
from asyncoro.discoro import Computation, Scheduler     # noqa: E402
from cluster import Ends, free_udp_port, start           # noqa: E402


def trivial(x):
    return x


def measure(size, jobs, nodes, coro=None):
    """({way: (jobs/s, CPU s per 1000 jobs, fewest, most jobs on a server)},
    a server process's RSS in MB)."""
    status = Ends()
    computation = Computation([trivial], status_coro=status.coro)
    assert (yield computation.schedule()) == 0
    while status.servers < size:
        yield coro.sleep(0.2)
    yield computation.run_results(trivial, range(2 * size))        # warm every server
    figures = {}
    done = len(status.ends)
    for way in ('run_results', 'run() loop', 'run_async loop'):
        others = cluster_cpu(nodes)
        wall, cpu = time.perf_counter(), time.process_time()
        if way == 'run_results':
            results = yield computation.run_results(trivial, range(jobs))
            assert results == list(range(jobs)), 'wrong results'
        else:
            run = computation.run if way == 'run() loop' else computation.run_async
            for i in range(jobs):
                rcoro = yield run(trivial, i)
                assert isinstance(rcoro, asyncoro.Coro), rcoro
        status.until(done + jobs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        others = cluster_cpu(nodes) - others
        per_server = {}
        for where, _ in status.ends[done:done + jobs]:
            per_server[where] = per_server.get(where, 0) + 1
        done += jobs
        counts = [per_server.get(str(loc), 0) for loc in (yield computation.servers())]
        figures[way] = (jobs / wall, cpu * 1000 / jobs, others * 1000 / jobs,
                        (cpu + others) / wall, min(counts), max(counts))
    memory = server_memory(nodes)
    # what the cluster costs with no job: pulses, and each runtime's guard
    others, cpu = cluster_cpu(nodes), time.process_time()
    yield coro.sleep(_IDLE)
    cpu = time.process_time() - cpu         # before cluster_cpu, which costs this process
    idle = ((cluster_cpu(nodes) - others) / _IDLE, cpu / _IDLE)
    yield computation.close()
    return figures, memory, idle


_IDLE = 3       # seconds of no job over which the idle cost is measured


def start_nodes(count, per_node, ports, work):
    return [start('asyncoro.discoronode', ['-c', per_node, '-i', '127.0.0.%d' % (i + 2),
                                           '-u', ports['node'], '--scheduler_port',
                                           ports['scheduler'], '--dest_path',
                                           os.path.join(work, 'node-%d' % i), '--daemon'],
                  'discoronode ready', work, 'node-%d.log' % i) for i in range(count)]


def cluster_cpu(nodes):
    """CPU seconds used so far by the nodes and every process under them
    (zygotes, computation processes, servers); a process that has ended
    counts no more, so take this while the computation runs."""
    total = 0.0
    for node in nodes:
        try:
            processes = [psutil.Process(node.pid)]
            processes += processes[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def server_memory(nodes):
    sizes = []
    for node in nodes:
        try:
            # node -> zygote -> computation process -> servers
            for child in psutil.Process(node.pid).children(recursive=True):
                if child.ppid() != node.pid and not child.children():
                    sizes.append(child.memory_info().rss / 1e6)
        except psutil.NoSuchProcess:
            pass
    return statistics.median(sizes) if sizes else float('nan')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='8,64,256')
    parser.add_argument('--per-node', type=int, default=8)
    parser.add_argument('--jobs', type=int, default=2000)
    args = parser.parse_args(argv)
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    Scheduler(node='127.0.0.1', udp_port=ports['scheduler'], discoronode_port=ports['node'])
    rows = []
    for size in [int(s) for s in args.sizes.split(',')]:
        with tempfile.TemporaryDirectory(prefix='asyncoro-scale-') as work:
            nodes = start_nodes(max(size // args.per_node, 1), min(size, args.per_node), ports,
                                work)
            try:
                figures, memory, idle = asyncoro.Coro(measure, size, args.jobs,
                                                      nodes).value()
            finally:
                for node in nodes:
                    node.terminate()
                for node in nodes:
                    node.wait(20)
        rows.append((size, figures, memory, idle))
    print('the scheduler with trivial jobs (%d per way), nodes of %d servers on 127.0.0.x'
          % (args.jobs, args.per_node))
    print('CPU s / 1000 jobs: this process (scheduler and client), then the nodes and their '
          'servers;\ncores busy: both together per second of wall time (this machine has %d)'
          % psutil.cpu_count())
    print('%8s  %-15s %8s %10s %10s %6s %12s %11s' % (
        'servers', 'way', 'jobs/s', 'CPU sched', 'CPU nodes', 'cores', 'jobs/server',
        'server RSS'))
    for size, figures, memory, _ in rows:
        for way, (rate, cpu, others, cores, fewest, most) in figures.items():
            print('%8d  %-15s %8.0f %10.3f %10.3f %6.2f %6d-%-5d %8.1f MB' % (
                size, way, rate, cpu, others, cores, fewest, most, memory))
    print('idle (no job for %ds), cores busy: the nodes and their servers / this process'
          % _IDLE)
    for size, _, _, (nodes, scheduler) in rows:
        print('%8d  %6.3f / %.3f' % (size, nodes, scheduler))
    first, last = rows[0], rows[-1]
    for way in first[1]:
        print('%s: the scheduler\'s CPU per 1000 jobs at %d servers is %.2fx that at %d (target '
              '<= 1.5x); the nodes\' %.2fx; jobs/s %.2fx' % (
                  way, last[0], last[1][way][1] / first[1][way][1], first[0],
                  last[1][way][2] / first[1][way][2], last[1][way][0] / first[1][way][0]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
