# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' on one or more nodes first (see README), then:
#
#     python discoro_client4.py [number of files]
#
# Files both ways: the client sends a data file to the server running a
# job, the job processes it into a result file and sends that back, and
# the client stores it next to this program as 'result-<data file>'. The
# data files are this directory's 'discoro_client*.py' programs; each line
# of a result file is '<line number>: <length of that line>'.
#
# Also shown: a job function that is not a component ('rcoro_proc' is
# shipped with each 'run'), and the global 'asyncoro' that every job has.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


class C(object):
    def __init__(self, i, data_file, n, client):
        self.i = i
        self.data_file = data_file
        self.n = n
        self.client = client
        self.result_file = None


# the job: processes the files described by the C objects it receives,
# until it gets None
def rcoro_proc(coro=None):
    import os
    while True:
        cobj = yield coro.receive()
        if cobj is None:
            break
        if not isinstance(cobj, C):
            print('rcoro_proc at %s: unexpected message %r' % (coro.location, cobj))
            raise StopIteration(-1)
        # the data file was sent to this server, so it is in the current
        # directory (the server's own)
        if not os.path.isfile(cobj.data_file):
            raise StopIteration(-1)
        yield coro.sleep(cobj.n)     # as if it took a while
        cobj.result_file = 'result-%s' % cobj.data_file
        with open(cobj.data_file) as data, open(cobj.result_file, 'w') as result:
            for lineno, line in enumerate(data, start=1):
                result.write('%d: %d\n' % (lineno, len(line) - 1))
        # 'asyncoro' is a global of every job: the module disasyncoro
        if (yield asyncoro.AsynCoro().send_file(cobj.client.location, cobj.result_file,
                                                overwrite=True, timeout=30)) < 0:
            print('could not send %s to %s' % (cobj.result_file, cobj.client.location))
            raise StopIteration(-1)
        os.remove(cobj.result_file)
        cobj.client.send(cobj)
    # a bare StopIteration: the job's value is the last value it got (None)
    raise StopIteration


def client_proc(computation, data_files, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    njobs = 0
    for i, data_file in enumerate(data_files):
        rcoro = yield computation.run(rcoro_proc)
        if not isinstance(rcoro, asyncoro.Coro):
            print('failed to create job %d: %s' % (i, rcoro))
            continue
        # send the data file to the server where the job runs
        if (yield asyncoro.AsynCoro().send_file(rcoro.location, data_file, timeout=10)) < 0:
            print('could not send %s to %s' % (data_file, rcoro.location))
            rcoro.terminate()
            continue
        cobj = C(i, data_file, random.uniform(0.5, 1.5), coro)
        if (yield rcoro.deliver(cobj)) != 1:
            print('could not deliver job %d to %s' % (i, rcoro.location))
            rcoro.terminate()
            continue
        # this job is given just the one file
        rcoro.send(None)
        njobs += 1

    # result files arrive in this program's dest_path (which Scheduler()
    # set to .../discoro/discoroscheduler); move them here
    for _ in range(njobs):
        cobj = yield coro.receive()
        result_file = os.path.join(asyncoro.AsynCoro().dest_path, cobj.result_file)
        target = os.path.join(os.getcwd(), cobj.result_file)
        shutil.move(result_file, target)
        print('    job %d output is in %s' % (cobj.i, target))

    yield computation.close()


if __name__ == '__main__':
    import glob, os, random, shutil, sys
    # the data files and the results are in this program's directory
    os.chdir(os.path.dirname(os.path.abspath(sys.argv[0])))
    data_files = sorted(glob.glob('discoro_client*.py'))
    if len(sys.argv) > 1:
        data_files = data_files[:int(sys.argv[1])]
    Scheduler()
    # 'rcoro_proc' is not a component: its source goes with each 'run'
    computation = Computation([C])
    asyncoro.Coro(client_proc, computation, data_files)
