"""asyncoro.server: the processes a discoro node runs computations in.

What it owns: the zygote, the computation process that runs `node_setup`,
the server processes and their service (`discoro_server`, which runs jobs),
and the reports these processes send the node over a pipe.

How it works (process tree)::

    node process (runtime <name>_proc-0)
     +- zygote: forked first thing in the node program, before any hub,
        thread or socket exists; it only forks, on the node's command
         +- computation process (one per computation, its own process group):
            execs the components into one namespace, runs node_setup there
            (synchronously: no runtime may exist in it), then forks
             +- server i (runtime <name>_proc-<i>, cwd <node dir>/discoroproc-<i>)

So the globals node_setup makes are in every server, and no process ever
forks from one with a running hub. The node commands the zygote over one
pipe; the zygote and its descendants report to the node over another
(netio's pipe frames, each written whole): node_setup's result, server
PIDs, a server that could not start and why, and each server's exit, at
once. Closing a computation kills its process group.
"""

import builtins
import ctypes
import logging
import os
import select
import shutil
import signal
import sys
import traceback
import types

import gevent.event

import asyncoro
from asyncoro import core, disasyncoro, netio
from asyncoro.core import _msg_timeout, _stop_value
from asyncoro.failure import Failure, spawn
from asyncoro.programs import release_claims_in_child
from asyncoro.records import Busy, JobNotCreated
from asyncoro.service import (DRAIN, ENDS_HEARD, JOB, PEERS, SERVER_CLOSE, SERVER_IDLE,
                              SERVER_SETUP, SERVER_STARTED, SERVER_STATUS, SERVER_UP, Service,
                              answers)

__all__ = []

log = logging.getLogger(__name__)

# how long a draining server waits for the scheduler to confirm the ends of
# its jobs (a round trip; the node's drain waits for each server in turn)
_ENDS_TIMEOUT = 2

# the node's commands to the zygote
START = 'start'             # (START, spec): a computation process for spec
QUIT = 'quit'
# reports to the node: (kind, key of the computation's part on the node, ...)
COMPUTATION_PID = 'computation-pid'     # (pid)
SETUP_DONE = 'setup-done'               # (0, or why node_setup failed)
SERVER_PID = 'server-pid'               # (index, pid)
SERVER_FAILED = 'server-failed'         # (index, why it could not start)
SERVER_EXIT = 'server-exit'             # (index, pid, wait status)


def report(fd, kind, key, *fields):
    """Send one report to the node, in one whole pipe write (a long last
    field is cut, so reports from several processes never mix).

    :returns: True, or False if the node is gone (killed: nobody is left to
        tell).
    """
    msg = (kind, key) + fields
    if len(netio.dumps(msg)) > netio.PIPE_ATOMIC and fields:
        msg = msg[:-1] + (str(msg[-1])[:1000],)
    try:
        netio.write_pipe_frame(fd, msg)
    except BrokenPipeError:     # the node died: what is left of it ends quietly
        return False
    return True


# ---------------------------------------------------------------- the zygote

def start_zygote():
    """Fork the zygote.

    :returns: (pid, command fd, report fd), in the node.
    """
    cmd_r, cmd_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(cmd_w)
        os.close(report_r)
        code = 0
        try:
            _zygote_main(cmd_r, report_w)
        except Exception:      # the zygote's edge: say why, then go
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(cmd_r)
    os.close(report_w)
    return pid, cmd_w, report_r


def command(fd, *msg):
    """Send the zygote a command: (START, spec) or (QUIT,)."""
    netio.write_pipe_frame(fd, msg)


