# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes along with this program.

# This client sends jobs to discoro servers as you type, and serves a web
# monitor of the cluster (nodes, servers, the jobs running on each) at
# http://<this host>:8181 (or the port given as the first argument). Each
# number typed starts a job on some server that sleeps that many seconds;
# 'quit' (or end of input) closes the computation once the jobs running are
# done, and then stops the web server.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
import asyncoro.httpd


# objects of this class are sent to remote coroutines, and back again
class C(object):
    def __init__(self, i):
        self.i = i
        self.n = None

    def __repr__(self):
        return '%d: %s' % (self.i, self.n)


# 'compute' runs on servers: it has the argument it was given (an instance
# of C) and the client's coroutine to send its result to
def compute(obj, client, coro=None):
    # obj.n is how many seconds to "compute" for
    yield coro.sleep(obj.n)
    obj.n = '%s s at %s' % (obj.n, coro.location)
    client.send(obj)


def client_proc(computation, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    # results come back to this coroutine as messages
    def results_proc(coro=None):
        while True:
            result = yield coro.receive()
            if result is None:
                break
            print('    result of job %s' % result)

    results_coro = asyncoro.Coro(results_proc)
    i = 0
    while True:
        cmd = yield coro.receive()
        if cmd is None:
            break
        try:
            n = float(cmd)
        except ValueError:
            print('  "%s" is not a number' % cmd)
            continue
        i += 1
        c = C(i)
        c.n = n
        rcoro = yield computation.run_async(compute, c, results_coro)
        if isinstance(rcoro, asyncoro.Coro):
            print('  job %d started at %s' % (i, rcoro.location))
        else:
            print('  job %d could not be started: %s' % (i, rcoro))

    # wait for the jobs still running, then let the servers go
    yield computation.close(await_async=True)
    results_coro.send(None)


if __name__ == '__main__':
    import sys
    # the monitor's port: the first argument, else 8181 (0 = any free port)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    Scheduler()
    computation = Computation([compute, C], pulse_interval=asyncoro.discoro.MinPulseInterval)
    # the HTTP server must be created before the computation is scheduled
    http_server = asyncoro.httpd.HTTPServer(computation, port=port)
    client = asyncoro.Coro(client_proc, computation)

    print('   Enter a number of seconds for a job to run, or "quit" to end;')
    print('   monitor the cluster in a web browser at %s meanwhile.' % http_server.url)
    while True:
        try:
            cmd = input().strip()
        except EOFError:
            break
        if cmd.lower() in ('quit', 'exit'):
            break
        if cmd:
            client.send(cmd)
    client.send(None)
    client.value()
    http_server.shutdown()
