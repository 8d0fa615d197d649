"""Hollow nodes (bench/hollow.py) against real ones: the scheduler cannot
tell them apart.

One small computation (one node with two servers, two rounds of two jobs,
then close) runs once on a real `discoronode.py` and once on a hollow node;
a private scheduler in the client program records every frame it receives
(a test-only wrapper around each entry of the one dispatch table,
asyncoro.handlers.HANDLERS), and the two records must be the same: for each
sender (the node, each server) the sequence of what it sent, named by kind
(a service call or tell by its operation, a reply by the type of its value,
a message by its type), without addresses, ids or timings.

What is left out of the comparison, and why:

- INFO_ACK: it comes on the scheduler's own connection to the peer, so its
  place among the frames of the peer's connection is a matter of timing;
- where a server's answer to the scheduler's probe (whether it is a node,
  asked as it comes online) falls: the probe and the server's own first
  call cross, so the answer is put right after the server's introduction;
- how many pulses a node sent in a row (one every pulse interval: how many
  depends on how long the run took), which count as one.

Real processes on 127.0.0.1 (nodes on 127.16.0.x), killed by PID.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import Process, free_udp_port, program_env, read_line, reap

HOLLOW = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'bench', 'hollow.py')

# the client with a private scheduler that records what it receives
RECORDING_CLIENT = r'''
import collections, json, sys, time
import asyncoro.disasyncoro as asyncoro
from asyncoro import handlers
from asyncoro.discoro import *
from asyncoro.service import CALL, TELL

received = collections.defaultdict(list)        # sender's Location -> [what it sent]

def name_of(kind, request):
    if kind == CALL:
        return 'call %s' % request[4]
    if kind == TELL:
        return 'tell %s' % request[3]
    if kind == handlers.REPLY:
        return 'reply %s' % type(request[2]).__name__
    if kind == handlers.SEND:
        msg = request[3]
        if isinstance(msg, asyncoro.MonitorException):
            return 'send MonitorException %s' % msg.args[1][0].__name__
        return 'send %s' % type(msg).__name__
    return kind

def recording(kind, handle):
    def record(rt, conn, request):
        sender = request[1] if kind == handlers.INFO else conn.info
        received[str(sender)].append(name_of(kind, request))
        return handle(rt, conn, request)
    return record

for kind, handle in list(handlers.HANDLERS.items()):
    handlers.HANDLERS[kind] = recording(kind, handle)

ports = json.loads(sys.argv[1])
Scheduler(udp_port=ports['scheduler'], discoronode_port=ports['node'])
print('ready', asyncoro.AsynCoro.instance().location, flush=True)

def job(x, coro=None):
    yield coro.sleep(0.1)
    return x * 2

def main(coro=None):
    computation = Computation([job])
    assert (yield computation.schedule()) == 0
    while len((yield computation.servers())) < 2:
        yield coro.sleep(0.05)
    for _ in range(2):          # two jobs at once: one on each server
        results = yield computation.run_results(job, [1, 2])
        assert len(results) == 2, results
    yield computation.close()
    print('received', json.dumps(dict(received)), flush=True)

asyncoro.Coro(main).value(timeout=60)
'''


def normalised(received):
    """The record as a sorted list of (role, what it sent), as the module
    docstring says."""
    found = []
    for sender, sent in received.items():
        sent = [what for what in sent if what != 'info-ack']
        if 'call scheduler.server_up' in sent:
            role = 'server'
            probe = 'reply NoneType'
            if probe in sent:
                sent.remove(probe)
                sent.insert(sent.index('info') + 1, probe)
        elif 'reply DiscoroNodeInfo' in sent:
            role = 'node'
            sent = [what for i, what in enumerate(sent)
                    if not (what == 'call scheduler.pulse' and sent[i - 1] == what)]
        else:
            role = 'other'
        found.append((role, sent))
    return sorted(found)


def record(processes, start_node):
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    client, _ = processes(RECORDING_CLIENT, json.dumps(ports))
    start_node(ports)
    while True:
        line = read_line(client, 60, 'the record')
        if line.startswith('received '):
            return normalised(json.loads(line[len('received '):]))


@pytest.fixture
def hollow(request):
    """Start bench/hollow.py with these arguments; wait for its ready line;
    kill it and its processes by PID at the end."""
    procs = []

    def start(*argv):
        proc = Process([sys.executable, HOLLOW] + [str(a) for a in argv],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=program_env())
        procs.append(proc)
        line = read_line(proc, 60, 'the hollow ready line')
        assert line.startswith('hollow ready'), line
        proc.ready_line = line
        return proc
    yield start
    reap(procs, request)


@pytest.mark.deadline(120)
def test_a_hollow_node_sends_the_scheduler_what_a_real_one_sends(processes, discoronode,
                                                                 hollow):
    real = record(processes, lambda ports: discoronode(cpus=2, ports=ports))
    made_up = record(processes, lambda ports: hollow(
        '--nodes', 1, '--servers', 2, '--job_time', 0.1, '--scheduler', '127.0.0.1',
        '-u', ports['node'], '--scheduler_port', ports['scheduler']))
    roles = sorted(role for role, _ in real)
    assert roles == ['node', 'server', 'server'], real
    assert made_up == real


def test_node_addresses_stay_in_loopback_and_skip_network_and_broadcast_ones():
    sys.path.insert(0, os.path.dirname(HOLLOW))
    try:
        import hollow as module
    finally:
        sys.path.remove(os.path.dirname(HOLLOW))
    found = module.node_addresses('127.16.0.253', 4)
    assert found == ['127.16.0.253', '127.16.0.254', '127.16.1.1', '127.16.1.2']
    with pytest.raises(ValueError, match='leave 127.0.0.0/8'):
        module.node_addresses('127.255.255.250', 10)


ECHO_CLIENT = r'''
import json, sys
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *

ports = json.loads(sys.argv[1])
Scheduler(udp_port=ports['scheduler'], discoronode_port=ports['node'])
print('ready', asyncoro.AsynCoro.instance().location, flush=True)

def job(x, coro=None):
    yield coro.sleep(0)
    return x

def main(coro=None):
    computation = Computation([job], pulse_interval=10)
    assert (yield computation.schedule()) == 0
    while len((yield computation.servers())) < 8:
        yield coro.sleep(0.05)
    print('nodes', len((yield computation.nodes())), flush=True)
    print('results', json.dumps((yield computation.run_results(job, range(40)))), flush=True)
    yield computation.close()
    print('closed', flush=True)

asyncoro.Coro(main).value(timeout=60)
'''


@pytest.mark.deadline(90)
def test_hollow_nodes_in_two_processes_serve_a_computation_and_end_on_sigterm(processes,
                                                                              hollow):
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    client, location = processes(ECHO_CLIENT, json.dumps(ports))
    nodes = hollow('--nodes', 4, '--servers', 2, '--procs', 2, '--result', 'echo',
                   '--peer', location, '-u', ports['node'], '--scheduler_port',
                   ports['scheduler'])
    assert ' pids=' in nodes.ready_line and len(nodes.ready_line.split('pids=')[1]
                                                 .split()[0].split(',')) == 2
    lines = [read_line(client, 60, 'the results') for _ in range(3)]
    assert lines[0] == 'nodes 4'
    assert json.loads(lines[1][len('results '):]) == list(range(40))
    assert lines[2] == 'closed'
    nodes.terminate()
    assert nodes.wait(30) == 0
