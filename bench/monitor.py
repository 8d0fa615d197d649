"""The web monitor at 8, 64, 512 and 1,024 nodes: the size and time of its answers.

Run by hand: `python bench/monitor.py [--sizes 8,64,512,1024] [--servers 8]
[--requests 30]`. For each size it starts tests/monitor_fleet.py: a real
HTTPServer fed, through its status coroutine, the messages a scheduler
sends of that many nodes with `--servers` servers each and a job running on
every server, while nodes pulse (every 10 s each) and 100 jobs a second end
and others start. Then it asks each answer below `--requests` times, one
after another on one keep-alive connection, and prints from one run:

- the answer's size; the median and 95th percentile time to get it whole;
  the monitor's CPU per answer (its process's CPU time over the requests,
  less what it spends meanwhile when nobody asks);
- the baseline: the same bytes served, the same way, by a static route of
  a bare bottle application in gevent's WSGI server (a process of its own,
  as the monitor is);
- the longest slice of an answer that the monitor ran in the hub's thread
  (strict mode's record of its steps: between two slices the hub reads
  frames), how long the feed of the cluster took, and the full garbage
  collections of the monitor's process while it answered (they stop the
  hub's thread too, wherever they fall: in a slice, they make it long).

Targets: at 1,024 nodes of 8 servers, every answer the pages poll under
200 KB (/api/cluster, /api/jobs, /api/node) and within 5 ms of the
baseline's time; no slice over 5 ms (the hub's rule allows 20). What lists
every node (the original's /cluster_status, /metrics) grows with the
cluster by design: its size is printed, and /metrics gzipped as Prometheus
asks for it.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLEET = os.path.join(ROOT, 'tests', 'monitor_fleet.py')

# the answers asked for: (label, path, headers); {addr} and {offset} are filled in
ANSWERS = [
    ('cluster page poll', '/api/cluster', {}),
    ('... sorted, a later page', '/api/cluster?sort=cpu&order=desc&offset={offset}', {}),
    ('... a node by name', '/api/cluster?q=node0005', {}),
    ('jobs page poll', '/api/jobs?limit=100', {}),
    ('node page poll', '/api/node/{addr}', {}),
    ('/cluster_status (all)', '/cluster_status', {}),
    ('/metrics', '/metrics', {}),
    ('/metrics gzipped', '/metrics', {'Accept-Encoding': 'gzip'}),
]

BASELINE = r'''
import os, socket, sys
import bottle, gevent.pywsgi
folder = sys.argv[1]
bodies = {name: open(os.path.join(folder, name), 'rb').read() for name in os.listdir(folder)}
app = bottle.Bottle()

@app.get('/<name>')
def answer(name):
    bottle.response.content_type = 'application/json'
    return bodies[name]

class Server(gevent.pywsgi.WSGIServer):     # as the monitor's: answers sent at once
    def handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle(sock, address)

server = Server(('127.0.0.1', 0), app, log=None)
server.start()
print('ready http://127.0.0.1:%d/' % server.server_port, flush=True)
server.serve_forever()
'''


def env(**extra):
    """The programs' environment: loopback, this checkout's package first."""
    return dict(os.environ, ASYNCORO_NODE='127.0.0.1', PYTHONUNBUFFERED='1',
                PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')]
                                                     if p]), **extra)


def start(argv, log_path, environ):
    """A program whose output goes to `log_path`: (process, the rest of its
    `ready` line, its output up to there)."""
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([sys.executable] + [str(a) for a in argv], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=environ)
    deadline = time.monotonic() + 300
    while True:
        with open(log_path) as log:
            text = log.read()
        for line in text.splitlines():
            if line.startswith('ready '):
                return proc, line.split()[1], text
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError('%s did not get ready (see %s)' % (argv[0], log_path))
        time.sleep(0.05)


def stop(proc):
    try:
        proc.stdin.write(b'quit\n')
        proc.stdin.close()
        proc.wait(30)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(10)


def ask(url, path, headers, count):
    """(body, [seconds of each of `count` requests]) over one connection."""
    parts = url.rstrip('/').split('//')[1]
    host, port = parts.split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    times = []
    try:
        for _ in range(3 + count):          # three to warm up
            started = time.perf_counter()
            conn.request('GET', path, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            times.append(time.perf_counter() - started)
            if answer.status != 200:
                raise RuntimeError('%s answered %s: %r' % (path, answer.status, body[:200]))
    finally:
        conn.close()
    return body, times[3:]


def cpu(proc):
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def measure(size, servers, count, work):
    """{label: (bytes, times, CPU s per answer)}, the baseline's {label: times},
    the slowest steps of the monitor, and what it said of its feed and its
    full garbage collections."""
    record = os.path.join(work, 'strict-%d.json' % size)
    log_path = os.path.join(work, 'fleet-%d.log' % size)
    fleet, url, text = start([FLEET, '--nodes', size, '--servers', servers], log_path,
                             env(ASYNCORO_STRICT='1', ASYNCORO_STRICT_LOG=record))
    fed = next(line for line in text.splitlines() if line.startswith('fed '))
    figures, folder = {}, os.path.join(work, 'bodies-%d' % size)
    os.makedirs(folder)
    try:
        before, idle = cpu(fleet), time.perf_counter()
        time.sleep(2)
        idle_rate = (cpu(fleet) - before) / (time.perf_counter() - idle)
        for number, (label, path, headers) in enumerate(ANSWERS):
            path = path.format(addr='127.1.0.5', offset=max(size - 100, 0))
            before, wall = cpu(fleet), time.perf_counter()
            body, times = ask(url, path, headers, count)
            wall = time.perf_counter() - wall
            used = max(cpu(fleet) - before - idle_rate * wall, 0) / (count + 3)
            figures[label] = (len(body), times, used)
            with open(os.path.join(folder, str(number)), 'wb') as f:
                f.write(body)
    finally:
        stop(fleet)
    with open(log_path) as log:
        collections = [line.strip() for line in log if line.startswith('full garbage')]
    baseline, base_url, _ = start(['-c', BASELINE, folder], os.path.join(work, 'base.log'),
                                  env())
    try:
        plain = {label: ask(base_url, '/%d' % number, {}, count)[1]
                 for number, (label, _, _) in enumerate(ANSWERS)}
    finally:
        baseline.kill()
        baseline.wait(10)
    steps = []
    if os.path.exists(record):
        with open(record) as f:
            for line in f:
                steps += json.loads(line)['steps']
    return figures, plain, steps, fed + '; ' + ''.join(collections)


def ms(seconds):
    return '%7.2f' % (seconds * 1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='8,64,512,1024', help='nodes, comma-separated')
    parser.add_argument('--servers', type=int, default=8, help='servers a node')
    parser.add_argument('--requests', type=int, default=30, help='requests of each answer')
    args = parser.parse_args(argv)
    print('The web monitor: a real HTTPServer fed what a scheduler sends (tests/monitor_fleet.'
          'py), %d servers a node with a job on each; %d requests of each answer, one at a '
          'time on a keep-alive connection; times in ms (median / 95th percentile); baseline: '
          'the same bytes from a static bottle route in gevent\'s WSGI server'
          % (args.servers, args.requests))
    with tempfile.TemporaryDirectory(prefix='asyncoro-bench-') as work:
        for size in [int(s) for s in args.sizes.split(',')]:
            figures, plain, steps, fed = measure(size, args.servers, args.requests, work)
            print('\n%d nodes (%s)' % (size, fed))
            print('  %-26s %10s %17s %10s %17s' % ('answer', 'bytes', 'monitor', 'CPU',
                                                   'baseline'))
            for label, (length, times, used) in figures.items():
                base = plain[label]
                print('  %-26s %10s %s /%s %s %s /%s' % (
                    label, '{:,}'.format(length), ms(statistics.median(times)),
                    ms(sorted(times)[int(0.95 * (len(times) - 1))]), ms(used),
                    ms(statistics.median(base)), ms(sorted(base)[int(0.95 * (len(base) - 1))])))
            slices = sorted((step for step in steps if step[0].startswith(
                ('monitor view', 'metrics', 'gzip', 'JSON'))), key=lambda step: -step[3])
            if slices:
                what, n, wall, cpu_ms = slices[0]
                print('  longest slice in the hub\'s thread: %s, %.1f ms CPU (%.1f ms wall; '
                      '%d slices of that kind)' % (what, cpu_ms, wall, n))
    return 0


if __name__ == '__main__':
    sys.exit(main())
