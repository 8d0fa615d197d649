# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client1_greenlet.py [number of jobs]
#
# discoro_client1.py again, in greenlet style: what this package adds to
# asyncoro 4.5. A coroutine may be a plain function instead of a generator.
# Then every operation (coro.sleep, computation.schedule, run_results, ...)
# simply blocks that coroutine and returns its result; no 'yield', and
# 'return' gives the coroutine's value. Both styles mix freely: on the
# server, this 'compute' is a plain function too.

import random
import sys

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import Computation, Scheduler


def compute(i, delay, coro=None):
    import time
    coro.sleep(delay)                # blocks this coroutine only
    return i, coro.location, time.asctime()


def client(njobs, coro=None):
    computation = Computation([compute])
    if computation.schedule():
        raise Exception('Could not schedule computation')
    args = [(i, random.uniform(0.5, 2)) for i in range(njobs)]
    results = computation.run_results(compute, args)
    for result in results:
        print('    result for %d from %s: %s' % result)
    computation.close()
    return len(results)


if __name__ == '__main__':
    Scheduler()
    njobs = 10 if len(sys.argv) < 2 else int(sys.argv[1])
    # value() waits (in this main thread) for the coroutine's return value
    done = asyncoro.Coro(client, njobs).value()
    print('%d jobs done' % done)
