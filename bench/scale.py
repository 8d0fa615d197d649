"""The scheduler at 8, 64 and 256 servers (--hollow: 8 to 8,192): jobs/s, CPU per job, spread.

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

With `--hollow [--sizes 8,64,512,8192] [--jobs 2000] [--idle 30]` the nodes
are hollow (bench/hollow.py: 8 servers each, on 127.16.x.y, in 1 to 4
processes; each job's server answers its end at once), so 8,192 servers fit
on this machine. Each size runs twice, each time in a fresh process of this
script: with the scheduler as its own process (`discoro.py`, the client
here) and with a private `Scheduler` in the client process. It prints:

- ready: seconds from the hollow nodes' start (their ready line: every node
  listens; then they connect to the scheduler) until the client has heard
  ServerInitialized of every server;
- for `run_results`, a `run()` loop and a `run_async()` loop of trivial jobs:
  jobs/s, and the scheduler's CPU seconds per 1,000 jobs. With discoro.py
  that is its process's CPU (psutil); with a private scheduler the client's
  process holds both, and its CPU is given: an upper bound of the
  scheduler's. (The client's CPU in the discoro.py run is no measure of its
  share in a private one: there it pickles what a private client hands over
  in-process, and the difference goes negative. The two share one hub
  thread, so no thread clock separates them either.) The CPU of the client
  in the discoro.py runs and of the hollow nodes is printed below the table;
- pulses: the scheduler's CPU (% of one core) while no job runs, over
  --idle seconds with the nodes pulsing every 10 s (Computation's
  pulse_interval=10, which the nodes keep: their --min_pulse_interval is
  10), less what it took with no node at all;
- RSS per node: the scheduler's resident memory once every server is ready,
  less what it held before any node came, per node (for a private
  scheduler, the client's process: its client side holds little per node).

The 8-server row is the baseline of the 8,192-server row. Targets (reported,
not asserted): CPU per 1,000 jobs at 8,192 servers within 1.5x of that at 8,
every server ready within 30 s, pulses under 2% of a core, RSS under 50 KB
per node.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

os.environ['ASYNCORO_NODE'] = '127.0.0.1'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import asyncoro.disasyncoro as asyncoro                  # noqa: E402
from asyncoro.discoro import Computation, Scheduler     # noqa: E402
from cluster import Ends, env, free_udp_port, start      # noqa: E402


def trivial(x):
    return x


def submit(computation, way, jobs):
    """Submit `jobs` trivial jobs one way (a generator: ``yield submit(...)``
    in a coroutine): `run_results`, a `run()` loop or a `run_async` loop."""
    if way == 'run_results':
        results = yield computation.run_results(trivial, range(jobs))
        assert results == list(range(jobs)), 'wrong results'
        return
    run = computation.run if way == 'run() loop' else computation.run_async
    for i in range(jobs):
        rcoro = yield run(trivial, i)
        assert isinstance(rcoro, asyncoro.Coro), rcoro


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
        yield submit(computation, way, jobs)
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
    parser.add_argument('--sizes', default=None)
    parser.add_argument('--per-node', type=int, default=8)
    parser.add_argument('--jobs', type=int, default=2000)
    parser.add_argument('--hollow', action='store_true',
                        help='hollow nodes (bench/hollow.py), up to 8192 servers')
    parser.add_argument('--idle', type=float, default=30,
                        help='with --hollow: seconds over which pulses are measured')
    parser.add_argument('--modes', default='discoro,private',
                        help='with --hollow: the scheduler as discoro.py, private, or both')
    parser.add_argument('--hollow-run', nargs=2, metavar=('SIZE', 'MODE'),
                        help=argparse.SUPPRESS)     # one measurement, in a process of its own
    args = parser.parse_args(argv)
    if args.hollow_run:
        figures = hollow_run(int(args.hollow_run[0]), args.hollow_run[1], args.jobs,
                             args.idle)
        print('figures', json.dumps(figures), flush=True)
        return 0
    if args.hollow:
        return hollow_main(args)
    args.sizes = args.sizes or '8,64,256'
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


# ---------------------------------------------------------------- hollow nodes

HOLLOW = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hollow.py')
_WAYS = ('run_results', 'run() loop', 'run_async loop')
_READY_WITHIN = 300         # seconds: a size whose servers are not all ready by then fails


def hollow_main(args):
    """Each size and mode in a process of its own (a fresh scheduler); the table."""
    sizes = [int(s) for s in (args.sizes or '8,64,512,8192').split(',')]
    modes = args.modes.split(',')
    results = {}
    for size in sizes:
        for mode in modes:
            cmd = [sys.executable, os.path.abspath(__file__), '--hollow-run', str(size), mode,
                   '--jobs', str(args.jobs), '--idle', str(args.idle)]
            print('measuring %d servers, scheduler %s ...' % (size, mode), file=sys.stderr,
                  flush=True)
            out = subprocess.run(cmd, stdout=subprocess.PIPE, env=env(), timeout=1800,
                                 check=True).stdout.decode()
            line = [line for line in out.splitlines() if line.startswith('figures ')][-1]
            results[size, mode] = json.loads(line[len('figures '):])
    print_hollow(sizes, modes, results, args)
    return 0


def print_hollow(sizes, modes, results, args):
    print('the scheduler with hollow nodes of 8 servers (bench/hollow.py), trivial jobs '
          '(%d per way), pulse_interval 10; this machine has %d cores'
          % (args.jobs, psutil.cpu_count()))
    print('CPU: seconds per 1,000 jobs of the scheduler\'s process (private: the client\'s '
          'process, which holds both)')
    head = '%-8s %7s %6s %7s %8s %7s' % ('mode', 'servers', 'nodes', 'ready s', 'KB/node',
                                         'pulses')
    for way in _WAYS:
        head += ' | %-14s' % way
    print(head)
    print('%-8s %7s %6s %7s %8s %7s' % ('', '', '', '', '', '%core') +
          ''.join(' | %6s %7s' % ('jobs/s', 'CPU') for _ in _WAYS))
    for mode in modes:
        for size in sizes:
            fig = results[size, mode]
            row = '%-8s %7d %6d %7.1f %8.1f %7.2f' % (
                mode, size, fig['nodes'], fig['ready'], fig['rss_per_node'] / 1024,
                fig['pulses'] * 100)
            for way in _WAYS:
                row += ' | %6.0f %7.3f' % (fig['ways'][way]['rate'], fig['ways'][way]['sched_cpu'])
            print(row)
    print('the other processes, CPU s per 1,000 jobs (%s): client (discoro.py runs) / hollow '
          'nodes' % ', '.join(_WAYS))
    for mode in modes:
        for size in sizes:
            ways = results[size, mode]['ways']
            print('%-8s %7d   %s' % (mode, size, '   '.join(
                '%.3f / %.3f' % (ways[way]['client_cpu'], ways[way]['nodes_cpu'])
                for way in _WAYS)))
    first, last = sizes[0], sizes[-1]
    print('targets (%d servers against %d):' % (last, first))
    for mode in modes:
        a, b = results[first, mode], results[last, mode]
        ratios = ', '.join('%s %.2fx' % (way, b['ways'][way]['sched_cpu'] /
                                         a['ways'][way]['sched_cpu']) for way in _WAYS)
        print('  %s: CPU per 1,000 jobs %s (target <= 1.5x); every server ready in %.1f s '
              '(target <= 30 s); pulses %.2f%% of a core (target < 2%%); %.1f KB per node '
              '(target < 50 KB)' % (mode, ratios, b['ready'], b['pulses'] * 100,
                                     b['rss_per_node'] / 1024))
    print('(figures: %s)' % json.dumps({'%d %s' % key: value for key, value in
                                         results.items()}))


def hollow_run(size, mode, jobs, idle):
    """One measurement: `size` servers of hollow nodes, the scheduler as
    discoro.py (`mode` 'discoro') or private ('private'); its figures."""
    sys.path.insert(0, os.path.dirname(HOLLOW))
    from hollow import raise_fd_limit
    raise_fd_limit()
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    with tempfile.TemporaryDirectory(prefix='asyncoro-hollow-') as work:
        procs = []
        try:
            if mode == 'discoro':
                scheduler = start('asyncoro.discoro', [
                    '-i', '127.0.0.1', '-u', ports['scheduler'], '--discoronode_port',
                    ports['node'], '--dest_path', os.path.join(work, 'scheduler'),
                    '--daemon'], 'discoro scheduler ready', work, 'scheduler.log')
                procs.append(scheduler)
                with open(os.path.join(work, 'scheduler.log')) as f:
                    ready = [line for line in f if 'discoro scheduler ready' in line][0]
                location = asyncoro.Location(*ready.split()[3].rsplit(':', 1))
                asyncoro.AsynCoro(node='127.0.0.1', udp_port=free_udp_port(),
                                  discover_peers=False)
                sched = psutil.Process(scheduler.pid)
            else:
                Scheduler(node='127.0.0.1', udp_port=ports['scheduler'],
                          discoronode_port=ports['node'])
                location = asyncoro.AsynCoro.instance().location
                sched = psutil.Process()
            return asyncoro.Coro(_measure_hollow, size, mode, jobs, idle, location, sched,
                                 ports, work, procs).value()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _cpu(process):
    times = process.cpu_times()
    return times.user + times.system


def _measure_hollow(size, mode, jobs, idle, location, sched, ports, work, procs, coro=None):
    me = psutil.Process()
    status = Ends()
    computation = Computation([trivial], status_coro=status.coro, pulse_interval=10)
    assert (yield computation.schedule(location)) == 0
    # the scheduler with its computation and no node: its memory, and what it costs idle
    yield coro.sleep(1)
    rss0 = sched.memory_info().rss
    cpu0 = _cpu(sched)
    yield coro.sleep(5)
    idle0 = (_cpu(sched) - cpu0) / 5
    nodes = max(size // 8, 1)
    log_path = os.path.join(work, 'hollow.log')
    with open(log_path, 'w') as log:
        hollow = subprocess.Popen(
            [sys.executable, HOLLOW, '--nodes', str(nodes), '--servers', str(min(size, 8)),
             '--procs', str(1 if nodes <= 8 else 2 if nodes <= 64 else 4), '--result', 'echo',
             '--peer', str(location), '-u', str(ports['node']), '--scheduler_port',
             str(ports['scheduler']), '--dest_path', os.path.join(work, 'nodes')],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env())
    procs.insert(0, hollow)
    launched = time.monotonic()
    while True:
        with open(log_path) as log:
            text = log.read()
        if 'hollow ready' in text:
            break
        if hollow.poll() is not None or time.monotonic() - launched > 120:
            raise RuntimeError('hollow.py did not start (see %s):\n%s' % (log_path, text))
        yield coro.sleep(0.05)
    started = time.monotonic()
    pids = [int(pid) for pid in text.split('pids=')[1].split()[0].split(',')]
    while status.servers < size:
        if time.monotonic() - started > _READY_WITHIN:
            raise RuntimeError('%d of %d servers ready after %ss' % (status.servers, size,
                                                                    _READY_WITHIN))
        yield coro.sleep(0.05)
    ready = time.monotonic() - started
    yield coro.sleep(1)
    rss_ready = sched.memory_info().rss
    results = yield computation.run_results(trivial, range(jobs))        # warm up
    assert results == list(range(jobs)), 'wrong results'
    done = len(status.ends)
    ways = {}
    for way in _WAYS:
        sched_cpu, client_cpu = _cpu(sched), _cpu(me)
        nodes_cpu = sum(_cpu(psutil.Process(pid)) for pid in pids)
        wall = time.perf_counter()
        yield submit(computation, way, jobs)
        status.until(done + jobs, timeout=300)
        done += jobs
        wall = time.perf_counter() - wall
        per = 1000.0 / jobs
        ways[way] = {'rate': jobs / wall, 'sched_cpu': (_cpu(sched) - sched_cpu) * per,
                     'client_cpu': (_cpu(me) - client_cpu) * per if mode == 'discoro' else 0.0,
                     'nodes_cpu': (sum(_cpu(psutil.Process(pid)) for pid in pids) - nodes_cpu)
                     * per}
    rss_jobs = sched.memory_info().rss
    cpu0 = _cpu(sched)
    yield coro.sleep(idle)
    pulses = (_cpu(sched) - cpu0) / idle - idle0
    yield computation.close()
    return {'size': size, 'mode': mode, 'nodes': nodes, 'ready': ready,
            'hollow_start': started - launched, 'rss0': rss0, 'rss_ready': rss_ready,
            'rss_jobs': rss_jobs, 'rss_per_node': (rss_ready - rss0) / nodes,
            'idle0': idle0, 'pulses': pulses, 'ways': ways}


if __name__ == '__main__':
    sys.exit(main())
