"""The scheduler with real nodes and clients: the three faults the state
machine (asyncoro.schedstate) was built to end, as a user meets them.

1. A node busy with another computation is waited for: the job runs when
   the other computation closes (it is not refused at once).
2. A call bound to a node that has gone (cut off: no packet passes, the
   process lives) ends when the node is lost, run_async_at as well as
   run_result_at.
3. A server that cannot start (its port is taken) is told to the client: a
   WARNING and a status naming it, while the node's other server runs jobs.

A node cut off is its process tree frozen with SIGSTOP: it answers nothing
and closes no connection. Real processes on 127.0.0.1, killed by PID.
"""

import json
import socket
import time

import pytest

from test_fault_tolerance import freeze
from test_operations import CLIENT, PRIVATE, finish, wait_for_line

JOB = r'''
def job(x, seconds=0.01, coro=None):
    yield coro.sleep(seconds)
    return x * x
'''


@pytest.mark.deadline(90)
def test_a_node_busy_with_another_computation_is_waited_for(processes, discoronode):
    node, ports = discoronode(cpus=1)
    first = processes(PRIVATE + JOB + r'''
def main(coro=None):
    computation = Computation([job])
    assert (yield computation.schedule()) == 0
    yield computation.run(job, 3, 6)        # holds the node's one server for 6 s
    print('running', flush=True)
    yield computation.close()               # once its job has ended
    print('first closed', time.time(), flush=True)

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    wait_for_line(first, 30, 'the first job running', lambda line: line == 'running')
    second = processes(PRIVATE + JOB + r'''
Computation.wait_warning = 1        # it says why it waits, naming the other computation

def main(coro=None):
    computation = Computation([job])
    assert (yield computation.schedule()) == 0
    t0 = time.time()
    print('second', (yield computation.run_result(job, 7)), time.time(), flush=True)
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, logs = finish(first, 60)
    assert code == 0, (lines, logs)
    closed = float(next(line for line in lines if line.startswith('first closed')).split()[2])
    code, lines, logs = finish(second, 60)
    assert code == 0, (lines, logs)
    result, = [line.split() for line in lines if line.startswith('second')]
    assert result[1] == '49'                        # it ran, once the first had closed
    assert float(result[2]) >= closed
    waited = [line for line in logs if 'has waited' in line]
    assert len(waited) == 1 and 'is busy with computation' in waited[0], logs
    assert not [line for line in logs if 'not run' in line], logs


@pytest.mark.deadline(90)
def test_a_call_on_a_node_that_has_gone_ends_when_it_is_lost(processes, discoronode):
    node, ports = discoronode('--max_pulse_interval', '2', '--min_pulse_interval', '1',
                              cpus=2)
    addr = node.location.split(':')[0]
    client = processes(PRIVATE + JOB + r'''
def bound(how, coro=None):
    t0 = time.time()
    if how == 'result':
        value = yield computation.run_result_at(%r, job, 5)
    else:
        value = yield computation.run_async_at(%r, job, 5, 60)
    print(how, type(value).__name__, round(time.time() - t0, 1), flush=True)

def main(coro=None):
    global computation
    computation = Computation([job], pulse_interval=10)
    assert (yield computation.schedule()) == 0
    while len((yield computation.servers())) < 2:
        yield coro.sleep(0.1)
    print('ready', flush=True)
    assert (yield coro.receive()) == 'cut'
    yield coro.sleep(2)
    calls = [asyncoro.Coro(bound, 'result'), asyncoro.Coro(bound, 'async')]
    for call in calls:
        yield call.finish()
    yield computation.close()

main_coro = asyncoro.Coro(main)
while sys.stdin.readline().strip() != 'cut':
    pass
main_coro.send('cut')
''' % (addr, addr), json.dumps(ports), ready=False)
    wait_for_line(client, 30, 'the servers ready', lambda line: line == 'ready')
    freeze(int(node.ready_line.split('pid=')[1].split()[0]))    # cut off: no answer, no close
    cut = time.monotonic()
    client.stdin.write(b'cut\n')
    client.stdin.flush()
    ended, seen = {}, []
    while len(ended) < 2:
        line = wait_for_line(client, 40, 'both calls ending',
                             lambda line: seen.append(line) or line.split()[0] in ('result',
                                                                                  'async'))
        ended[line.split()[0]] = (line.split()[1], time.monotonic() - cut)
    # each ends once the node is lost: 5 of its 2 s pulse intervals after the cut
    assert ended['result'][0] == 'DiscoroJobLost', ended
    assert ended['async'][0] == 'NoneType', ended
    assert all(8 <= seconds < 25 for _, seconds in ended.values()), ended
    code, lines, logs = finish(client, 30)
    assert code == 0, (lines, logs)
    lost = [line for line in seen if 'node %s is lost' % addr in line]
    assert len(lost) == 1 and 'sent no pulse' in lost[0], seen
    assert [line for line in seen if 'not run' in line and 'job lost' in line], seen


def _taken_port():
    """A listening socket on 127.0.0.1 whose port is taken, and the port."""
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    return taken, taken.getsockname()[1]


SERVER_STATUS = JOB + r'''
def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status in (
                Scheduler.ServerInitialized, Scheduler.ServerIgnore):
            print('status', msg.status, msg.info, flush=True)

def main(coro=None):
    computation = Computation([job], status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    print('results', (yield computation.run_results(job, range(4))), flush=True)
    yield computation.close()

asyncoro.Coro(main)
'''


@pytest.mark.deadline(60)
@pytest.mark.parametrize('where', ['private', 'discoro.py'])
def test_a_server_that_cannot_start_is_told_to_the_client(processes, discoronode,
                                                          scheduler_program, where):
    taken, port = _taken_port()
    try:
        # the node takes port-2 (if free: else any), its servers port-1 and `port`
        node, ports = discoronode('--tcp_ports', '%d-%d' % (port - 2, port), cpus=2)
        if where == 'private':
            client = processes(PRIVATE + SERVER_STATUS, json.dumps(ports), ready=False)
        else:
            scheduler_program(ports)
            client = processes(CLIENT + SERVER_STATUS, json.dumps(ports), ready=False)
        code, lines, logs = finish(client, 40)
    finally:
        taken.close()
    assert code == 0, (lines, logs)
    assert 'results [0, 1, 4, 9]' in lines                 # on the server that started
    addr = node.location.split(':')[0]
    assert 'status 14 %s:%d' % (addr, port) in lines, lines    # ServerIgnore, naming it
    assert len([line for line in lines if line.startswith('status 12')]) == 1
    warned = [line for line in logs if 'could not start' in line]
    assert len(warned) == 1 and 'server 2 of node %s' % addr in warned[0], logs
    assert 'Address already in use' in warned[0], warned


def test_a_lost_jobs_marker_travels_whole_with_its_code_and_attempts():
    # it did not unpickle before (its args were not its constructor's)
    from asyncoro import netio
    from asyncoro.records import DiscoroJobLost
    first = DiscoroJobLost(('127.0.0.1', 9001), 'its process died', code='died')
    lost = DiscoroJobLost(('127.0.0.1', 9002), 'its node sent no pulse', [first], 'silent')
    back = netio.loads(netio.dumps(lost))
    assert (back.server, back.cause, back.code, str(back)) == (
        lost.server, lost.cause, 'silent', str(lost))
    assert [(a.server, a.cause, a.code) for a in back.attempts] == [
        (first.server, first.cause, 'died')]


def test_a_big_clusters_records_are_frozen_once_it_is_quiet_and_thawed_as_it_shrinks(
        monkeypatch):
    """Calm (the scheduler's shell) keeps a cluster of 256 servers or more out
    of full garbage collections once no server came up for a moment, and
    gives its records back to the collector when it loses a quarter of them
    or the computation ends."""
    import gc
    import gevent
    from asyncoro.schedio import Calm
    monkeypatch.setattr(Calm, 'QUIET', 0.1)
    calm = Calm()

    def frozen_at(count):       # polled: its timer freezes within a look or two
        deadline = time.monotonic() + 5
        while calm.frozen != count and time.monotonic() < deadline:
            gevent.sleep(0.01)
        return calm.frozen == count
    try:
        calm.servers(100)
        gevent.sleep(Calm.QUIET * 3)                # (what must not happen: waited for)
        assert gc.get_freeze_count() == 0           # small: nothing to keep out
        for count in range(200, 520, 40):           # growing: not yet
            calm.servers(count)
            gevent.sleep(Calm.QUIET / 10)
        assert gc.get_freeze_count() == 0
        assert frozen_at(480) and gc.get_freeze_count() > 0     # quiet now
        calm.servers(400)                           # a sixth gone: still frozen
        assert calm.frozen == 480
        calm.servers(300)                           # more than a quarter gone
        assert calm.frozen == 0 and gc.get_freeze_count() == 0
        calm.servers(520)
        assert frozen_at(520)
        calm.thaw()                                 # the computation ended
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_nodes_availability_waits_a_moment_and_never_overtakes_other_news():
    """Each pulse's availability notice is held a moment so that a big
    cluster's go out in one write; a notice of another kind sends what is
    held first, so the client sees them in the order they were made."""
    import types
    import gevent.event
    import asyncoro.disasyncoro as asyncoro
    from asyncoro.records import DiscoroNodeAvailInfo, DiscoroStatus
    from asyncoro.scheduler import Scheduler, _SchedulerService
    from asyncoro.schedio import Held

    seen, more = [], gevent.event.Event()

    def status(coro=None):
        while True:
            msg = yield coro.receive()
            seen.append(msg)
            more.set()

    def avail(name):
        return DiscoroNodeAvailInfo(name, 50.0, 1 << 30, 1 << 30, 100.0)

    status_coro = asyncoro.Coro(status)
    service = _SchedulerService.__new__(_SchedulerService)    # its notices only
    service.package = types.SimpleNamespace(status_coro=status_coro, status_details=False)
    service.watchers = set()
    service.held = Held(service._notify)
    try:
        service.notify(avail('a'))
        service.notify(avail('b'))
        assert not more.wait(Held.WAIT / 5) and seen == []      # held
        service.notify(DiscoroStatus(Scheduler.NodeClosed, 'a'))
        while len(seen) < 3:
            more.clear()
            assert more.wait(5), seen
        assert [getattr(m, 'location', None) for m in seen] == ['a', 'b', None]
        assert seen[2].status == Scheduler.NodeClosed
        started = time.monotonic()
        service.notify(avail('c'))          # alone: it goes within WAIT
        while len(seen) < 4:
            more.clear()
            assert more.wait(5), seen
        assert seen[3].location == 'c' and time.monotonic() - started < Held.WAIT + 1
    finally:
        status_coro.terminate()
