"""Faults beyond asyncoro 4.5: lost jobs run again on request
(Computation(retry_lost=N)), a lost job's own marker (DiscoroJobLost), and
nodes that come back after a partition rejoin the computation.

A partition is a node's whole process tree frozen with SIGSTOP and resumed
with SIGCONT: it answers nothing meanwhile and closes no connection, as a
host cut off from the network would. Real processes on 127.0.0.1 (and
127.0.0.2 for a second node: the scheduler knows nodes by address).
"""

import json
import re
import os
import signal
import time

import psutil
import pytest

from test_operations import CLIENT, PRIVATE, finish, wait_for_line

# the status coroutine prints what a user would watch for
WATCHED = r'''
def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            kind, value = msg.args[1]
            if kind == Scheduler.ServerClosed:
                print('lost', value.server.addr, value.cause, flush=True)
        elif isinstance(msg, DiscoroStatus):
            info = msg.info
            if msg.status == Scheduler.CoroCreated:
                print('created', info.coro.location.addr, flush=True)
            elif msg.status in (Scheduler.NodeDiscovered, Scheduler.NodeInitialized,
                                Scheduler.NodeClosed):
                print('node', {1: 'discovered', 2: 'initialized', 3: 'closed'}[msg.status],
                      info.addr, time.monotonic(), flush=True)
'''

JOBS = r'''
def job(i, seconds, coro=None):
    import os, sys
    # one write: servers share their node's stdout, and print() writes in pieces
    sys.stdout.write('job running %d %d\n' % (os.getpid(), i))
    sys.stdout.flush()
    yield coro.sleep(seconds)
    return i * 10

def fails(coro=None):
    yield coro.sleep(0.1)
    raise ValueError('this job fails by itself')
'''


def freeze(pid, sig=signal.SIGSTOP):
    """Stop (or, with SIGCONT, resume) a process and all it started."""
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def job_pid(node):
    line = wait_for_line(node, 30, 'a job start', lambda line: line.startswith('job running'))
    return int(line.split()[2])


@pytest.mark.deadline(90)
@pytest.mark.expected_tracebacks('ValueError: this job fails by itself')
@pytest.mark.parametrize('retries', [1, 0])
def test_a_killed_servers_job_is_run_again_only_when_asked(processes, discoronode, retries):
    node, ports = discoronode(cpus=2)
    client = processes(PRIVATE + WATCHED + JOBS + r'''
def main(retries, coro=None):
    computation = Computation([job, fails], status_coro=asyncoro.Coro(status),
                              retry_lost=retries)
    assert (yield computation.schedule()) == 0
    results = yield computation.run_results(job, [(i, 2) for i in range(10)])
    print('results', json.dumps([r if isinstance(r, int) else type(r).__name__
                                 for r in results]), flush=True)
    failed = yield computation.run_result(fails)
    print('failed', type(failed).__name__, flush=True)
    yield computation.close()

asyncoro.Coro(main, int(sys.argv[2]))
''', json.dumps(ports), retries, ready=False)
    os.kill(job_pid(node), signal.SIGKILL)         # one of the first two jobs' server
    code, lines, logs = finish(client, 80)
    assert code == 0, (lines, logs)
    results = json.loads(next(line for line in lines if line.startswith('results'))[8:])
    lost = [line for line in lines if line.startswith('lost')]
    created = [line for line in lines if line.startswith('created')]
    assert len(lost) == 1 and re.search('process died', lost[0]), lines
    if retries:
        assert results == [i * 10 for i in range(10)]
        assert len(created) == 10 + 1 + 1          # the jobs, the one run again, `fails`
    else:
        assert sorted(r for r in results if r != 'DiscoroJobLost') == [
            i * 10 for i in range(10) if results[i] != 'DiscoroJobLost']
        assert results.count('DiscoroJobLost') == 1
        assert len(created) == 10 + 1
    assert 'failed ValueError' in lines            # a job that raises is not run again