def _zygote_main(cmd_fd, report_fd):
    core._NO_RUNTIME[0] = 'discoronode zygote (it forks servers)'
    release_claims_in_child()       # the node's folder is the node's, not ours
    _adopt_orphans()
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the node decides when it ends
    # a child's end wakes the loop (SIGCHLD writes a byte to `ended`), and nothing
    # else but a command does: an idle zygote sleeps
    ended, ended_w = os.pipe()
    os.set_blocking(ended_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(ended_w)
    while True:
        _reap()
        ready = select.select([cmd_fd, ended], [], [])[0]
        if ended in ready:
            os.read(ended, 4096)
        if cmd_fd not in ready:
            continue
        msg = netio.read_pipe_frame(cmd_fd)
        if msg is None or msg[0] == QUIT:
            return
        if msg[0] == START:
            spec = msg[1]
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (cmd_fd, ended, ended_w):
                    os.close(fd)
                code = 0
                try:
                    _computation_main(spec, report_fd)
                except Exception:      # the computation process's edge
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            report(report_fd, COMPUTATION_PID, spec['key'], pid)


# prctl's option (Linux, <sys/prctl.h>): orphaned descendants come to this process
_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans():
    """Make the zygote the one that reaps its descendants' orphans (Linux).

    When the node kills a computation's process group, the servers' parent
    dies with them, and they go to PID 1: in a container started without
    --init that is the node, which never waits for them, so each computation
    would leave its servers behind as zombies. The zygote's loop reaps them
    instead. (Not inherited by the processes it forks.)"""
    if not sys.platform.startswith('linux'):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as exc:
        log.warning('the zygote cannot adopt orphans (%s): in a container, start the node '
                    'with --init, or ended servers stay as zombies', exc)
        return
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning('the zygote cannot adopt orphans (prctl: %s): in a container, start the '
                    'node with --init, or ended servers stay as zombies',
                    os.strerror(ctypes.get_errno()))


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------------- the computation process

def run_setup(gen):
    """Run a setup generator with no runtime (node_setup runs in a process
    that must stay without hub and threads): yielded values come straight
    back, yielded generators run as sub-generators.

    :returns: its value: what it returned, or the last value it yielded.
    :raises: what the generator raises.
    """
    stack, value, last, exc = [gen], None, None, None
    while stack:
        top = stack[-1]
        try:
            yielded = top.throw(exc) if exc is not None else top.send(value)
            exc = None
        except Exception as error:     # its end: a value, or an error for the caller
            stack.pop()
            stop = error if isinstance(error, StopIteration) else error.__cause__
            if isinstance(stop, StopIteration):          # `return`, or PEP 479's wrapping
                value = last = _stop_value(stop, last)
                continue
            if not stack:
                raise
            exc, value = error, None
            continue
        if isinstance(yielded, types.GeneratorType):
            stack.append(yielded)
            value = None
        else:
            value = last = yielded
    return value


def _computation_main(spec, report_fd):
    os.setpgid(0, 0)        # the node ends the computation by killing this group
    os.chdir(spec['node_dir'])
    namespace = {'__name__': '__main__', '__builtins__': builtins, 'asyncoro': disasyncoro}
    try:
        exec(compile(spec['code'], '<computation %x>' % spec['id'], 'exec'), namespace)
        result = 0
        if spec['node_setup']:
            result = run_setup(namespace[spec['node_setup']](*spec['setup_args']))
            if result != 0:
                result = 'node_setup gave %r, not 0' % (result,)
    except Exception:      # user code failed: the scheduler hears why
        result = 'node_setup failed: %s' % traceback.format_exc()[-1500:]
    report(report_fd, SETUP_DONE, spec['key'], result)
    if result != 0:
        return
    servers = {}
    for index, port in spec['servers']:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                code = _server_main(spec, index, port, namespace, report_fd)
            except Exception:      # the server's edge
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        servers[pid] = index
        report(report_fd, SERVER_PID, spec['key'], index, pid)
    while servers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = servers.pop(pid, None)
        if index is not None and not report(report_fd, SERVER_EXIT, spec['key'], index, pid,
                                            status):
            return


# ---------------------------------------------------------------- servers

def server_dir(node_dir, index):
    return os.path.join(node_dir, 'discoroproc-%d' % index)


def _server_main(spec, index, port, namespace, report_fd):
    """A server's life.

    :returns: its exit status.
    """
    core._NO_RUNTIME[0] = None
    node_dir = spec['node_dir']
    path = server_dir(node_dir, index)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.chdir(path)
    sys.path[:0] = [path, node_dir]
    os.environ['PATH'] = node_dir + os.pathsep + os.environ.get('PATH', '')
    pid_file = os.path.join(node_dir, 'discoroproc-%d.pid' % index)
    with open(pid_file, 'w') as f:
        f.write(str(os.getpid()))
    asyncoro.MsgTimeout = spec['msg_timeout']
    try:
        rt = disasyncoro.AsynCoro(node=spec['bind_addr'], tcp_port=port,
                                  udp_port=spec['udp_port'], ext_ip_addr=spec['ext_ip_addr'],
                                  name='%s_proc-%d' % (spec['name'], index),
                                  discover_peers=False, secret=spec['secret'],
                                  certfile=spec['certfile'], keyfile=spec['keyfile'],
                                  dest_path=path, max_file_size=spec['max_file_size'],
                                  max_frame_size=spec['max_frame_size'])
    except OSError as exc:      # its port is taken, say: the node tells the scheduler why
        report(report_fd, SERVER_FAILED, spec['key'], index, 'server %d: %s' % (index, exc))
        os.remove(pid_file)
        return 1
    done = core._allocate_lock()
    done.acquire()
    rt._run_here(_ServerService, spec, index, namespace, done)
    log.info('discoro server %d started at %s; computation files will be saved in "%s"',
             index, rt.location, path)
    done.acquire()
    rt.terminate()
    try:
        os.remove(pid_file)
    except OSError:      # the node may have cleaned up already
        pass
    return 0


class _ServerService(Service):
    """One server of a computation: runs its jobs in the shared namespace."""

    def __init__(self, spec, index, namespace, done):
        super().__init__('discoro_server')
        self._spec = spec
        self._namespace = namespace
        self._done = done
        self._index = index
        self._node = core._rebuild_coro(*spec['node'])
        self._scheduler = core._rebuild_coro(*spec['scheduler'])
        self.jobs = set()               # the jobs running here
        self.draining = False           # finishing the jobs it has, taking no more
        self._loaded = set()            # sources of jobs' functions run here already
        self._loading = {}              # source -> Event, while its module level runs
        self.rt.peer_status(self.coro)
        spawn(self._introduce)

    def _introduce(self):
        rt = self.rt
        scheduler = self._scheduler
        for location in (scheduler.location, self._spec['client_location'],
                         self._node.location):
            if location is not None and location != rt.location:
                rt.peer(location)
        # the node hears of this server before the scheduler may give it a
        # job: its console and its books then never miss a busy server
        known = self.call(self._node, SERVER_STARTED, self._spec['key'], self._index,
                          rt.location, self.coro, timeout=_msg_timeout())
        if isinstance(known, Failure):
            log.warning('server %s: its node did not take its start (%s)', rt.location, known)
        answer = self.call(scheduler, SERVER_UP, self._spec['id'], self._spec['part'],
                           rt.location, self._spec['addr'], self.coro)
        if isinstance(answer, Failure):
            log.info('server %s ends: the scheduler does not take it (%s)', rt.location, answer)
            self.close()

    @answers(SERVER_SETUP)
    def setup(self, args):
        setup = self._namespace.get(self._spec['server_setup_name'] or '')
        if setup is None:
            return 0
        coro = asyncoro.Coro(setup, *args)
        return coro.finish()

    # a job whose function is here already starts in the hub greenlet that read
    # its call; one whose source comes with it for the first time in a greenlet
    # of its own: that source's module level (decorators, defaults, statements:
    # user code, which may block) runs once
    @answers(JOB, push=True,
             inline=lambda self, name, source, *rest: source is None or source in self._loaded)
    def job(self, name, source, args, kwargs, monitor):
        if self.draining:       # not now: the scheduler may give it to another server
            raise Busy('job %s' % name, 'server %s takes no more jobs (its node is closing)'
                       % self.rt.location)
        rcoro = self.start_job(name, source, args, kwargs)
        rcoro.notify(monitor)
        rcoro.notify(self.coro)
        self.jobs.add(rcoro)
        return rcoro

    def start_job(self, name, source, args, kwargs):
        """The job's coroutine, started (a hollow server of the benchmarks,
        bench/hollow.py, runs nothing: its stand-in ends after a set time).

        :raises JobNotCreated: when it cannot be.
        """
        try:
            if source is not None and source not in self._loaded:
                self._load(name, source)
            func = self._namespace.get(name)
            if not callable(func):
                raise NameError('%r is not defined on this server (not in the components, '
                                'and no source sent)' % name)
            return asyncoro.Coro(func, *args, **kwargs)
        except Exception as exc:      # the client gets (type, name, traceback text)
            raise JobNotCreated('job %s' % name, '%s: %s' % (type(exc).__name__, exc),
                                self.rt.location, traceback.format_exc(), type(exc)) from None

    def _load(self, name, source):
        """Run a job function's source in the computation's namespace, once
        (not in the hub greenlet: JOB is not inline for it). A second job
        with the same source waits for the first to have run it."""
        loading = self._loading.get(source)
        if loading is not None:
            loading.wait()
            if source in self._loaded:
                return
        self._loading[source] = loading = gevent.event.Event()
        try:
            exec(compile(source, '<job %s>' % name, 'exec'), self._namespace)
            self._loaded.add(source)
        finally:
            del self._loading[source]
            loading.set()

    def on_monitor(self, msg):
        self.jobs.discard(msg.args[0])
        if self.draining and not self.jobs:
            spawn(self._idle)

    def _ends_heard(self):
        """Wait (a little) until the scheduler has handled the ends of the
        jobs that ran here: the node, told next, ends the computation, and
        its word must not reach the scheduler first."""
        self.call(self._scheduler, ENDS_HEARD, self._spec['id'], timeout=_ENDS_TIMEOUT)

    def _idle(self):
        self._ends_heard()
        self.tell(self._node, SERVER_IDLE, self._spec['key'], self._index)

    @answers(SERVER_STATUS)
    def status(self):
        return len(self.jobs)

    def on_peer(self, status):
        if status.status == disasyncoro.PeerStatus.Offline and \
                status.location == self._node.location:
            log.warning('server %d: its node is gone; quitting', self._index)
            self.close()

    @answers(DRAIN)
    def drain(self):
        self.draining = True
        self._ends_heard()      # a job may have ended just now
        return len(self.jobs)

    @answers(PEERS)
    def peers(self, locations):
        for location in locations:
            self.rt.peer(location)
        return 0

    @answers(SERVER_CLOSE)
    def close(self):
        for rcoro in list(self.jobs):
            rcoro.terminate()
        if self._done.locked():
            self._done.release()
        return 0
