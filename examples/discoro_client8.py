# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client8.py [number of jobs] [seconds]
#
# Jobs that compute for long stretches without yielding. Here the
# "computation" is time.sleep, which blocks the job's whole server process,
# not just its coroutine. Still, the server keeps receiving (and queueing)
# the messages the client sends meanwhile, and keeps telling the scheduler
# that it is alive: network I/O does not depend on user coroutines getting
# the processor.
#
# Each job gets 5 numbers between 'seconds' and twice that (default 1), one
# at a time, "computes" for that long on each and sends their sum back.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


def compute_coro(coro=None):
    import time
    # the first message is the client's coroutine, to send the result to
    client = yield coro.receive()
    result = 0
    while True:
        n = yield coro.receive()
        if n is None:
            break
        time.sleep(n)       # no 'yield' for n seconds
        result += n
    client.send((coro.location, result))


def client_proc(computation, njobs, seconds, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    for i in range(njobs):
        rcoro = yield computation.run(compute_coro)
        if not isinstance(rcoro, asyncoro.Coro):
            print('  job %d failed: %s' % (i, rcoro))
            njobs = i
            break
        print('  job %d processed by %s' % (i, rcoro.location))
        # all messages go at once; the job takes them while it computes
        rcoro.send(coro)
        for _ in range(5):
            rcoro.send(random.uniform(seconds, 2 * seconds))
        rcoro.send(None)

    for _ in range(njobs):
        location, result = yield coro.receive()
        print('    %s computed result: %.3f' % (location, result))

    yield computation.close()


if __name__ == '__main__':
    import random, sys
    njobs = 4 if len(sys.argv) < 2 else int(sys.argv[1])
    seconds = 1.0 if len(sys.argv) < 3 else float(sys.argv[2])
    Scheduler()
    computation = Computation([compute_coro])
    asyncoro.Coro(client_proc, computation, njobs, seconds)