@pytest.mark.deadline(120)
def test_a_partitioned_node_is_dropped_its_job_run_again_and_it_rejoins(processes, discoronode):
    first, ports = discoronode('--min_pulse_interval', '1', cpus=1)
    second, _ = discoronode('-i', '127.0.0.2', '--min_pulse_interval', '1', cpus=1, ports=ports)
    client = processes(PRIVATE + WATCHED + JOBS + r'''
def main(coro=None):
    computation = Computation([job], pulse_interval=2,
                              status_coro=asyncoro.Coro(initialized), retry_lost=1)
    assert (yield computation.schedule()) == 0
    while len((yield computation.servers())) < 2:
        yield coro.sleep(0.1)
    print('results', (yield computation.run_results(job, [(1, 4), (2, 4)])), flush=True)
    yield back.acquire()
    while back.count < 2:                   # set up at the start, then once it is back
        yield back.wait()
    back.release()
    print('after', (yield computation.run_result_at('127.0.0.1', job, 3, 0.1)), flush=True)
    yield computation.close()

class Back(asyncoro.Condition):
    count = 0

back = Back()

def initialized(coro=None):
    # what `status` sees, told to main: the server of node 127.0.0.1 set up (again)
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status == Scheduler.ServerInitialized and \
                msg.info.addr == '127.0.0.1':
            yield back.acquire()
            back.count += 1
            back.notify()
            back.release()
        status_coro.send(msg)

status_coro = asyncoro.Coro(status)
asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    job_pid(first)
    freeze(first.pid)                       # node 127.0.0.1 and its server: cut off
    frozen = time.monotonic()
    try:
        lost = wait_for_line(client, 30, 'the job lost', lambda line: line.startswith('lost'))
        dropped = time.monotonic() - frozen
        assert lost.startswith('lost 127.0.0.1 its node 127.0.0.1 sent no pulse'), lost
        results = wait_for_line(client, 30, 'the results', lambda l: l.startswith('results'))
        assert results == 'results [10, 20]'     # the lost job ran again on the other node
    finally:
        freeze(first.pid, signal.SIGCONT)
    resumed = time.monotonic()
    back = wait_for_line(client, 30, 'the node back',
                         lambda line: line.startswith('node discovered 127.0.0.1'))
    rejoined = time.monotonic() - resumed
    wait_for_line(client, 30, 'the node set up again',
                  lambda line: line.startswith('node initialized 127.0.0.1'))
    assert wait_for_line(client, 30, 'a job on the node that came back',
                         lambda line: line.startswith('after')) == 'after 30'
    code, lines, logs = finish(client, 30)
    assert code == 0, (lines, logs)
    assert 10 <= dropped <= 16, dropped             # 5 pulse intervals of 2 s, checked each 2 s
    assert rejoined <= 4, rejoined                  # within 2 pulse intervals
    assert back


@pytest.mark.deadline(150)
def test_the_shared_scheduler_survives_a_client_and_a_node_cut_off_at_once(
        processes, discoronode, services, tmp_path):
    node, ports = discoronode('--min_pulse_interval', '1', cpus=1)
    scheduler = services('discoro', ['-u', ports['scheduler'], '--discoronode_port',
                                     ports['node'], '--zombie_period', '4', '--dest_path',
                                     tmp_path / 'scheduler'], 'discoro scheduler ready')
    client = CLIENT + WATCHED.replace('Scheduler.', 'asyncoro.discoro.Scheduler.') + JOBS + r'''
def main(tag, coro=None):
    computation = Computation([job], pulse_interval=1, status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    print(tag, 'result', (yield computation.run_result(job, 1, float(sys.argv[3]))), flush=True)
    yield computation.close()

asyncoro.Coro(main, sys.argv[2])
'''
    first = processes(client, json.dumps(ports), 'first', 60, ready=False)
    job_pid(node)
    freeze(first.pid)
    freeze(node.pid)                        # both cut off at once
    try:
        second = processes(client, json.dumps(ports), 'second', 0.1, ready=False)
        wait_for_line(scheduler, 60, 'the first computation given up',
                      lambda line: 'client unreachable' in line)
    finally:
        freeze(node.pid, signal.SIGCONT)
        freeze(first.pid, signal.SIGCONT)
    # nothing is left reserved: the node comes back and the next client runs there
    code, lines, logs = finish(second, 60)
    assert code == 0, (lines, logs)
    assert 'second result 10' in lines, (lines, logs)
