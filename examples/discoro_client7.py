# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client7.py [number of jobs]
#
# Another way to write discoro_client1.py: the client coroutine is the
# computation's status coroutine, so the scheduler tells it about every
# server that is ready (ServerInitialized) and every job that ends (a
# MonitorException, with the job's value). It starts a job on each server
# as soon as the server is ready, and the next one on that server as soon
# as a job there ends.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


def rcoro_proc(n, coro=None):
    yield coro.sleep(n)
    raise StopIteration(n)


# a sub-coroutine: 'yield submit(...)' runs it inside the caller's coroutine
def submit(computation, location):
    n = random.uniform(0.5, 2)
    rcoro = yield computation.run_at(location, rcoro_proc, n)
    if isinstance(rcoro, asyncoro.Coro):
        print('  rcoro_proc started at %s with %s' % (rcoro.location, n))
        raise StopIteration(1)
    print('  could not start rcoro_proc at %s: %s' % (location, rcoro))
    raise StopIteration(0)


def client_proc(computation, njobs, coro=None):
    # status messages come to this coroutine; this must be set before
    # the computation is scheduled
    computation.status_coro = coro
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    submitted, done = 0, 0
    while done < njobs:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            rcoro = msg.args[0]
            if msg.args[1][0] == StopIteration:
                print('      rcoro_proc at %s finished with %s' % (rcoro.location, msg.args[1][1]))
            else:
                print('      rcoro_proc at %s failed: %s' % (rcoro.location, msg.args[1][1]))
            done += 1
            # that server is free again
            if submitted < njobs:
                submitted += yield submit(computation, rcoro.location)
        elif isinstance(msg, DiscoroStatus):
            if msg.status == Scheduler.ServerInitialized and submitted < njobs:
                # msg.info is the server's Location
                submitted += yield submit(computation, msg.info)
        # other messages (nodes discovered, jobs created, ...) are not needed here

    yield computation.close()


if __name__ == '__main__':
    import random, sys
    Scheduler()
    computation = Computation([rcoro_proc])
    njobs = 10 if len(sys.argv) < 2 else int(sys.argv[1])
    asyncoro.Coro(client_proc, computation, njobs)
