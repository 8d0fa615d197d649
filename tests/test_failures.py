"""Mistakes a user makes, and faults: each gets a clear answer, on every side
involved, and nothing waits forever.

Real node, scheduler and client processes on 127.0.0.1 with ports of their
own; every process is killed by PID at the end, and a traceback any of them
prints fails the test unless the test expects it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import free_udp_port, program_env, read_line
from test_operations import CLIENT, PRIVATE, finish, wait_for_line

# a client whose jobs wait for servers with a short patience, and that
# reports its status messages and the result of one job
PATIENT = PRIVATE + r'''
Computation.wait_warning = 2

def job(x, coro=None):
    yield coro.sleep(0.01)
    return x * 2

def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status in (
                Scheduler.NodeDiscovered, Scheduler.NodeClosed):
            print('status', msg.status, msg.info.addr, flush=True)
'''


# a job that waits for a server; the client closes the computation once it has
# had time to say why (past wait_warning), which ends the wait
WAIT_THEN_CLOSE = r'''
def waiting(computation, coro=None):
    print('waited', (yield computation.run(job, 1)), flush=True)

def main(coro=None):
    computation = Computation([job])
    assert (yield computation.schedule()) == 0
    waiter = asyncoro.Coro(waiting, computation)
    yield coro.sleep(4)
    yield computation.close()      # the waiting run() ends with it
    yield waiter.finish()

asyncoro.Coro(main)
'''


# ---------------------------------------------------------------- a node that cannot serve

@pytest.mark.deadline(60)
def test_a_file_over_the_nodes_max_file_size_leaves_the_node_out_once(processes, discoronode,
                                                                       tmp_path):
    node, ports = discoronode('--max_file_size', '1k')
    (tmp_path / 'big.dat').write_bytes(b'x' * 4096)
    client = processes(PATIENT + r'''
def main(coro=None):
    computation = Computation([job, 'big.dat'], status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    t0 = time.time()
    print('result', (yield computation.run_result(job, 1)), round(time.time() - t0), flush=True)
    print('results', (yield computation.run_results(job, range(5))), flush=True)
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0, lines
    addr = node.location.split(':')[0]
    assert 'result None 0' in lines             # at once: no node is left for it
    assert 'results [None, None, None, None, None]' in lines
    # six jobs not run for one reason: said once, and how often it came again
    not_run = [line for line in logs if 'not run' in line]
    assert len(not_run) == 2 and '(5 more times: job job' in not_run[1], not_run
    assert lines.index('status 1 %s' % addr) < lines.index('status 3 %s' % addr)
    left_out = [line for line in logs if 'left out' in line]
    assert len(left_out) == 1, logs             # once, not again and again
    assert 'big.dat' in left_out[0] and '4096 bytes > max_file_size=1024' in left_out[0]
    assert any('no node can run it' in line and '4096 bytes > max_file_size=1024' in line
               for line in logs)
    refused = [line for line in node_log(node) if 'big.dat' in line and 'refused' in line]
    assert len(refused) == 1, refused


def node_log(node):
    """What a node printed up to now (it is killed, then read to its end)."""
    node.kill()
    node.wait(10)
    text = bytes(node.__dict__.get('_pending_output', b'')) + node.stdout.read()
    return text.decode().splitlines()


@pytest.mark.deadline(60)
def test_a_server_port_in_use_leaves_the_node_out_and_says_which(processes, discoronode):
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        # the node takes port-1 (if free: else any), its one server `port`, which is taken
        node, ports = discoronode('--tcp_ports', str(port - 1) + '-' + str(port), cpus=1)
        client = processes(PATIENT + r'''
def main(coro=None):
    computation = Computation([job], status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    t0 = time.time()
    print('result', (yield computation.run_result(job, 1)), round(time.time() - t0), flush=True)
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
        code, lines, logs = finish(client, 40)
    finally:
        taken.close()
    assert code == 0, lines
    addr = node.location.split(':')[0]
    assert 'result None 0' in lines
    assert 'status 3 %s' % addr in lines            # the client hears the node closed
    left_out = [line for line in logs if 'left out' in line]
    assert len(left_out) == 1 and 'could not start' in left_out[0], logs
    assert ':%d' % port in left_out[0] and 'Address already in use' in left_out[0]


# ---------------------------------------------------------------- secrets, files, pulses

@pytest.mark.deadline(60)
def test_a_node_with_another_secret_is_named_on_both_sides(processes, discoronode):
    node, ports = discoronode('-s', 'the node secret')
    client = processes(PATIENT.replace("Scheduler(udp_port", "Scheduler(secret='another one', "
                                                           "udp_port") + WAIT_THEN_CLOSE,
                       json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0, lines
    assert lines == ['waited None']
    node_addr = node.location.split(':')[0]
    # the client: why its job waits, naming the node's address
    why = [line for line in logs if 'has waited 2s' in line]
    assert len(why) == 1 and '%s: ' % node_addr in why[0] and 'secret' in why[0], logs
    assert any(node_addr in line and "not the same secret" in line for line in logs), logs
    # the node: the client's runtime failed authentication
    text = '\n'.join(node_log(node))
    assert re.search(r'127\.0\.0\.1:\d+ failed authentication \(not the same secret\)', text)
    assert 'signed with another secret' in text
    assert 'the node secret' not in text and 'another one' not in '\n'.join(logs)


@pytest.mark.deadline(60)
def test_a_node_with_another_secret_is_named_by_the_scheduler_program(processes, discoronode,
                                                                        services, tmp_path):
    node, ports = discoronode('-s', 'secret one')
    scheduler = services('discoro', ['-u', ports['scheduler'], '--discoronode_port',
                                     ports['node'], '-s', 'secret two', '--dest_path',
                                     tmp_path / 'scheduler'], 'discoro scheduler ready')
    where = scheduler.ready_line.split()[3]
    line = wait_for_line(scheduler, 20, 'the warning', lambda line: 'not the same secret' in line)
    assert node.location.split(':')[0] in line
    line = wait_for_line(node, 20, 'the node\'s warning', lambda line: 'not the same secret' in line)
    assert where in line and 'secret one' not in line


@pytest.mark.deadline(90)
def test_scheduler_program_and_node_on_one_machine_keep_their_files_apart(
        processes, discoronode, services, tmp_path):
    shared = tmp_path / 'one-dest-path'          # both use the same dest_path, as by default
    node, ports = discoronode(dest=shared)
    services('discoro', ['-u', ports['scheduler'], '--discoronode_port', ports['node'],
                         '--dest_path', shared], 'discoro scheduler ready')
    client = CLIENT + r'''
def count(name, coro=None):
    import os
    yield coro.sleep(0.2)
    with open(os.path.join('..', name)) as f:
        return len(f.read())

def main(name, coro=None):
    computation = Computation([count, name])
    assert (yield computation.schedule()) == 0
    print(name, (yield computation.run_result(count, name)), flush=True)
    yield computation.close()

asyncoro.Coro(main, sys.argv[2])
'''
    for i in range(3):
        (tmp_path / ('data%d.txt' % i)).write_text('y' * (10 + i))
    clients = [processes(client, json.dumps(ports), 'data%d.txt' % i, ready=False)
               for i in range(3)]
    results = [finish(c, 60) for c in clients]
    assert [(code, lines) for code, lines, _ in results] == [
        (0, ['data%d.txt %d' % (i, 10 + i)]) for i in range(3)]
    folders = sorted(os.listdir(shared / 'discoro'))
    assert 'node-1' in folders and 'scheduler-1' in folders


@pytest.mark.deadline(60)
def test_a_node_keeps_the_pulse_interval_its_bounds_allow(processes, discoronode):
    node, ports = discoronode('--min_pulse_interval', '1')
    client = processes(PRIVATE + r'''
def job(coro=None):
    yield coro.sleep(4)

def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroNodeAvailInfo):
            print('pulse', time.monotonic(), flush=True)

def main(coro=None):
    computation = Computation([job], pulse_interval=1, status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    yield computation.run_result(job)
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, _ = finish(client, 40)
    assert code == 0, lines
    times = [float(line.split()[1]) for line in lines if line.startswith('pulse')]
    assert len(times) >= 3, lines                    # a pulse a second while the job runs
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 1.8, gaps


@pytest.mark.deadline(90)
def test_a_node_ends_the_computation_after_5_missed_pulses(processes, discoronode):
    node, ports = discoronode('--min_pulse_interval', '1', console=True)
    client = processes(PRIVATE + r'''
def job(coro=None):
    yield coro.sleep(120)

def main(coro=None):
    computation = Computation([job], pulse_interval=1)
    assert (yield computation.schedule()) == 0
    rcoro = yield computation.run(job)
    print('running', flush=True)
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    assert read_line(client, 30, 'the job start') == 'running'
    os.kill(client.pid, signal.SIGSTOP)          # the scheduler (in the client) falls silent
    stopped = time.monotonic()
    try:
        line = wait_for_line(node, 20, 'the end of the computation',
                             lambda line: 'ends here' in line)
        took = time.monotonic() - stopped
    finally:
        os.kill(client.pid, signal.SIGCONT)
    assert 'answered no pulse' in line and '5 pulse intervals' in line
    assert 4 <= took <= 7, took                  # 5 intervals, within one interval


# ---------------------------------------------------------------- waiting says why

@pytest.mark.deadline(60)
def test_a_job_with_no_node_anywhere_says_why_it_waits(processes):
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    client = processes(PATIENT + WAIT_THEN_CLOSE, json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0 and lines == ['waited None'], (lines, logs)
    why = [line for line in logs if 'has waited 2s' in line]
    assert len(why) == 1, logs
    assert 'no discoro node has answered' in why[0] and str(ports['node']) in why[0]


@pytest.mark.deadline(60)
def test_run_results_whose_jobs_wait_says_why_once_and_each_gets_its_value(processes):
    """run_results with the scheduler in the client's process (each job's
    answer comes to a callback, not to a greenlet): the jobs that wait are
    named once, and the close gives each its value."""
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    client = processes(PATIENT + WAIT_THEN_CLOSE.replace(
        "(yield computation.run(job, 1))", "(yield computation.run_results(job, range(3)))"),
        json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0 and lines == ['waited [None, None, None]'], (lines, logs)
    why = [line for line in logs if 'has waited 2s' in line]
    assert len(why) == 1 and 'no discoro node has answered' in why[0], logs
    # the close: said once, then how many more times at the end
    not_run = [line for line in logs if 'not run: ' in line and 'was closed' in line]
    assert len(not_run) == 2 and '(2 more times: ' in not_run[1], logs


# ---------------------------------------------------------------- bad options

PROGRAMS = {'node': 'asyncoro.discoronode', 'scheduler': 'asyncoro.discoro',
            'httpd': 'asyncoro.httpd'}


@pytest.mark.parametrize('program, argv, named', [
    ('node', ['--peer', 'foo'], '--peer'),
    ('node', ['--peer', '127.0.0.1:abc'], '--peer'),
    ('node', ['--tcp_ports', '70000'], '--tcp_ports'),
    ('node', ['--tcp_ports', 'abc'], '--tcp_ports'),
    ('node', ['-u', '80000'], '-u'),
    ('node', ['--max_file_size', 'xyz'], '--max_file_size'),
    ('node', ['--save_config', '/nonexistent/dir/x.ini'], '--save_config'),
    ('node', ['--dest_path', '/proc/no-such-folder'], '--dest_path'),
    ('node', ['--certfile', '/no/such/cert.pem'], '--certfile'),
    ('node', ['--keyfile', '/no/such/key.pem'], '--keyfile'),
    ('scheduler', ['-t', '99999'], '-t'),
    ('scheduler', ['--certfile', '/no/such/cert.pem'], '--certfile'),
    ('httpd', ['-p', '99999'], '-p'),
    ('httpd', ['--certfile', '/no/such/cert.pem'], '--certfile'),
])
def test_a_bad_option_value_is_one_line_naming_it_and_exit_status_2(tmp_path, program, argv,
                                                                     named):
    proc = subprocess.run([sys.executable, '-m', PROGRAMS[program]] + argv + ['--daemon'],
                          capture_output=True, env=program_env(), timeout=30, cwd=str(tmp_path))
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, (proc.stdout, err)
    assert 'Traceback' not in proc.stderr.decode()
    assert err[-1].startswith('%s.py: error: ' % {'node': 'discoronode', 'scheduler': 'discoro',
                                                 'httpd': 'httpd'}[program]), err
    assert named in err[-1] and argv[1] in err[-1], err


def test_a_certificate_that_is_not_one_is_refused_at_start(tmp_path):
    bogus = tmp_path / 'cert.pem'
    bogus.write_text('not a certificate\n')
    proc = subprocess.run([sys.executable, '-m', 'asyncoro.discoronode', '--certfile',
                           str(bogus), '--daemon'], capture_output=True, env=program_env(),
                          timeout=30, cwd=str(tmp_path))
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr.decode(), err
    assert '--certfile' in err[-1] and str(bogus) in err[-1]
