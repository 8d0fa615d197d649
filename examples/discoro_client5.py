# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client5.py [number of jobs]
#
# Each job runs an external program (discoro_client5_proc.py, which is sent
# to the nodes as a file component) on its server, and talks to it through
# asynchronous pipes: the client sends the job lines of input as messages,
# the job writes them to the program's standard input, reads what the
# program prints and sends each line back to the client.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


# the job, on a server
def rcoro_proc(client, program, coro=None):
    import os, subprocess, sys
    # this binds the local name 'asyncoro' to the package, which has
    # everything disasyncoro has, plus the module asyncfile
    import asyncoro.asyncfile

    if os.name == 'nt':     # pipes on Windows need asyncfile's Popen
        popen = asyncoro.asyncfile.Popen
    else:
        popen = subprocess.Popen
    # component files are in the node's directory, the parent of the
    # server's current directory
    pipe = popen([sys.executable, os.path.join('..', program)],
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    async_pipe = asyncoro.asyncfile.AsyncPipe(pipe)

    # a second coroutine in this server reads what the program prints
    def reader_proc(coro=None):
        while True:
            line = yield async_pipe.readline()
            if not line:
                break
            client.send(line)
        raise StopIteration(0)

    reader = asyncoro.Coro(reader_proc)
    # the client's lines go to the program, until None
    while True:
        data = yield coro.receive()
        if data is None:
            break
        yield async_pipe.write(data, full=True)
    async_pipe.stdin.close()
    # the reader ends at the end of the program's output
    yield reader.finish()
    async_pipe.stdout.close()
    while pipe.poll() is None:
        yield coro.sleep(0.1)
    # the exit status tells the client that all output has been sent
    client.send(pipe.returncode)
    raise StopIteration(pipe.returncode)


# on the client: prints what job i's program prints; its value is the
# program's exit status
def output_proc(i, coro=None):
    while True:
        line = yield coro.receive()
        if isinstance(line, int):
            raise StopIteration(line)
        print('      job %d output: %s' % (i, line.decode().rstrip()))


def job_proc(computation, i, coro=None):
    reader = asyncoro.Coro(output_proc, i)
    rcoro = yield computation.run(rcoro_proc, reader, program)
    if not isinstance(rcoro, asyncoro.Coro):
        print('  job %d failed: %s' % (i, rcoro))
        reader.terminate()
        raise StopIteration(-1)
    print('  job %d processed by %s' % (i, rcoro.location))
    for k in range(1, 11):
        rcoro.send(b'Line %d\n' % k)
        yield coro.sleep(random.uniform(0, 0.2))
    rcoro.send(None)
    status = yield reader.finish()
    if status == 0:
        print('  job %d done' % i)
    else:
        print('  job %d done; the program rejected %s lines' % (i, status))


def client_proc(computation, njobs, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')
    # one local coroutine per job; run() in each waits for a free server
    jobs = [asyncoro.Coro(job_proc, computation, i) for i in range(njobs)]
    for job in jobs:
        yield job.finish()
    yield computation.close()


if __name__ == '__main__':
    import os, random, sys
    # the program is given by its name relative to this directory
    os.chdir(os.path.dirname(os.path.abspath(sys.argv[0])))
    program = 'discoro_client5_proc.py'
    Scheduler()
    computation = Computation([rcoro_proc, program])
    njobs = 5 if len(sys.argv) < 2 else int(sys.argv[1])
    asyncoro.Coro(client_proc, computation, njobs)
