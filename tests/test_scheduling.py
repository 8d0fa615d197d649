"""Jobs go where and when users expect: run() answers when the job starts,
whatever the job does; CPU jobs spread over every server; async jobs over
every node. Real node and client processes on 127.0.0.1 (and 127.0.0.2 for
a second node: the scheduler knows nodes by address).
"""

import json

import pytest

from test_operations import PRIVATE, finish

# each job says when it started, in its server's clock (the same machine's)
TIMED = PRIVATE + r'''
def burn(seconds, coro=None):
    import time
    began = time.time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass                            # computes: never yields
    return (began, str(coro.location))

def doze(seconds, coro=None):
    import time
    began = time.time()
    time.sleep(seconds)                 # blocks its whole server
    return (began, str(coro.location))
'''


@pytest.mark.deadline(60)
def test_a_loop_of_run_starts_cpu_jobs_on_every_server_at_once(processes, discoronode):
    node, ports = discoronode(cpus=2)
    client = processes(TIMED + r'''
def status(coro=None):
    ends = []
    while len(ends) < 2:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            ends.append(msg.args[1][1])
    (a, where_a), (b, where_b) = ends
    print('apart', abs(a - b) < 0.05, 'servers', len({where_a, where_b}), flush=True)

def main(coro=None):
    status_coro = asyncoro.Coro(status)
    computation = Computation([burn], status_coro=status_coro)
    assert (yield computation.schedule()) == 0
    while len((yield computation.servers())) < 2:       # both servers are up
        yield coro.sleep(0.1)
    for _ in range(2):
        yield computation.run(burn, 0.2)                # neither job yields
    yield status_coro.finish()
    yield computation.close()

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0, (lines, logs)
    assert lines == ['apart True servers 2'], (lines, logs)


@pytest.mark.deadline(60)
def test_run_answers_before_a_job_that_blocks_its_server_has_ended(processes, discoronode):
    node, ports = discoronode(cpus=1)
    client = processes(TIMED + r'''
def main(coro=None):
    computation = Computation([doze])
    assert (yield computation.schedule()) == 0
    yield computation.run_result(doze, 0)            # the server is up
    t0 = time.time()
    rcoro = yield computation.run(doze, 1)
    print('run answered', isinstance(rcoro, asyncoro.Coro), time.time() - t0 < 0.5, flush=True)
    yield computation.close()                        # waits for the job
    print('closed after it', time.time() - t0 >= 1, flush=True)

asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0, (lines, logs)
    assert lines == ['run answered True True', 'closed after it True'], (lines, logs)


@pytest.mark.deadline(60)
def test_async_jobs_spread_over_two_nodes(processes, discoronode):
    first, ports = discoronode(cpus=2)
    second, _ = discoronode('-i', '127.0.0.2', cpus=2, ports=ports)
    client = processes(PRIVATE + r'''
def wait(seconds, coro=None):
    yield coro.sleep(seconds)
    return str(coro.location).split(':')[0]

def status(coro=None):
    coro.set_daemon()
    nodes = set()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status == Scheduler.NodeInitialized:
            nodes.add(msg.info.addr)
            if len(nodes) == 2:
                both.set()

def main(coro=None):
    computation = Computation([wait], status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    assert (yield both.wait(30))
    servers = []
    while len(servers) < 4:                          # every server is set up
        servers = yield computation.servers()
        yield coro.sleep(0.1)
    jobs = []
    for _ in range(20):
        jobs.append((yield computation.run_async(wait, 2)))
    where = {}
    for rcoro in jobs:
        addr = str(rcoro.location).split(':')[0]
        where[addr] = where.get(addr, 0) + 1
    print(json.dumps(sorted(where.values())), flush=True)
    yield computation.close(await_async=True)

both = asyncoro.Event()
asyncoro.Coro(main)
''', json.dumps(ports), ready=False)
    code, lines, logs = finish(client, 40)
    assert code == 0, (lines, logs)
    counts = json.loads(lines[-1])
    assert len(counts) == 2 and min(counts) >= 8, counts       # 10 / 10, give or take 2
