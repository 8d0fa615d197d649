# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client2.py [number of jobs] [monitor's port]
#
# A variant of discoro_client1.py that starts jobs one at a time with 'run'
# and serves a web monitor of the cluster while they run: open
# http://<this host>:8181 (or the port given; 0 picks a free port, and the
# log line 'Started HTTP server at ...' shows which) in a browser.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


def compute(n, coro=None):
    # the job does nothing but sleep for 'n' seconds; its result is None
    yield coro.sleep(n)


def client_proc(computation, njobs, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    for i in range(njobs):
        # 'run' returns as soon as the job has started; it waits while all
        # servers are busy, so this loop goes at the pace of the cluster
        rcoro = yield computation.run(compute, random.uniform(1, 3))
        if isinstance(rcoro, asyncoro.Coro):
            print('  job %d processed by %s' % (i, rcoro.location))
        else:
            print('  job %d could not be created: %s' % (i, rcoro))

    # close waits for the jobs still running
    yield computation.close()


if __name__ == '__main__':
    # 'import asyncoro.discoro' binds the name 'asyncoro' to the package
    # again; that is fine: the package has every name of disasyncoro
    import random, sys, asyncoro.discoro, asyncoro.httpd
    njobs = 10 if len(sys.argv) < 2 else int(sys.argv[1])
    port = 8181 if len(sys.argv) < 3 else int(sys.argv[2])
    Scheduler()
    # with pulse_interval at its minimum the nodes report their load (shown
    # by the monitor) every 10 seconds
    computation = Computation([compute], pulse_interval=asyncoro.discoro.MinPulseInterval)
    # create the monitor before the computation is scheduled; the pages
    # refresh every poll_sec seconds
    http_server = asyncoro.httpd.HTTPServer(computation, port=port, poll_sec=2)
    # wait (in this main thread) until the client coroutine is done ...
    asyncoro.Coro(client_proc, computation, njobs).value()
    # ... and give browsers a last update before the monitor stops
    http_server.shutdown()
