# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Use a discoro node in the cloud (e.g. an Amazon EC2 instance) from a
# client behind a router or firewall that the node cannot connect to,
# through an ssh tunnel. This program is documentation: it needs a real
# cloud node, and is not run by the tests.
#
# 1. On the cloud instance (allow inbound TCP 51347 in its security group):
#
#        pip install asyncoro
#        discoronode.py --ext_ip_addr <public name of the instance> --tcp_ports 51347
#
#    --ext_ip_addr makes the node announce its public address (its
#    interface only has a private one); the node itself takes the first
#    port of --tcp_ports, its servers the ports after it.
#
# 2. On the client, forward port 4567 of the instance back to this machine:
#
#        ssh -i <key>.pem -R 4567:127.0.0.1:4567 <user>@<public name of the instance>
#
#    The client below listens on 127.0.0.1:4567 and announces that address;
#    the node and its servers reach it there, through the tunnel.
#
# 3. Run this program:
#
#        python discoro_ssh_ec2.py <public name of the instance> [number of jobs]
#
#    It pairs with the node directly (discovery broadcasts do not cross the
#    internet) and runs the jobs there. With problems, start the node with
#    -d and uncomment the logger line below.

import sys

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


def compute(n, coro=None):
    import time
    yield coro.sleep(n)
    raise StopIteration(time.asctime())


def client_proc(computation, node, njobs, coro=None):
    # pair with the node: its runtime is at <node>:51347
    if (yield asyncoro.AsynCoro().peer(asyncoro.Location(node, 51347))):
        raise Exception('Could not reach the node at %s:51347' % node)
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')
    args = [(random.uniform(1, 3),) for _ in range(njobs)]
    results = yield computation.run_results(compute, args)
    for result in results:
        print('result: %s' % result)
    yield computation.close()


if __name__ == '__main__':
    import random
    if len(sys.argv) < 2:
        print('usage: %s <cloud node\'s public address> [number of jobs]' % sys.argv[0])
        sys.exit(2)
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    # the runtime must be made before the scheduler (and any coroutine), so
    # that it listens on the tunnelled port; Scheduler() then uses it
    asyncoro.AsynCoro(node='127.0.0.1', tcp_port=4567)
    Scheduler()
    computation = Computation([compute])
    njobs = 10 if len(sys.argv) < 3 else int(sys.argv[2])
    asyncoro.Coro(client_proc, computation, sys.argv[1], njobs)
