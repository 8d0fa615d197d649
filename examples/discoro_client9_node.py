# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client9_node.py [number of jobs]
#
# In-memory processing, per node: each node gets a data file (one of this
# directory's discoro_client*.py programs; a different one per node) before
# its servers start. 'node_setup' loads the file into memory, in globals,
# and deletes it; every server of that node then has those globals, and
# the jobs compute checksums of the data held there.
#
# The servers get node_setup's globals because they are forked from the
# process that ran it; Windows has no fork, so Windows nodes are left out
# with a DiscoroNodeAllocate rule.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


# runs once per node, in the node's directory, before the servers start;
# its value must be 0 for the node to be used
def node_setup(data_file):
    global hashlib, data, file_name
    import os, hashlib
    with open(data_file, 'rb') as fd:
        data = fd.read()
    os.remove(data_file)        # the servers do not need the file itself
    file_name = data_file
    print('data_file: "%s"' % data_file)    # shows in discoronode's output
    yield 0


# a job: the checksum 'alg' of the data its node loaded
def compute(alg, n, coro=None):
    yield coro.sleep(n)
    checksum = getattr(hashlib, alg)()
    checksum.update(data)
    raise StopIteration((alg, file_name, checksum.hexdigest()))


# a node is ready to be set up: send it its data file, then let it run
# node_setup with that file's name
def node_available(avail_info, data_file):
    print('  Sending %s to %s' % (data_file, avail_info.location.addr))
    if (yield asyncoro.AsynCoro().send_file(avail_info.location, data_file,
                                            overwrite=True, timeout=5)) < 0:
        print('  Could not send %s to %s' % (data_file, avail_info.location.addr))
        raise StopIteration(-1)
    yield computation.enable_node(avail_info.location.addr, data_file)
    raise StopIteration(0)


# the computation's status coroutine (it uses the globals 'computation' and
# 'data_files' of '__main__'); it runs as long as the program does
def status_proc(coro=None):
    coro.set_daemon()
    i = 0
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status == Scheduler.NodeDiscovered:
            # msg.info is a DiscoroNodeInfo; its avail_info.location is the
            # node's own runtime, where node files go
            if i < len(data_files):
                yield node_available(msg.info.avail_info, data_files[i])
                i += 1
            else:
                print('  no data file left for node %s' % msg.info.addr)


def client_proc(computation, njobs, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')
    algorithms = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512']
    args = [(algorithms[i % len(algorithms)], random.uniform(0.1, 0.5)) for i in range(njobs)]
    results = yield computation.run_results(compute, args)
    for result in results:
        print('   %ssum for %s: %s' % result)
    yield computation.close()


if __name__ == '__main__':
    import glob, os, random, sys
    os.chdir(os.path.dirname(os.path.abspath(sys.argv[0])))
    data_files = sorted(glob.glob('discoro_client*.py'))
    Scheduler()
    # cpus=0: a node that matches this rule (any node on Windows) gets no servers
    allocate = DiscoroNodeAllocate(node='*', platform='Windows', cpus=0)
    computation = Computation([compute], node_allocations=[allocate],
                              status_coro=asyncoro.Coro(status_proc), node_setup=node_setup,
                              disable_nodes=True)
    njobs = 15 if len(sys.argv) < 2 else int(sys.argv[1])
    asyncoro.Coro(client_proc, computation, njobs)
