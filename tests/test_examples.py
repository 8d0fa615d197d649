"""Every runnable program of examples/ as a real process (examples/README.rst;
the httpd examples are in test_examples_httpd.py).

Each test copies examples/ to a scratch directory (some examples chdir to
their own directory and write files there) and runs the programs from its
parent, as `python examples/<name>`, with ASYNCORO_NODE=127.0.0.1 and a
private TMPDIR. discoro examples run against a `discoronode.py` of their own
(2 servers) that they find by discovery on UDP ports of the test's own,
given to them the way a user would: $ASYNCORO_UDP_PORT and
$ASYNCORO_DISCORONODE_PORT. Client/server pairs get a discovery port of
their own the same way. Every process is killed by PID at the end.
"""

import glob
import hashlib
import math
import os
import py_compile
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import (LOG_LINE, ROOT, Process, free_udp_port, reap, program_env, read_line,
                      split_log)

TIMEOUT = 45
ALGORITHMS = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512']
LOCATION = r'127\.0\.0\.1:\d+'


@pytest.fixture
def example(tmp_path, request):
    """start(name, *argv, ports=None) runs examples/<name> from a scratch
    copy; `ports` (udp ports of a node, or {'scheduler': port}) go to the
    program in $ASYNCORO_UDP_PORT / $ASYNCORO_DISCORONODE_PORT.
    start.folder is the scratch copy."""
    folder = tmp_path / 'examples'
    shutil.copytree(os.path.join(ROOT, 'examples'), str(folder),
                    ignore=shutil.ignore_patterns('__pycache__', 'result-*'))
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    procs = []

    def start(name, *argv, ports=None):
        env = {'TMPDIR': str(tmp)}
        if ports:
            env['ASYNCORO_UDP_PORT'] = str(ports['scheduler'])
            if 'node' in ports:
                env['ASYNCORO_DISCORONODE_PORT'] = str(ports['node'])
        proc = Process([sys.executable, os.path.join('examples', name)] +
                                [str(a) for a in argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=program_env(**env),
                                cwd=str(tmp_path))
        procs.append(proc)
        return proc
    start.folder = folder
    start.tmp = tmp
    yield start
    reap(procs, request)


def finish(proc, stdin=b'', timeout=TIMEOUT):
    """Close stdin (after writing `stdin`), wait for the end; (program lines,
    log lines). The program must exit with 0."""
    out, err = proc.communicate(stdin, timeout=timeout)
    out = bytes(proc.__dict__.get('_pending_output', b'')) + out
    assert proc.returncode == 0, 'exit status %s\n%s\n%s' % (proc.returncode, out.decode(),
                                                          err.decode())
    return split_log(out.decode())


def run(example, name, *argv, ports=None, timeout=TIMEOUT):
    return finish(example(name, *argv, ports=ports), timeout=timeout)


def read_until(proc, predicate, timeout, what, seen=None):
    """Read proc's lines until predicate(line) holds; that line. Lines read
    go to `seen` when it is a list."""
    deadline = time.monotonic() + timeout
    while True:
        line = read_line(proc, max(deadline - time.monotonic(), 0.1), what)
        if seen is not None:
            seen.append(line)
        if predicate(line):
            return line


def output_line(proc, timeout, what):
    """The next line of proc's own output (asyncoro's log lines skipped)."""
    return read_until(proc, lambda line: not LOG_LINE.match(line), timeout, what)


def servers_of(node, timeout=30):
    """The Locations (as text) the node's log names for its 2 servers."""
    found = []
    while len(found) < 2:
        line = read_until(node, lambda line: 'discoro server ' in line, timeout,
                          'a server start on the node')
        found.append(re.search(r'started at (%s);' % LOCATION, line).group(1))
    return found


def node_lines(node, count, pattern, timeout=30):
    """The next `count` lines of the node's (and its servers') output that
    match `pattern`, as match objects.

    The servers share their node's stdout and print() writes a line's text
    and its newline in two writes, so two servers' lines may come merged
    ('A...B...' then two newlines): a line is searched for each match of
    `pattern` (without its anchors) in turn."""
    unanchored = pattern.lstrip('^').rstrip('$')
    matches = []

    def found(line):
        matches.extend(re.finditer(unanchored, line))
        return len(matches) >= count
    read_until(node, found, timeout, '%d lines like %r' % (count, pattern))
    return matches[:count]


def sha(alg, path):
    with open(path, 'rb') as f:
        return getattr(hashlib, alg)(f.read()).hexdigest()


# ---------------------------------------------------------------- discoro clients

@pytest.mark.parametrize('name', ['discoro_client1.py', 'discoro_client1_greenlet.py'])
def test_client1_results_come_in_order_from_both_servers(example, discoronode, name):
    node, ports = discoronode()
    lines, logs = run(example, name, 6, ports=ports)
    if name.endswith('greenlet.py'):
        assert lines.pop() == '6 jobs done'
    assert len(lines) == 6, lines
    pattern = r'^    result for (\d+) from (%s): (.+)$' % LOCATION
    rows = [re.match(pattern, line).groups() for line in lines]
    assert [int(i) for i, _, _ in rows] == list(range(6))
    # 6 jobs of 0.5-2 s at once on 2 servers: both run jobs; none ran on the node
    assert len({loc for _, loc, _ in rows}) == 2
    assert node.location not in {loc for _, loc, _ in rows}
    for _, _, when in rows:
        time.strptime(when)          # time.asctime() of the server


def test_client2_runs_jobs_one_by_one_with_the_monitor_serving(example, discoronode):
    node, ports = discoronode()
    proc = example('discoro_client2.py', 3, 0, ports=ports)
    line = read_until(proc, lambda line: 'Started HTTP server at' in line, 30,
                      'the monitor starting')
    url = re.search(r'(http://127\.0\.0\.1:\d+/)', line).group(1)
    with urllib.request.urlopen(url, timeout=10) as page:     # while the jobs run
        assert page.status == 200 and b'<html' in page.read().lower()
    lines, logs = finish(proc)
    assert [re.sub(LOCATION, 'LOC', line) for line in lines] == [
        '  job %d processed by LOC' % i for i in range(3)]
    assert any('HTTP server waiting for 2 seconds' in line for line in logs)


def test_client3_objects_of_a_class_go_to_the_jobs_and_come_back(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client3.py', 4, ports=ports)
    requests = {int(m.group(1)): float(m.group(2)) for m in
                (re.match(r'^  request (\d+): (\S+)$', line) for line in lines) if m}
    results = [re.match(r'^    result for job (\d+): (\d+): (\S+)$', line).groups()
               for line in lines if line.startswith('    result')]
    assert sorted(requests) == [0, 1, 2, 3]
    assert [int(k) for k, _, _ in results] == [0, 1, 2, 3]       # k counts arrivals
    assert sorted(int(j) for _, j, _ in results) == [0, 1, 2, 3]
    for _, j, value in results:          # printed by the client's C.__repr__
        assert float(value) == math.sqrt(requests[int(j)])
    # what the jobs printed on their servers, in the node's output
    received = node_lines(node, 4, r'^process at (%s) received: (\S+)$' % LOCATION)
    assert sorted(float(m.group(2)) for m in received) == sorted(requests.values())


def test_client4_files_go_to_the_jobs_and_results_come_back(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client4.py', 3, ports=ports)
    folder = str(example.folder)
    data_files = sorted(os.path.basename(p) for p in
                        glob.glob(os.path.join(folder, 'discoro_client*.py')))[:3]
    outputs = {}
    for line in lines:
        i, path = re.match(r'^    job (\d+) output is in (.+)$', line).groups()
        outputs[int(i)] = path
    assert sorted(outputs) == [0, 1, 2]
    for i, data_file in enumerate(data_files):
        assert outputs[i] == os.path.join(folder, 'result-' + data_file)
        with open(os.path.join(folder, data_file)) as f:
            expected = ['%d: %d' % (n, len(line) - 1) for n, line in enumerate(f, start=1)]
        with open(outputs[i]) as f:
            assert f.read().splitlines() == expected
    # moved out of the client's dest_path (under its TMPDIR)
    inboxes = os.path.join(str(example.tmp), 'asyncoro', 'discoro', 'scheduler-*')
    assert glob.glob(os.path.join(inboxes, 'result-*')) == []


def test_client5_external_program_talks_through_pipes(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client5.py', 3, ports=ports)
    for i in range(3):
        mine = [re.sub(LOCATION, 'LOC', line) for line in lines
                if re.match(r'^ +job %d ' % i, line)]
        assert [re.sub(r' - current time is .*$', ' - TIME', line) for line in mine] == (
            ['  job %d processed by LOC' % i] +
            ['      job %d output: Line %d - TIME' % (i, k) for k in range(1, 11)] +
            ['  job %d done' % i])
        for line in mine[1:-1]:
            time.strptime(line.split(' - current time is ')[1])
    assert len(lines) == 3 * 12


@pytest.mark.deadline(120)
def test_client6_streams_and_client6_channel_see_the_same_trends(example, discoronode):
    node, ports = discoronode()
    signals, saved = {}, {}
    tickdata = os.path.join(str(example.folder), 'tickdata')
    for name in ('discoro_client6.py', 'discoro_client6_channel.py'):
        lines, logs = run(example, name, 300, 12345, ports=ports)
        if name.endswith('channel.py'):
            assert lines.pop(0) == "  'start' delivered to 2 subscribers"
        *trends, analysed, stored, where = lines
        # each job counted the items it got and checked their order
        assert analysed == '  rcoro_avg_proc analysed 300 items'
        assert stored == '  rcoro_save_proc saved 300 items'
        assert where == '  the data is in %s' % tickdata
        with open(tickdata) as f:
            saved[name] = f.read().splitlines()
        os.remove(tickdata)
        assert [line.split(': ')[0] for line in saved[name]] == [str(i) for i in range(300)]
        rows = [re.match(r'^    trend signal at (\d+): (high|low) / (\d+\.\d\d)$', line)
                for line in trends]
        assert all(rows), trends
        indices = [int(row.group(1)) for row in rows]
        assert indices == sorted(set(indices)) and 20 <= indices[0] and indices[-1] < 300
        signals[name] = trends
    # the same seed, the same data: with every item in order, the same signals
    assert saved['discoro_client6.py'] == saved['discoro_client6_channel.py']
    assert signals['discoro_client6.py'] == signals['discoro_client6_channel.py']
    assert signals['discoro_client6.py']      # (seed 12345 gives some)


def test_client7_status_messages_drive_the_jobs(example, discoronode):
    node, ports = discoronode()
    proc = example('discoro_client7.py', 5, ports=ports)
    servers = servers_of(node)
    lines, logs = finish(proc)
    started = [re.match(r'^  rcoro_proc started at (%s) with (\S+)$' % LOCATION, line)
               for line in lines if line.startswith('  rcoro_proc started')]
    finished = [re.match(r'^      rcoro_proc at (%s) finished with (\S+)$' % LOCATION, line)
                for line in lines if line.startswith('      rcoro_proc at')]
    assert len(lines) == 10 and len(started) == 5 and len(finished) == 5 and all(started + finished)
    # the value of each job (raise StopIteration(n)) comes back with its end
    assert sorted(m.groups() for m in started) == sorted(m.groups() for m in finished)
    assert {m.group(1) for m in started} <= set(servers)
    for m in finished:
        start = lines.index('  rcoro_proc started at %s with %s' % m.groups())
        assert start < lines.index(m.group(0))


def test_client8_jobs_that_block_still_get_their_messages(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client8.py', 3, 0.3, ports=ports)
    processed = [re.match(r'^  job (\d) processed by (%s)$' % LOCATION, line)
                 for line in lines if line.startswith('  job')]
    results = [re.match(r'^    (%s) computed result: (\d+\.\d+)$' % LOCATION, line)
               for line in lines if line.startswith('    ')]
    assert len(lines) == 6 and all(processed) and all(results)
    assert [int(m.group(1)) for m in processed] == [0, 1, 2]
    assert sorted(m.group(2) for m in processed) == sorted(m.group(1) for m in results)
    for m in results:           # 5 numbers between 0.3 and 0.6
        assert 1.5 <= float(m.group(2)) <= 3.0


def test_client9_node_setup_loads_data_that_every_server_uses(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client9_node.py', 8, ports=ports)
    folder = str(example.folder)
    first = sorted(os.path.basename(p) for p in
                   glob.glob(os.path.join(folder, 'discoro_client*.py')))[0]
    assert lines[0] == '  Sending %s to 127.0.0.1' % first
    assert len(lines) == 9
    for i, line in enumerate(lines[1:]):
        alg, name, digest = re.match(r'^   (\w+)sum for (\S+): ([0-9a-f]+)$', line).groups()
        assert (alg, name) == (ALGORITHMS[i % 6], first)
        assert digest == sha(alg, os.path.join(folder, name))
    (match,) = node_lines(node, 1, r'^data_file: "(.+)"$')
    assert match.group(1) == first


def test_client9_server_setup_loads_a_file_per_server(example, discoronode):
    node, ports = discoronode()
    lines, logs = run(example, 'discoro_client9_server.py', 8, ports=ports)
    folder = str(example.folder)
    files = sorted(os.path.basename(p) for p in
                   glob.glob(os.path.join(folder, 'discoro_client*.py')))[:2]
    sent = dict(re.match(r'^  Sending (\S+) to (%s)$' % LOCATION, line).groups()
                for line in lines[:2])
    assert sorted(sent) == files and len(set(sent.values())) == 2
    assert len(lines) == 10
    for i, line in enumerate(lines[2:]):
        alg, name, digest = re.match(r'^    (\w+)sum for (\S+): ([0-9a-f]+)$', line).groups()
        assert alg == ALGORITHMS[i % 6] and name in files
        assert digest == sha(alg, os.path.join(folder, name))
    # each server processed the file it was sent, and only that
    processing = node_lines(node, 8, r'^(%s) processing (\S+?\.py)$' % LOCATION)
    assert all(sent[m.group(2)] == m.group(1) for m in processing)


def test_ssh_ec2_compiles_and_imports_without_doing_anything(example, tmp_path):
    # it needs a cloud node, so it is never run: no address outside
    # 127.0.0.0/8 may be contacted
    path = str(example.folder / 'discoro_ssh_ec2.py')
    py_compile.compile(path, cfile=str(tmp_path / 'ec2.pyc'), doraise=True)
    check = subprocess.run([sys.executable, '-c', r'''
import importlib.util, sys, threading
spec = importlib.util.spec_from_file_location('discoro_ssh_ec2', sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(callable(module.client_proc), callable(module.compute), threading.active_count())
''', path], capture_output=True, timeout=60, env=program_env(), cwd=str(tmp_path))
    assert check.stdout.decode().split() == ['True', 'True', '1'], check.stderr.decode()


# ---------------------------------------------------------------- client / server pairs

def start_server(example, name, *argv):
    """A server program with a discovery port of its own; its first line."""
    ports = {'scheduler': free_udp_port()}
    server = example(name, *argv, ports=ports)
    first = output_line(server, 30, 'the first line of %s' % name)
    return server, ports, first


@pytest.mark.expected_tracebacks('Exception: invalid invocation: [13]')   # the example's own
def test_rci_monitor_pair(example):
    server, ports, first = start_server(example, 'rci_monitor_server.py')
    where = re.match(r'^RCI rci_1 registered at (%s); enter "quit" to stop$' % LOCATION,
                     first).group(1)
    lines, logs = run(example, 'rci_monitor_client.py', ports=ports)
    assert lines == ['RCI is at %s' % where] * 2
    # its results are debug lines of the logger 'asyncoro'
    messages = [line.split(' - ', 1)[1] for line in logs if line.split()[2] == 'asyncoro']
    created = [m.split()[1] for m in messages if re.match(r'^RCI \S+ created$', m)]
    ends = {match.group(1): match.group(2, 3) for match in
            (re.match(r'^RCI (\S+) (finished|failed) with: (.+)$', m) for m in messages)
            if match}
    assert len(created) == 5 and sorted(ends) == sorted(created)
    assert [ends[c] for c in created] == [
        ('finished', 'msg:0'), ('failed', 'invalid invocation: 1'), ('finished', 'msg:2'),
        ('failed', 'invalid invocation: 3'), ('finished', 'msg:4')]
    server_lines, server_logs = finish(server, b'quit\n')
    assert [line for line in server_lines if line.startswith('running')] == [
        'running %s with test%d, %d' % (c, x, x) for x, c in enumerate(created)]
    # the jobs that failed: logged with their tracebacks
    assert sorted(line for line in server_lines if line.startswith('Exception')) == [
        'Exception: invalid invocation: 1', 'Exception: invalid invocation: 3']


def test_remote_coro_pair_all_messages_arrive_in_order(example):
    server, ports, first = start_server(example, 'remote_coro_server.py')
    where = re.match(r'^server_coro is at (%s); enter "quit" to stop$' % LOCATION,
                     first).group(1)
    lines, logs = run(example, 'remote_coro_client.py', ports=ports)
    assert lines == ['server is at %s' % where]
    # the client ended right after sending: its queued messages went out first
    got = [output_line(server, 30, 'message %d at the server' % i) for i in range(10)]
    assert got == ['Received message %d' % i for i in range(10)]
    assert finish(server, b'quit\n')[0] == []


def test_tut_pair(example):
    server, ports, first = start_server(example, 'tut_server.py')
    where = re.match(r'^server_coro is at (%s);' % LOCATION, first).group(1)
    lines, logs = run(example, 'tut_client.py', ports=ports)
    assert lines == ['server is at %s' % where]
    got = [output_line(server, 30, 'message %d at the server' % i) for i in range(30)]
    check_thirty(got)
    assert finish(server, b'quit\n')[0] == []


def check_thirty(lines):
    """30 lines 'processing <id>: <n> / <x>': ids 1..30 once each; x = 0, 1, 2
    in this order for each n."""
    rows = [tuple(int(v) for v in re.match(r'^processing (\d+): (\d) / (\d)$', line).groups())
            for line in lines]
    assert sorted(msg_id for msg_id, _, _ in rows) == list(range(1, 31))
    for n in range(10):
        assert [x for _, m, x in rows if m == n] == [0, 1, 2]


def test_remote_channel_pair_deliver_waits_for_two_subscribers(example):
    server, ports, first = start_server(example, 'remote_channel_server.py', 2)
    where = re.match(r'^channel 2clients is at (%s);' % LOCATION, first).group(1)
    client = example('remote_channel_client.py', ports=ports)
    assert output_line(client, 30, 'the located channel') == 'server is at %s' % where
    # the server's coroutine subscribes 2 s after the start: until then the
    # first deliver(n=2) waits
    assert output_line(server, 30, 'the subscription') == 'receiver subscribed to 2clients'
    lines, logs = finish(client)
    sender = re.match(r'^Received "message 0" from sender_proc at (%s)$' % LOCATION,
                      lines[0]).group(1)
    received = ['Received "message %d" from sender_proc at %s' % (k, sender) for k in range(10)]
    assert [line for line in lines if line.startswith('Received')] == received
    assert [line for line in lines if not line.startswith('Received')] == ['delivered to: 2'] * 10
    at_server = [output_line(server, 30, 'message %d at the server' % k) for k in range(10)]
    assert at_server == received
    assert finish(server, b'quit\n')[0] == []


@pytest.mark.deadline(90)
def test_chat_pair_of_clients_transform_drops_shouting(example):
    server, ports, first = start_server(example, 'chat_chan_server.py')
    assert re.match(r'^chat server is at %s; enter "quit" to stop$' % LOCATION, first)
    alice = example('chat_chan_client.py', ports=ports)
    read_until(alice, lambda line: line == '    1 joined :-)', 30, 'alice joining')
    bob = example('chat_chan_client.py', ports=ports)
    read_until(bob, lambda line: line == '    2 joined :-)', 30, 'bob joining')
    assert output_line(alice, 30, 'bob joined, at alice') == '    2 joined :-)'

    alice.stdin.write(b'hello everyone\nSTOP SHOUTING\nsorry\n')
    alice.stdin.flush()
    assert [output_line(bob, 30, 'alice\'s lines at bob') for _ in range(2)] == [
        '    1 says: hello everyone', '    1 says: sorry']        # the shout was dropped
    assert [output_line(alice, 30, 'alice\'s own lines') for _ in range(2)] == [
        '    1 says: hello everyone', '    1 says: sorry']
    bob.stdin.write(b'bye\nquit\n')
    bob.stdin.flush()
    assert [output_line(alice, 30, 'bob leaving, at alice') for _ in range(2)] == [
        '    2 says: bye', '    2 left :-(']
    bob_lines, _ = finish(bob)
    # bob's own line comes back before he unsubscribes; his own 'left' may not
    assert bob_lines in (['    2 says: bye'], ['    2 says: bye', '    2 left :-('])
    finish(alice)               # end of input: leaves too
    assert finish(server, b'quit\n')[0] == ['2 clients joined']


# ---------------------------------------------------------------- local programs

def test_tut_channel_both_subscribers_get_every_number(example):
    lines, logs = run(example, 'tut_channel.py')
    sent = [float(line.split()[1]) for line in lines if line.startswith('sent ')]
    assert len(sent) == 4 and len(lines) == 6
    total, product = 0, 1
    for n in sent:
        total += n
        product *= n
    assert sorted(line for line in lines if not line.startswith('sent ')) == [
        'prod: %r' % product, 'sum: %r' % total]


def test_tut_client_server(example):
    lines, logs = run(example, 'tut_client_server.py')
    assert len(lines) == 30
    check_thirty(lines)


def test_tut_coros_sleep_at_once(example):
    lines, logs = run(example, 'tut_coros.py')
    asked = {}
    for line in lines:
        match = re.match(r'^(\d): ~coro_proc/\d+ sleeping for (\d\.\d+) seconds$', line)
        if match:
            asked[int(match.group(1))] = float(match.group(2))
    woke = dict((int(n), float(s)) for n, s in
                (re.match(r'^(\d): woke up after (\d+\.\d+) seconds$', line).groups()
                 for line in lines if 'woke up' in line))
    assert sorted(asked) == sorted(woke) == list(range(10))
    assert all(woke[n] >= asked[n] - 0.002 for n in asked)     # (printed rounded)
