"""The httpd.py program (`python -m asyncoro.httpd`) attached to a shared
discoro.py scheduler: it finds the scheduler, shows the computation it runs
and the ones waiting in its queue, terminates jobs, and follows the next
computation when the first one closes. All real processes on 127.0.0.1.
"""

import base64
import json
import signal

import pytest

from conftest import free_udp_port, read_line, wait_until
from test_httpd import http, page_post

prometheus_parser = pytest.importorskip(
    'prometheus_client.parser', reason='prometheus_client (the test extra) parses /metrics')
text_string_to_metric_families = prometheus_parser.text_string_to_metric_families


REMOTE_CLIENT = r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
asyncoro.AsynCoro(udp_port=int(sys.argv[1]))

def compute(n, coro=None):
    yield coro.sleep(n)
    return n

def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            print('ended', msg.args[0], msg.args[1][0].__name__, flush=True)

def main(coro=None):
    computation = Computation([compute], status_coro=asyncoro.Coro(status))
    print('scheduling', flush=True)
    assert (yield computation.schedule()) == 0
    print('scheduled', computation._id, flush=True)
    for n in json.loads(sys.argv[2]):
        print('job', (yield computation.run_async(compute, n)), flush=True)
    print('started', flush=True)
    yield coro.receive()
    yield computation.close()

client = asyncoro.Coro(main)
sys.stdin.readline()
client.send('quit')
client.value()
'''


def until(proc, prefix, timeout=30):
    """The rest of the first line of proc's that starts with `prefix`."""
    while True:
        line = read_line(proc, timeout, 'a line starting %r' % prefix)
        if line.startswith(prefix):
            return line[len(prefix):].strip()


@pytest.mark.deadline(90)
def test_httpd_program_follows_a_shared_scheduler_and_its_queue(processes, services,
                                                               discoronode):
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    scheduler = services('discoro', ['-u', ports['scheduler'], '--discoronode_port',
                                     ports['node']], 'discoro scheduler ready')
    where = scheduler.ready_line.split()[3]
    discoronode(ports=ports)
    # one monitor finds the scheduler by discovery, the other is told where it is
    monitor = services('httpd', ['-u', ports['scheduler'], '-p', 0, '--poll_sec', 1,
                                 '--host', '127.0.0.1'], 'httpd ready', console=True)
    base = monitor.ready_line.split()[2].rstrip('/')
    told = services('httpd', ['-u', free_udp_port(), '-p', 0, '--scheduler', where,
                              '--host', '127.0.0.1', '--password', 'pw'], 'httpd ready')
    told_base = told.ready_line.split()[2].rstrip('/')
    login = {'Authorization': 'Basic ' + base64.b64encode(b'me:pw').decode()}
    assert http(told_base + '/api/cluster')[0] == 401

    def cluster(url=base):
        return json.loads(http(url + '/api/cluster', headers=login if url == told_base
                               else None)[2])
    for url in (base, told_base):
        wait_until(lambda url=url: cluster(url)['scheduler'] == where, 20,
                   'the monitor at %s finding the scheduler' % url)
        assert cluster(url)['mode'] == 'scheduler' and cluster(url)['computation'] is None

    first = processes(REMOTE_CLIENT, ports['scheduler'], json.dumps([0.1, 60, 60]), ready=False)
    first_id = until(first, 'scheduled')
    jobs = [until(first, 'job') for _ in range(3)]
    until(first, 'ended ' + jobs[0])
    second = processes(REMOTE_CLIENT, ports['scheduler'], json.dumps([60]), ready=False)
    until(second, 'scheduling')

    def state():
        summary = cluster()
        return (summary['computation'] and summary['computation']['id'],
                summary['coros_submitted'], summary['coros_done'], summary['coros_running'],
                summary['servers'], len(summary['queue']))
    wait_until(lambda: state() == (first_id, 3, 1, 2, 2, 1), 20,
               'the monitor showing the first computation, its jobs and one waiting')
    told_state = cluster(told_base)
    # /metrics of the program: what runs, and the computation waiting in the queue
    families = {family.name: family for family in text_string_to_metric_families(
        http(base + '/metrics')[2])}
    assert [s.value for s in families['asyncoro_computations_queued'].samples] == [1]
    assert [(s.labels, s.value) for s in families['asyncoro_jobs_running'].samples] == [
        ({'node': '127.0.0.1'}, 2)]
    assert http(told_base + '/metrics')[0] == 401
    assert http(told_base + '/metrics', headers=login)[0] == 200
    assert (told_state['computation']['id'], told_state['coros_running']) == (first_id, 2)
    code, _, text = page_post(base, '/api/terminate', {'coro': [jobs[1]]})
    assert json.loads(text)['terminated'] == [jobs[1]]
    assert until(first, 'ended ' + jobs[1]) == 'StopIteration'
    wait_until(lambda: state()[2:4] == (2, 1), 10, 'the monitor seeing the terminated job end')

    # the first computation closes; the second starts and the monitor follows it
    first.stdin.write(b'quit\n')
    first.stdin.flush()
    second_id = until(second, 'scheduled')
    second_job = until(second, 'job')
    wait_until(lambda: state() == (second_id, 1, 0, 1, 2, 0), 20,
               'the monitor showing the second computation')
    assert second_job in [c['coro'] for c in json.loads(
        http(base + '/api/server/' + second_job.split('@')[1])[2])['coros']]
    assert first.wait(30) == 0
    told.send_signal(signal.SIGTERM)
    assert told.wait(30) == 0
    monitor.stdin.write(b'quit\n')
    monitor.stdin.flush()
    assert monitor.wait(30) == 0
    with pytest.raises(OSError):
        http(base + '/api/cluster')
    assert 'Traceback' not in monitor.stderr.read().decode()
