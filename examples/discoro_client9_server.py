# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client9_server.py [number of jobs]
#
# In-memory processing, per server: like discoro_client9_node.py, but each
# server (not each node) gets a data file of its own, one of this
# directory's discoro_client*.py programs, and 'server_setup' loads it into
# that server's memory before the server takes jobs. Jobs then compute
# checksums of whatever their server holds.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


# runs on each server before it takes jobs, in the server's directory,
# where the client sent the file; its value must be 0
def setup_server(data_file, coro=None):
    global hashlib, data, file_name
    import os, hashlib
    with open(data_file, 'rb') as fd:
        data = fd.read()
    os.remove(data_file)
    file_name = data_file
    yield coro.sleep(0.1)      # as if loading took a while
    # on Python 3 a generator may also 'return' its value
    return 0


def compute(alg, n, coro=None):
    print('%s processing %s' % (coro.location, file_name))     # on the server's output
    yield coro.sleep(n)
    checksum = getattr(hashlib, alg)()
    checksum.update(data)
    return alg, file_name, checksum.hexdigest()


# the status coroutine: a server has started (and waits to be enabled)
def status_proc(coro=None):
    coro.set_daemon()
    i = 0
    while True:
        msg = yield coro.receive()
        if not isinstance(msg, DiscoroStatus) or msg.status != Scheduler.ServerDiscovered:
            continue
        location = msg.info            # the server's Location
        if i >= len(data_files):
            print('  no data file left for server %s' % location)
            continue
        data_file = data_files[i]
        i += 1
        print('  Sending %s to %s' % (data_file, location))
        if (yield asyncoro.AsynCoro().send_file(location, data_file, timeout=5,
                                                overwrite=True)) < 0:
            print('  Could not send %s to %s' % (data_file, location))
            continue
        # runs setup_server(data_file) on that server
        computation.enable_server(location, data_file)


def client_proc(computation, njobs, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')
    algorithms = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512']
    args = [(algorithms[i % len(algorithms)], random.uniform(0.1, 0.5)) for i in range(njobs)]
    results = yield computation.run_results(compute, args)
    for result in results:
        print('    %ssum for %s: %s' % result)
    yield computation.close()


if __name__ == '__main__':
    import glob, os, random, sys
    asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    os.chdir(os.path.dirname(os.path.abspath(sys.argv[0])))
    data_files = sorted(glob.glob('discoro_client*.py'))
    Scheduler()
    computation = Computation([compute], status_coro=asyncoro.Coro(status_proc),
                              disable_servers=True, server_setup=setup_server)
    njobs = 15 if len(sys.argv) < 2 else int(sys.argv[1])
    asyncoro.Coro(client_proc, computation, njobs)
