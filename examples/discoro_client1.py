# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client1.py [number of jobs]
#
# The simplest use of discoro: ship a generator function to the servers,
# run it there once per set of arguments, and get the results back, in the
# order of the arguments, with one call to `run_results`.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


# 'compute' is a component of the computation: its source goes to every
# server, where each job runs it as a coroutine. A remote coroutine starts
# with only the 'asyncoro' module, so it imports what it needs itself.
def compute(i, delay, coro=None):
    import time
    # a coroutine sleeps without blocking the other coroutines of its server
    yield coro.sleep(delay)
    # asyncoro 4.5's way to give a generator's result (a 'return' works too)
    raise StopIteration((i, coro.location, time.asctime()))


def client_proc(computation, njobs, coro=None):
    # find the scheduler and wait until it runs this computation
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    # one tuple of arguments per job: the job's number and how long it takes
    # ('random' is imported in '__main__' below)
    args = [(i, random.uniform(0.5, 2)) for i in range(njobs)]
    # runs the jobs on as many servers as are available, and returns when
    # all are done; results are in the order of 'args'
    results = yield computation.run_results(compute, args)
    for result in results:
        print('    result for %d from %s: %s' % result)

    yield computation.close()


if __name__ == '__main__':
    import random, sys
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    # a private scheduler in this program; it finds discoro nodes by itself
    Scheduler()
    computation = Computation([compute])
    njobs = 10 if len(sys.argv) < 2 else int(sys.argv[1])
    # the program ends once this coroutine is done
    asyncoro.Coro(client_proc, computation, njobs)
