"""examples/discoro_httpd1.py and discoro_httpd2.py (examples/README.rst) as real
programs: a real node, the monitor on a free port, stdin through a pipe.

The examples call `Scheduler()` and `HTTPServer(computation, port=...)` as
their originals do; the test points them at its own node through
$ASYNCORO_UDP_PORT / $ASYNCORO_DISCORONODE_PORT and gives port 0 as the
first argument, then reads the monitor's address from the log line.
"""

import json
import os
import re
import time

import pytest

from conftest import LOG_LINE, ROOT, read_line, wait_until
from test_httpd import URL, http


def start_example(processes, discoronode, name):
    """The example running against a node of its own: (process, monitor url,
    lines read so far)."""
    node, ports = discoronode()
    with open(os.path.join(ROOT, 'examples', name), encoding='utf-8') as f:
        source = f.read()
    proc = processes(source, '0', ready=False,
                     env={'ASYNCORO_UDP_PORT': str(ports['scheduler']),
                          'ASYNCORO_DISCORONODE_PORT': str(ports['node'])})
    lines = []
    while True:
        line = read_line(proc, 30, 'the monitor starting')
        lines.append(line)
        match = URL.search(line)
        if match:
            return proc, match.group(1), lines


def read_until(proc, lines, predicate, timeout, what):
    """Read lines (into `lines`) until predicate(line); that line."""
    deadline = time.monotonic() + timeout
    while True:
        line = read_line(proc, max(deadline - time.monotonic(), 0.1), what)
        lines.append(line)
        if predicate(line):
            return line


def output(lines):
    return [line for line in lines if not LOG_LINE.match(line)]


def node_counts(base):
    nodes = json.loads(http(base + '/cluster_status')[2])
    return [(n['addr'], n['coros_submitted'], n['coros_done'], n['coros_running'])
            for n in nodes]


def say(proc, *commands):
    for command in commands:
        proc.stdin.write(command.encode() + b'\n')
    proc.stdin.flush()


@pytest.mark.deadline(60)
def test_discoro_httpd1_runs_typed_jobs_and_monitors_them(processes, discoronode):
    proc, base, lines = start_example(processes, discoronode, 'discoro_httpd1.py')
    say(proc, '1', 'abc', '0.5')
    read_until(proc, lines, lambda line: line.startswith('  job 2 started'), 30, 'job 2')
    wait_until(lambda: node_counts(base) == [('127.0.0.1', 2, 2, 0)], 20,
               'the monitor seeing both jobs done')
    say(proc, 'quit')
    started = time.monotonic()
    rest, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0
    assert time.monotonic() - started >= 10      # shutdown() gives browsers poll_sec + 0.5 s
    lines += (bytes(proc.__dict__.get('_pending_output', b'')) + rest).decode().splitlines()
    shown = output(lines)
    assert shown[:2] == ['   Enter a number of seconds for a job to run, or "quit" to end;',
                         '   monitor the cluster in a web browser at %s/ meanwhile.' % base]
    assert '  "abc" is not a number' in shown
    assert [line.split(' started at ')[0] for line in shown if ' started at ' in line] == \
        ['  job 1', '  job 2']
    results = sorted(line for line in shown if line.startswith('    result of job'))
    assert [re.sub(r' at \S+$', '', line) for line in results] == [
        '    result of job 1: 1.0 s', '    result of job 2: 0.5 s']
    assert any(line.endswith('HTTP server waiting for 10 seconds for client updates before '
                             'quitting') for line in lines)


@pytest.mark.deadline(60)
def test_discoro_httpd2_chains_status_messages_and_terminates_at_close(processes, discoronode):
    proc, base, lines = start_example(processes, discoronode, 'discoro_httpd2.py')
    say(proc, 'first', 'second')
    read_until(proc, lines, lambda line: line.startswith('  2: rcoro'), 30, 'job 2 created')
    wait_until(lambda: node_counts(base) == [('127.0.0.1', 2, 0, 2)], 20,
               'the monitor seeing both jobs run')
    created = [line.split()[2] for line in output(lines) if re.match(r'  \d: rcoro ', line)]
    location = created[0].split('@')[1]
    server = json.loads(http(base + '/api/server/' + location)[2])
    assert created[0] in [c['coro'] for c in server['coros']]
    assert all(re.fullmatch(r'\d: \d+\.\d+', c['args']) for c in server['coros'])
    say(proc, 'quit')
    rest, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0
    lines += (bytes(proc.__dict__.get('_pending_output', b'')) + rest).decode().splitlines()
    shown = output(lines)
    # the program's own status_proc got CoroCreated and, at close, the jobs' ends
    assert sorted(line.split()[1] for line in shown if line.endswith(' started')) == \
        sorted(created)
    assert sorted(line.split()[1] for line in shown if line.endswith(' done')) == sorted(created)
    assert not [line for line in shown if line.startswith('status msg ignored')]
    assert any(line.endswith('HTTP server waiting for 10 seconds for client updates before '
                             'quitting') for line in lines)


@pytest.mark.deadline(60)
def test_discoro_monitor_serves_the_jobs_and_waits_for_a_last_update(processes, discoronode):
    """examples/discoro_monitor.py: the program docs/guide/monitor.rst
    shows. The monitor sees the jobs while they run; shutdown() from the
    main program waits poll_sec + 0.5 s before the program ends."""
    proc, base, lines = start_example(processes, discoronode, 'discoro_monitor.py')
    assert read_until(proc, lines, lambda line: line.startswith('monitor at'), 10,
                      'the address printed') == 'monitor at %s/' % base
    wait_until(lambda: sum(n[1] for n in node_counts(base)) == 4, 20,
               'the monitor seeing the 4 jobs submitted')
    read_until(proc, lines, lambda line: line.startswith('results:'), 30, 'the results')
    started = time.monotonic()
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert time.monotonic() - started >= 2       # poll_sec (2) + 0.5 s, less what was read
    lines += (bytes(proc.__dict__.get('_pending_output', b'')) + rest).decode().splitlines()
    assert [line for line in output(lines) if line.startswith('results:')] == \
        ['results: [4, 9, 4, 9]']
    assert any(line.endswith('HTTP server waiting for 2 seconds for client updates before '
                             'quitting') for line in lines)
