# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_monitor.py [monitor's port]
#
# The smallest program with the web monitor: it runs a few jobs while the
# monitor serves their progress, then stops it. Open the address it prints
# in a browser (the port is 8181 unless given; 0 picks a free port).

import sys

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import Computation, Scheduler
from asyncoro.httpd import HTTPServer


def compute(n, coro=None):
    # runs on a server: sleeps n seconds, then returns n * n
    yield coro.sleep(n)
    return n * n


def client(computation, coro=None):
    if (yield computation.schedule()) != 0:
        print('could not schedule the computation')
        return
    results = yield computation.run_results(compute, [2, 3, 2, 3])
    print('results:', results)
    yield computation.close()


if __name__ == '__main__':
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    Scheduler()
    computation = Computation([compute])
    # create the monitor before schedule(): it becomes the computation's
    # status_coro, and so hears of every node, server and job
    http_server = HTTPServer(computation, port=port, poll_sec=2)
    print('monitor at', http_server.url, flush=True)
    # the main program waits here until the client coroutine has ended
    asyncoro.Coro(client, computation).value()
    # called from the main program, shutdown() waits poll_sec + 0.5 seconds,
    # so that the pages fetch the last update, and then stops the monitor
    http_server.shutdown()
