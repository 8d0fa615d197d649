# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client3.py [number of jobs]
#
# Messages between the client and remote coroutines can be instances of
# your own classes: the class is a component of the computation, so the
# servers know it; objects travel to the jobs as arguments and come back to
# the client as messages, as instances of the client's own class.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


class C(object):
    def __init__(self, i):
        self.i = i
        self.n = None

    def __repr__(self):
        return '%d: %s' % (self.i, self.n)


# runs on a server: replaces obj.n by its square root and sends the object
# back to 'client', a coroutine in the client program
def compute(obj, client, coro=None):
    import math
    # this is printed by the server, so it shows in discoronode's output
    print('process at %s received: %s' % (coro.location, obj.n))
    yield coro.sleep(obj.n / 10.0)
    obj.n = math.sqrt(obj.n)
    # 'deliver' returns once the message is in client's queue (1), or 0
    # after the timeout
    yield client.deliver(obj, timeout=5)


# a local coroutine that gets the results, in the order they come; its
# value is how many it got
def results_proc(njobs, coro=None):
    for k in range(njobs):
        obj = yield coro.receive()
        print('    result for job %d: %s' % (k, obj))
    return njobs


def client_proc(computation, njobs, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    results_coro = asyncoro.Coro(results_proc, njobs)
    for i in range(njobs):
        cobj = C(i)
        cobj.n = random.uniform(5, 10)
        print('  request %d: %s' % (i, cobj.n))
        rcoro = yield computation.run(compute, cobj, results_coro)
        if not isinstance(rcoro, asyncoro.Coro):
            print('failed to create job %d: %s' % (i, rcoro))
            results_coro.terminate()
            break

    # wait for all results, then close
    yield results_coro.finish()
    yield computation.close()


if __name__ == '__main__':
    import random, sys
    Scheduler()
    computation = Computation([compute, C])
    njobs = 10 if len(sys.argv) < 2 else int(sys.argv[1])
    asyncoro.Coro(client_proc, computation, njobs)
