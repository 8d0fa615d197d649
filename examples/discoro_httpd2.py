# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes along with this program.

# A variant of discoro_httpd1.py: this client has a status coroutine of its
# own (it prints when a remote coroutine is created and when it is done),
# and the HTTP server passes every status message from the scheduler on to
# it, so both the program and the web monitor (http://<this host>:8181, or
# the port given as the first argument) see them. Each line typed starts a
# job that runs for a while; at 'quit' (or end of input) the jobs still
# running are terminated, as closing the computation does to run_async jobs.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
import asyncoro.httpd


class C(object):
    def __init__(self, i):
        self.i = i
        self.n = None

    def __repr__(self):
        return '%d: %s' % (self.i, self.n)


def compute(obj, coro=None):
    # obj is an instance of C; this job "computes" for obj.n seconds, and its
    # end reaches status_proc (through the HTTP server) as a MonitorException
    yield coro.sleep(obj.n)
    raise StopIteration(obj.n)


def status_proc(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            rcoro = msg.args[0]
            if msg.args[1][0] == StopIteration:
                print('    rcoro %s done' % rcoro)
            else:
                print('    rcoro %s failed: %s' % (rcoro, msg.args[1][1]))
        elif isinstance(msg, DiscoroStatus):
            if msg.status == Scheduler.CoroCreated:
                print('rcoro %s started' % msg.info.coro)
        elif isinstance(msg, DiscoroNodeAvailInfo):
            pass    # a node's load, at every pulse: the monitor shows it
        else:
            print('status msg ignored: %s' % type(msg))


def client_proc(computation, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')
    i = 0
    while True:
        cmd = yield coro.receive()
        if cmd is None:
            break
        i += 1
        c = C(i)
        c.n = random.uniform(20, 50)
        rcoro = yield computation.run_async(compute, c)
        if isinstance(rcoro, asyncoro.Coro):
            print('  %s: rcoro %s created' % (i, rcoro))
        else:
            print('  %s: job could not be created: %s' % (i, rcoro))

    # without await_async, close terminates the jobs still running
    yield computation.close()


if __name__ == '__main__':
    import random, sys
    asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    # the monitor's port: the first argument, else 8181 (0 = any free port)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    Scheduler()
    computation = Computation([compute, C], status_coro=asyncoro.Coro(status_proc),
                              pulse_interval=asyncoro.discoro.MinPulseInterval)
    # the HTTP server chains status messages to the status_coro set above
    http_server = asyncoro.httpd.HTTPServer(computation, port=port)
    client = asyncoro.Coro(client_proc, computation)

    print('   Enter a line to start a job, or "quit" to end;')
    print('   monitor the cluster in a web browser at %s meanwhile.' % http_server.url)
    while True:
        try:
            cmd = input().strip()
        except EOFError:
            break
        if cmd.lower() in ('quit', 'exit'):
            break
        client.send(cmd)
    client.send(None)
    client.value()
    http_server.shutdown()
