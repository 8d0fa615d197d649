"""Computations back to back for a while: does anything grow?

Run by hand: `python bench/soak.py [--seconds 120] [--shared] [--every 10]`.
It starts a discoronode with `-c 2` on 127.0.0.1 (ports of its own) and a
client process that schedules a computation, runs 10 small jobs, closes it,
and starts over until the time is up; with `--shared` the client uses a
`discoro.py` scheduler program instead of a private Scheduler. Every `--every`
seconds it prints the resident memory (RSS) and open file descriptors of the
client, the node and (with --shared) discoro.py, and at the end the RSS
growth of each between the end of the first minute and the last sample.

Target: RSS growth under 2% between the second and the last minute.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

from cluster import env, free_udp_port, start

CLIENT = r'''
import json, sys, time
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import Computation, Scheduler
ports, seconds, shared = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == 'shared'
if shared:
    asyncoro.AsynCoro(udp_port=ports['scheduler'])
else:
    Scheduler(udp_port=ports['scheduler'], discoronode_port=ports['node'])

def square(x):
    return x * x

def main(coro=None):
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        computation = Computation([square])
        assert (yield computation.schedule()) == 0
        assert (yield computation.run_results(square, range(10))) == [x * x for x in range(10)]
        yield computation.close()
        done += 1
    print('computations', done, flush=True)

asyncoro.Coro(main)
'''


def sample(procs):
    """{name: (rss in MB, open fds)} of the processes still running."""
    figures = {}
    for name, proc in procs.items():
        try:
            info = psutil.Process(proc.pid)
            figures[name] = (info.memory_info().rss / 1e6, info.num_fds())
        except psutil.NoSuchProcess:
            pass
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=120)
    parser.add_argument('--every', type=float, default=10)
    parser.add_argument('--shared', action='store_true', help='use a discoro.py scheduler')
    args = parser.parse_args(argv)
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    procs = {}
    with tempfile.TemporaryDirectory(prefix='asyncoro-soak-') as work:
        try:
            procs['node'] = start('asyncoro.discoronode',
                                  ['-c', 2, '-u', ports['node'], '--scheduler_port',
                                   ports['scheduler'], '--dest_path', work, '--daemon'],
                                  'discoronode ready', work, 'node.log')
            if args.shared:
                procs['discoro.py'] = start(
                    'asyncoro.discoro', ['-u', ports['scheduler'], '--discoronode_port',
                                         ports['node'], '--dest_path',
                                         os.path.join(work, 'scheduler'), '--daemon'],
                    'discoro scheduler ready', work, 'scheduler.log')
            script = os.path.join(work, 'client.py')
            with open(script, 'w') as f:
                f.write(CLIENT)
            client_log = os.path.join(work, 'client.log')
            with open(client_log, 'w') as log:
                client = subprocess.Popen(
                    [sys.executable, script, json.dumps(ports), str(args.seconds),
                     'shared' if args.shared else 'private'],
                    stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env())
            procs['client'] = client
            names = list(procs)
            print('soak: computations back to back for %.0f s (%s scheduler); RSS MB / open fds'
                  % (args.seconds, 'discoro.py' if args.shared else 'private'))
            print('%8s  ' % 'seconds' + '  '.join('%18s' % name for name in names))
            t0 = time.monotonic()
            samples = []
            while client.poll() is None:
                if time.monotonic() - t0 > args.seconds + 60:
                    print('the client did not finish in time; the last lines of the logs:')
                    for log in sorted(f for f in os.listdir(work) if f.endswith('.log')):
                        with open(os.path.join(work, log)) as f:
                            print('--', log, '\n' + ''.join(f.readlines()[-15:]))
                    return 1
                figures = sample(procs)
                if 'client' not in figures:
                    break
                elapsed = time.monotonic() - t0
                samples.append((elapsed, figures))
                print('%8.0f  ' % elapsed + '  '.join(
                    '%12.1f / %3d' % figures[name] if name in figures else '%18s' % '-'
                    for name in names), flush=True)
                deadline = time.monotonic() + args.every
                while client.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
            client.wait(60)
            with open(client_log) as log:
                lines = log.read().splitlines()
            warnings = [i for i, line in enumerate(lines) if ' - ' in line]
            print('\n'.join(line for line in lines if line.startswith('computations')) or
                  'the client failed:\n' + '\n'.join(lines[-20:]))
            print('log lines in the client: %d' % len(warnings))
            if warnings:        # the first, whole (with its traceback, if any)
                first = warnings[0]
                end = first + 1
                while end < len(lines) and ' - ' not in lines[end] and \
                        not lines[end].startswith('computations'):
                    end += 1
                print('the first:\n' + '\n'.join(lines[first:min(end, first + 40)]))
            if client.returncode != 0:
                return 1
            base = [s for s in samples if s[0] >= min(60, args.seconds / 2)]
            if len(base) >= 2:
                (t_first, first), (t_last, last) = base[0], base[-1]
                print('RSS growth from %.0f s to %.0f s (target: under 2%%):' % (t_first, t_last))
                for name in names:
                    if name in first and name in last:
                        print('  %-11s %6.1f MB -> %6.1f MB  %+.1f%%'
                              % (name, first[name][0], last[name][0],
                                 (last[name][0] / first[name][0] - 1) * 100))
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return 0


if __name__ == '__main__':
    sys.exit(main())
