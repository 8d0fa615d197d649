"""asyncoro.discoronode: the node program (`discoronode.py`) and its servers.

What it owns: the node process (the `discoro_node` service: describe the
node, take one computation at a time from a scheduler, pulse that scheduler,
close the computation), the zygote, the computation process that runs
`node_setup`, and the server processes (the `discoro_server` service, which
runs jobs). `main()` is the program.

How it works (process tree):

    node process (runtime <name>_proc-0)
     `- zygote: forked first thing in main(), before any hub, thread or
        socket exists; it only forks, on the node's command
         `- computation process (one per computation, its own process group):
            execs the components into one namespace, runs node_setup
            there (synchronously: no runtime may exist in it), then forks
             `- server i (runtime <name>_proc-<i>, cwd <node dir>/discoroproc-<i>)

So the globals node_setup makes are in every server, and no process ever
forks from one with a running hub. The zygote and its descendants report to
the node over a pipe (pickled tuples, each written whole): node_setup's
result, server PIDs, and each server's exit, at once. Closing a computation
kills its process group and empties the node directory.
"""

import argparse
import builtins
import configparser
import errno
import logging
import os
import platform
import re
import select
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import traceback

import gevent
import gevent.event

import asyncoro
import asyncoro.disasyncoro as disasyncoro
from asyncoro import Location
from asyncoro.discoro import (DiscoroNodeAvailInfo, DiscoroNodeInfo, _Service,
                              _add_runtime_options, _run_sync, MinPulseInterval,
                              MaxPulseInterval, DEFAULT_NODE_PORT)

__all__ = []

log = logging.getLogger(__name__)

_HEADER = struct.Struct('>I')
_PIPE_MESSAGE_LIMIT = 3800      # reports stay below PIPE_BUF, so each write is whole


# ---------------------------------------------------------------- pipes between node and zygote

def _write_msg(fd, msg):
    data = disasyncoro.netio.dumps(msg)
    if len(data) > _PIPE_MESSAGE_LIMIT and msg[0] != 'start':
        msg = msg[:-1] + (str(msg[-1])[:1000],)
        data = disasyncoro.netio.dumps(msg)
    os.write(fd, _HEADER.pack(len(data)) + data)


def _read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b''.join(chunks)


def _read_msg(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    data = _read_exact(fd, _HEADER.unpack(header)[0])
    return None if data is None else disasyncoro.netio.loads(data)


def _start_zygote():
    """Fork the zygote; returns (pid, command fd, report fd) in the node."""
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


def _zygote_main(cmd_fd, report_fd):
    asyncoro._NO_RUNTIME[0] = 'discoronode zygote (it forks servers)'
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the node decides when it ends
    while True:
        ready = select.select([cmd_fd], [], [], 1.0)[0]
        _reap()
        if not ready:
            continue
        msg = _read_msg(cmd_fd)
        if msg is None or msg[0] == 'quit':
            return
        if msg[0] == 'start':
            pid = os.fork()
            if pid == 0:
                os.close(cmd_fd)
                code = 0
                try:
                    _computation_main(msg[1], report_fd)
                except Exception:      # the computation process's edge
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            _write_msg(report_fd, ('computation', msg[1]['id'], pid))


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _computation_main(spec, report_fd):
    os.setpgid(0, 0)        # the node ends the computation by killing this group
    os.chdir(spec['node_dir'])
    namespace = {'__name__': '__main__', '__builtins__': builtins, 'asyncoro': disasyncoro}
    try:
        exec(compile(spec['code'], '<computation %s>' % spec['id'], 'exec'), namespace)
        result = 0
        if spec['node_setup']:
            result = _run_sync(namespace[spec['node_setup']](*spec['setup_args']))
    except Exception:      # user code failed: the scheduler hears why
        result = 'node_setup failed: %s' % traceback.format_exc()[-1500:]
    _write_msg(report_fd, ('node_setup', spec['id'], result))
    if result != 0:
        return
    servers = {}
    for index, port in spec['servers']:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _server_main(spec, index, port, namespace)
            except Exception:      # the server's edge
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        servers[pid] = index
        _write_msg(report_fd, ('server_pid', spec['id'], index, pid))
    while servers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = servers.pop(pid, None)
        if index is not None:
            _write_msg(report_fd, ('server_exit', spec['id'], index, pid, status))


# ---------------------------------------------------------------- servers

def _server_dir(node_dir, index):
    return os.path.join(node_dir, 'discoroproc-%d' % index)


def _server_main(spec, index, port, namespace):
    asyncoro._NO_RUNTIME[0] = None
    node_dir = spec['node_dir']
    path = _server_dir(node_dir, index)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.chdir(path)
    sys.path[:0] = [path, node_dir]
    os.environ['PATH'] = node_dir + os.pathsep + os.environ.get('PATH', '')
    pid_file = os.path.join(node_dir, 'discoroproc-%d.pid' % index)
    with open(pid_file, 'w') as f:
        f.write(str(os.getpid()))
    asyncoro.MsgTimeout = spec['msg_timeout']
    rt = disasyncoro.AsynCoro(node=spec['bind_addr'], tcp_port=port, udp_port=spec['udp_port'],
                              ext_ip_addr=spec['ext_ip_addr'],
                              name='%s_proc-%d' % (spec['name'], index), discover_peers=False,
                              secret=spec['secret'], certfile=spec['certfile'],
                              keyfile=spec['keyfile'], dest_path=path,
                              max_file_size=spec['max_file_size'])
    done = asyncoro._allocate_lock()
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


class _ServerService(_Service):
    """One server of a computation: runs its jobs in the shared namespace."""

    def __init__(self, spec, index, namespace, done):
        super().__init__('discoro_server')
        self._spec = spec
        self._namespace = namespace
        self._done = done
        self._index = index
        self._node = asyncoro._rebuild_coro(*spec['node'])
        self.jobs = set()               # the jobs running here
        self.draining = False           # finishing the jobs it has, taking no more
        disasyncoro.AsynCoro.instance().peer_status(self.coro)
        gevent.spawn(self._introduce, index)

    def _introduce(self, index):
        rt = disasyncoro.AsynCoro.instance()
        scheduler = asyncoro._rebuild_coro(*self._spec['scheduler'])
        node = asyncoro._rebuild_coro(*self._spec['node'])
        for location in (scheduler.location, self._spec['client_location'], node.location):
            if location is not None and location != rt.location:
                rt.peer(location)
        self.tell(node, 'server_started', self._spec['id'], index, rt.location, self.coro)
        answer = self.call(scheduler, 'server_up', self._spec['id'], rt.location,
                           self._spec['addr'], self.coro)
        if answer != 0:
            log.warning('scheduler did not take server %s: %s', rt.location, answer)

    def on_setup(self, args):
        setup = self._namespace.get(self._spec['server_setup_name'] or '')
        if setup is None:
            return 0
        coro = asyncoro.Coro(setup, *args)
        return coro.finish()

    def on_job(self, name, source, args, kwargs, monitor):
        if self.draining:
            return 'server %s takes no more jobs (its node is closing)' % (
                disasyncoro.AsynCoro.instance().location,)
        try:
            if source is not None:
                exec(compile(source, '<job %s>' % name, 'exec'), self._namespace)
            func = self._namespace.get(name)
            if not callable(func):
                raise NameError('%r is not defined on this server (not in the components, '
                                'and no source sent)' % name)
            rcoro = asyncoro.Coro(func, *args, **kwargs)
        except Exception as exc:      # the client gets (type, name, traceback text)
            return (type(exc), name, traceback.format_exc())
        rcoro.notify(monitor)
        rcoro.notify(self.coro)
        self.jobs.add(rcoro)
        return rcoro

    def on_monitor(self, msg):
        self.jobs.discard(msg.args[0])
        if self.draining and not self.jobs:
            self.tell(self._node, 'server_idle', self._spec['id'], self._index)

    def on_status(self):
        return len(self.jobs)

    def on_peer(self, status):
        if status.status == disasyncoro.PeerStatus.Offline and \
                status.location == self._node.location:
            log.warning('server %d: its node is gone; quitting', self._index)
            self.on_close()

    def on_drain(self):
        self.draining = True
        return len(self.jobs)

    def on_peers(self, locations):
        rt = disasyncoro.AsynCoro.instance()
        for location in locations:
            rt.peer(location)
        return 0

    def on_close(self):
        for rcoro in list(self.jobs):
            rcoro.terminate()
        self._done.release()
        return 0


# ---------------------------------------------------------------- the node

def _avail_info(location, path):
    try:
        import psutil
    except ImportError:     # figures unknown without psutil
        return DiscoroNodeAvailInfo(location, None, None, None, None)
    return DiscoroNodeAvailInfo(location, 100.0 - psutil.cpu_percent(),
                                psutil.virtual_memory().available,
                                psutil.disk_usage(path).free,
                                100.0 - psutil.swap_memory().percent)


class _Computation:
    __slots__ = ('id', 'client_location', 'pulse_interval', 'cpus', 'scheduler', 'pid',
                 'servers', 'locations', 'closing', 'setup_result', 'last_active',
                 'server_coros', 'draining', 'busy', 'drain_reason', 'ended')

    def __init__(self, comp_id, client_location, pulse_interval, cpus):
        self.id = comp_id
        self.client_location = client_location
        self.pulse_interval = pulse_interval
        self.cpus = cpus
        self.scheduler = None
        self.pid = None                 # the computation process (its group is killed)
        self.servers = {}               # index -> pid
        self.locations = {}             # index -> Location
        self.server_coros = {}          # index -> the server's service
        self.draining = False           # its servers finish their jobs, then it ends
        self.busy = set()               # while draining: servers still running jobs
        self.drain_reason = None        # (why, rejoin) for when they are done
        self.closing = False
        self.setup_result = None
        self.last_active = time.monotonic()
        self.ended = gevent.event.Event()     # set once it has ended here


class _NodeService(_Service):

    def __init__(self, options, zygote):
        super().__init__('discoro_node')
        self.options = options
        self.zygote_pid, self.zygote_cmd, self.zygote_reports = zygote
        self.rt = disasyncoro.AsynCoro.instance()
        self.comp = None
        self.served = 0
        self.quitting = False           # the zygote is told to go; its pipe closing is no fault
        self.quit_after = False         # quit once the current computation has ended
        self.closed_ids = set()         # computations closed here, not to be taken again
        self.schedulers = set()         # told when this node takes computations again
        self.windows = options.windows
        self.accepting = self.windows.state() == 'open'
        self.rt.peer_status(self.coro)
        gevent.spawn(self._read_reports)
        if self.windows.given:
            gevent.spawn(self._keep_windows)

    # ---------------- describing the node

    def info(self):
        return DiscoroNodeInfo(self.options.name, self.rt.location.addr, self.options.cpus,
                               platform.platform().lower(),
                               _avail_info(self.rt.location, self.options.node_dir))

    def on_info(self):
        return self.info()

    # ---------------- a computation's life here

    def on_reserve(self, comp_id, client_location, pulse_interval, cpus, scheduler=None):
        if scheduler is not None:
            self.schedulers.add(scheduler)
        if not self.accepting:
            return 'not in service now%s' % self.windows.next_start()
        if self.comp is not None:
            if self.comp.id == comp_id:
                return 0
            return 'busy with computation %s' % self.comp.id
        if comp_id in self.closed_ids:
            return 'computation %s was closed on this node' % comp_id
        if not MinPulseInterval <= pulse_interval <= MaxPulseInterval:
            pulse_interval = min(max(pulse_interval, MinPulseInterval), MaxPulseInterval)
        self.comp = _Computation(comp_id, client_location, pulse_interval,
                                 min(cpus, self.options.cpus))
        log.debug('reserved for computation %s of %s', comp_id, client_location)
        return 0

    def on_setup(self, comp_id, code, node_setup, setup_args, scheduler, client, client_location,
                 server_setup):
        comp = self.comp
        if comp is None or comp.id != comp_id:
            return 'not reserved for computation %s' % comp_id
        comp.scheduler = scheduler
        opts = self.options
        comp.setup_result = gevent.event.AsyncResult()
        spec = {
            'id': comp_id, 'code': code, 'node_setup': node_setup,
            'setup_args': tuple(setup_args), 'node_dir': opts.node_dir, 'name': opts.name,
            'bind_addr': opts.ip_addr, 'addr': self.rt.location.addr,
            'ext_ip_addr': opts.ext_ip_addr, 'udp_port': opts.udp_port,
            'secret': opts.secret, 'certfile': opts.certfile, 'keyfile': opts.keyfile,
            'max_file_size': opts.max_file_size, 'msg_timeout': opts.msg_timeout,
            'servers': [(i, opts.server_ports[i - 1]) for i in range(1, comp.cpus + 1)],
            'scheduler': scheduler.__reduce__()[1], 'node': self.coro.__reduce__()[1],
            'client_location': client_location, 'server_setup_name': server_setup,
        }
        _write_msg(self.zygote_cmd, ('start', spec))
        result = comp.setup_result.get()
        if result != 0:
            self._end_computation(comp, 'node_setup failed')
            return result
        gevent.spawn(self._pulse, comp)
        return 0

    def on_server_started(self, comp_id, index, location, coro=None):
        if self.comp is not None and self.comp.id == comp_id:
            self.comp.locations[index] = location
            if coro is not None:
                self.comp.server_coros[index] = coro
        return 0

    def on_close(self, comp_id):
        comp = self.comp
        if comp is None or comp.id != comp_id:
            return 0
        self._end_computation(comp, 'closed by the scheduler', by_scheduler=True)
        return 0

    def _end_computation(self, comp, why, by_scheduler=False, rejoin=False):
        """Kill the computation's processes and clean up; tell the scheduler
        unless it asked. A computation ended here (not by its scheduler) is
        not taken again, unless `rejoin` (a service window that will open)."""
        if comp.closing:
            return
        comp.closing = True
        comp.ended.set()
        log.info('computation %x ends here: %s', comp.id, why)
        if comp.scheduler is not None and not by_scheduler and not comp.draining:
            # first, so that the scheduler places no job on a server being killed
            # (drain() told it already)
            self.call(comp.scheduler, 'node_draining', comp.id, self.rt.location.addr,
                      timeout=2)
        if comp.pid:
            try:
                os.killpg(comp.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):    # already gone
                pass
        self._clean()
        if self.comp is comp:
            self.comp = None
        if not by_scheduler and not rejoin:
            self.closed_ids.add(comp.id)
        if comp.scheduler is not None:
            if not by_scheduler:
                self.tell(comp.scheduler, 'node_closed', comp.id, self.rt.location.addr)
            self.served += 1
        if self.options.serve > 0 and self.served >= self.options.serve:
            log.info('served %d computations; quitting', self.served)
            _quit_event.set()
        elif self.quit_after:
            _quit_event.set()
        elif self.accepting:
            self._announce()

    def _announce(self):
        """Tell schedulers that this node takes computations (again)."""
        self.rt.discover_peers(port=self.options.scheduler_port)
        for scheduler in list(self.schedulers):
            self.tell(scheduler, 'node_available', self.rt.location.addr)

    def drain(self, comp, why, rejoin=False):
        """End `comp` once the jobs its servers run now are done; they take
        no more (quit, exit, a service window's stop)."""
        if comp.draining or comp.closing:
            return
        comp.draining = True
        if comp.scheduler is None:
            self._end_computation(comp, why, rejoin=rejoin)
            return
        log.info('computation %x: servers finish their jobs, then it ends here (%s)',
                 comp.id, why)
        self.tell(comp.scheduler, 'node_draining', comp.id, self.rt.location.addr)
        for index, coro in list(comp.server_coros.items()):
            running = self.call(coro, 'drain', timeout=disasyncoro._msg_timeout())
            if isinstance(running, int) and running > 0:
                comp.busy.add(index)
        if not comp.busy and self.comp is comp:
            self._end_computation(comp, why, rejoin=rejoin)
        else:
            comp.drain_reason = (why, rejoin)

    def on_server_idle(self, comp_id, index):
        comp = self.comp
        if comp is not None and comp.id == comp_id and comp.draining:
            comp.busy.discard(index)
            if not comp.busy and comp.drain_reason is not None:     # drain() has asked all
                why, rejoin = comp.drain_reason
                self._end_computation(comp, why, rejoin=rejoin)
        return 0

    # ---------------- service windows

    def _keep_windows(self):
        state = self.windows.state()
        if state != 'open':
            log.info('not in service now%s', self.windows.next_start())
        while not self.quitting:
            gevent.sleep(self.windows.until_change() + 0.01)
            now = self.windows.state()
            if now == state:
                continue
            state = now
            comp = self.comp
            if state == 'open':
                log.info('service window opens')
                self.accepting = not self.quit_after
                if self.accepting:
                    self._announce()
            elif state == 'stopping':
                log.info('service window stops: running jobs finish, no new ones')
                self.accepting = False
                if comp is not None:
                    gevent.spawn(self.drain, comp, 'service window stopped', True)
            else:
                log.info('service window ends%s', self.windows.next_start())
                self.accepting = False
                if comp is not None:
                    self._end_computation(comp, 'service window ended', rejoin=True)

    def _clean(self):
        node_dir = self.options.node_dir
        for entry in os.listdir(node_dir):
            path = os.path.join(node_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except OSError as exc:
                    log.warning('could not remove %s: %s', path, exc)

    # ---------------- reports from the zygote's processes

    def _read_reports(self):
        from asyncoro.netio import _FdWaiter, _READ
        waiter = _FdWaiter()
        fd = self.zygote_reports
        os.set_blocking(fd, True)
        while True:
            waiter.wait(fd, _READ, None, TimeoutError)
            msg = _read_msg(fd)
            if msg is None:
                if not self.quitting:
                    log.error('the zygote is gone; no more computations can start here')
                return
            self._report(msg)

    def _report(self, msg):
        """A report (kind, computation id, ...) for the current computation."""
        comp = self.comp
        handle = getattr(self, '_report_' + msg[0], None)
        if comp is None or comp.id != msg[1] or handle is None:
            return
        handle(comp, *msg[2:])

    def _report_computation(self, comp, pid):
        comp.pid = pid

    def _report_node_setup(self, comp, result):
        comp.setup_result.set(result)

    def _report_server_pid(self, comp, index, pid):
        comp.servers[index] = pid

    def _report_server_exit(self, comp, index, pid, status):
        comp.servers.pop(index, None)
        location = comp.locations.pop(index, None)
        if not comp.closing:
            log.warning('server %d (pid %d) of computation %s died (status %s)',
                        index, pid, comp.id, status)
            if location is not None and comp.scheduler is not None:
                self.tell(comp.scheduler, 'server_closed', comp.id, location)

    # ---------------- pulses and faults

    def _pulse(self, comp):
        """Pulse the scheduler every min(pulse_interval, --max_pulse_interval)
        seconds; 5 pulses in a row without an answer (within an interval each)
        end the computation, and so does zombie_period without a job."""
        interval = min(comp.pulse_interval, self.options.max_pulse_interval)
        misses = 0
        idle_since = time.monotonic()
        while self.comp is comp and not comp.closing:
            answer = self.call(comp.scheduler, 'pulse', comp.id, self.rt.location.addr,
                               _avail_info(self.rt.location, self.options.node_dir),
                               timeout=max(interval, 1))
            if isinstance(answer, int):
                misses = 0
                if answer > 0:
                    idle_since = time.monotonic()
                elif self.options.zombie_period and \
                        time.monotonic() - idle_since > self.options.zombie_period:
                    self._end_computation(comp, 'idle for %ss (zombie_period)'
                                          % self.options.zombie_period)
                    return
            else:
                misses += 1
                if misses >= 5:
                    self._end_computation(comp, 'the scheduler missed 5 pulses')
                    return
            if comp.ended.wait(interval):
                return

    def on_peer(self, status):
        comp = self.comp
        if status.status == disasyncoro.PeerStatus.Offline:
            self.schedulers = {s for s in self.schedulers if s.location != status.location}
            if comp is not None and comp.scheduler is not None and \
                    status.location == comp.scheduler.location:
                gevent.spawn(self._end_computation, comp, 'the scheduler went away',
                             by_scheduler=True)

    def finish(self):
        """quit/exit: take no more jobs; quit when the running ones are done."""
        self.accepting = False
        self.quit_after = True
        comp = self.comp
        if comp is None:
            _quit_event.set()
        else:
            gevent.spawn(self.drain, comp, 'the node quits')

    def quit(self):
        self.quitting = True
        if self.comp is not None:
            self._end_computation(self.comp, 'the node quits')
        _write_msg(self.zygote_cmd, ('quit',))

    def status_lines(self):
        comp = self.comp
        if comp is None:
            state = 'idle' if self.accepting else 'not taking computations%s' % (
                self.windows.next_start(),)
            return ['discoronode "%s" @ %s: %s' % (self.options.name, self.rt.location, state)]
        lines = []
        for index, pid in sorted(comp.servers.items()):
            coro = comp.server_coros.get(index)
            running = self.call(coro, 'status', timeout=2) if coro is not None else None
            lines.append('discoro server "%s_proc-%d" @ %s with PID %s running %s coroutines '
                         'for %s' % (self.options.name, index, comp.locations.get(index), pid,
                                     running if isinstance(running, int) else '?',
                                     comp.client_location))
        return lines or ['discoronode "%s" @ %s: starting computation %s of %s'
                         % (self.options.name, self.rt.location, comp.id, comp.client_location)]


_quit_event = threading.Event()


# ---------------------------------------------------------------- the program

def _ports(specs, count):
    """The TCP ports for the node (first) and `count` servers: ranges and
    single ports as given, continued past the highest one (0: any)."""
    ports = []
    for spec in specs or []:
        for part in str(spec).split(','):
            if '-' in part:
                low, high = (int(x) for x in part.split('-', 1))
                if low > high:
                    raise ValueError('tcp port range %s is backwards' % part)
                ports.extend(range(low, high + 1))
            elif part:
                ports.append(int(part))
    if not ports:
        return [0] * (count + 1)
    while len(ports) < count + 1:
        ports.append(max(ports) + 1)
    return ports[:count + 1]


def _cpus(value):
    total = os.cpu_count() or 1
    if value == 0:
        return total
    if value > 0:
        return value
    if total + value < 1:
        raise ValueError('-c %d leaves no server on %d CPUs' % (value, total))
    return total + value


def _size(text):
    if text is None:
        return 0
    text = str(text).strip().lower()
    factor = 1
    if text and text[-1] in 'kmgt':
        factor = 1024 ** ('kmgt'.index(text[-1]) + 1)
        text = text[:-1]
    return int(float(text) * factor)


_DAY = 24 * 3600


def _clock(option, text):
    """Seconds into the day of 'HH:MM' (or 'HH:MM:SS'), local time."""
    match = re.fullmatch(r'(\d{1,2}):(\d{2})(?::(\d{2}))?', text.strip())
    if match:
        hour, minute, second = (int(x or 0) for x in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return hour * 3600 + minute * 60 + second
    raise ValueError('%s %r is not a time of day: use HH:MM (24-hour), e.g. 17:30'
                     % (option, text))


def _now():
    now = time.time()
    local = time.localtime(now)
    return local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + now % 1


def _show_clock(seconds):
    return '%02d:%02d' % divmod(seconds // 60, 60) + (':%02d' % (seconds % 60)
                                                      if seconds % 60 else '')


class _Windows:
    """The daily service window: from start, computations are taken until
    stop (then running jobs finish, no new ones) or end (running jobs are
    killed); windows may span midnight. Without any of the three: always open."""

    def __init__(self, start=None, stop=None, end=None):
        self.given = any(x is not None for x in (start, stop, end))
        self.start, self.stop, self.end = start, stop, end
        if not self.given:
            return
        if stop is None and end is None:
            raise ValueError('--service_start needs --service_stop or --service_end')
        if start is None:
            self.start = int(_now())
        if any(x is not None and self._offset(x) == 0 for x in (stop, end)):
            raise ValueError('the service window is empty: stop and end must differ from start')
        if stop is not None and end is not None and self._offset(stop) > self._offset(end):
            raise ValueError('--service_stop must come before --service_end '
                             '(counting from --service_start)')

    def _offset(self, seconds):
        return (seconds - self.start) % _DAY

    def state(self):
        """'open', 'stopping' (running jobs finish) or 'closed' (none run)."""
        if not self.given:
            return 'open'
        now = self._offset(_now())
        stop = self._offset(self.stop) if self.stop is not None else None
        end = self._offset(self.end) if self.end is not None else None
        if now < (stop if stop is not None else end):
            return 'open'
        if end is None or now < end:
            return 'stopping'
        return 'closed'

    def until_change(self):
        """Seconds until the next start, stop or end (a minute at most, so a
        change of the clock is noticed)."""
        now = self._offset(_now())
        ahead = [(self._offset(x) - now) % _DAY for x in (self.start, self.stop, self.end)
                 if x is not None]
        return min([a for a in ahead if a > 0] + [60])

    def next_start(self):
        if not self.given or self.state() == 'open':
            return ''
        return ' (service starts at %s)' % _show_clock(self.start)


def _parser():
    parser = argparse.ArgumentParser(prog='discoronode.py',
                                     description='Run discoro servers on this node.')
    add = parser.add_argument
    add('-c', '--cpus', type=int, default=0,
        help='servers to run: 0 one per CPU, n > 0 that many, n < 0 all CPUs but n')
    add('-i', '--ip_addr', default=None, help='address to bind to (default: $ASYNCORO_NODE)')
    add('--ext_ip_addr', default=None)
    add('-u', '--udp_port', type=int,
        default=disasyncoro._env_port('ASYNCORO_DISCORONODE_PORT', DEFAULT_NODE_PORT),
        help='discovery port (default $ASYNCORO_DISCORONODE_PORT, else 51351)')
    add('--scheduler_port', type=int,
        default=disasyncoro._env_port('ASYNCORO_UDP_PORT', disasyncoro.DEFAULT_UDP_PORT),
        help="the schedulers' discovery port (default $ASYNCORO_UDP_PORT, else 51350)")
    add('--tcp_ports', action='append', default=[],
        help='n or n1-n2, repeatable: the first port is the node\'s, the rest the servers\'')
    add('-n', '--name', default=None)
    _add_runtime_options(add)
    add('--min_pulse_interval', type=float, default=MinPulseInterval)
    add('--max_pulse_interval', type=float, default=MaxPulseInterval)
    add('--zombie_period', type=float, default=10 * MaxPulseInterval,
        help='close a computation with no job for this many seconds (0: never)')
    add('--ping_interval', type=float, default=0)
    add('--msg_timeout', type=float, default=asyncoro.MsgTimeout)
    add('--serve', type=int, default=-1, help='quit after this many computations (-1: never)')
    add('--service_start', default=None, help='HH:MM: take computations from this time')
    add('--service_stop', default=None, help='HH:MM: running jobs finish, no new ones')
    add('--service_end', default=None, help='HH:MM: running jobs are killed')
    add('--clean', action='store_true',
        help='kill servers left from an earlier run (their PID files say which)')
    add('--peer', action='append', default=[], help='node:port, repeatable')
    add('--daemon', action='store_true', help='do not read commands from stdin')
    add('--save_config', default=None, metavar='FILE',
        help='save these options in FILE and exit')
    add('--config', default=None, metavar='FILE', help='options from FILE (saved with '
        '--save_config); the command line overrides them')
    add('-d', '--debug', action='store_true')
    return parser


# options that belong to one node, never saved for the others
_NODE_OWN = ('ip_addr', 'ext_ip_addr', 'name', 'save_config', 'config')
_CONFIG_MARK = 'discoronode'


def _save_config(parser, options, path):
    config = configparser.ConfigParser(interpolation=None)
    config['DEFAULT']['program'] = _CONFIG_MARK
    for action in parser._actions:
        value = getattr(options, action.dest, None)
        if action.dest in _NODE_OWN or action.dest == 'help' or value is None:
            continue
        config['DEFAULT'][action.dest] = (' '.join(value) if isinstance(value, list)
                                          else str(value))
    with open(path, 'w') as f:
        f.write('# discoronode.py options (discoronode.py --config %s)\n'
                % os.path.basename(path))
        config.write(f)


def _load_config(parser, path):
    """{dest: value} from a file _save_config wrote; ValueError says what is wrong."""
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            config.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ValueError('--config %s: not a discoronode.py config file (%s)'
                         % (path, str(exc).splitlines()[0])) from exc
    section = config['DEFAULT']
    if section.get('program') != _CONFIG_MARK or config.sections():
        raise ValueError('--config %s: not a discoronode.py config file (save one with '
                         '--save_config)' % path)
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, text in section.items():
        if key == 'program':
            continue
        action = actions.get(key)
        if action is None or key in _NODE_OWN:
            raise ValueError('--config %s: unknown option %r' % (path, key))
        try:
            if isinstance(action, argparse._StoreTrueAction):
                values[key] = section.getboolean(key)
            elif isinstance(action, argparse._AppendAction):
                values[key] = text.split()
            elif text == 'None':
                values[key] = None
            else:
                values[key] = action.type(text) if action.type else text
        except ValueError as exc:
            raise ValueError('--config %s: bad value for %s: %r' % (path, key, text)) from exc
    return values


def _options(argv):
    parser = _parser()
    options = parser.parse_args(argv)
    if options.config:
        try:
            values = _load_config(parser, options.config)
        except ValueError as exc:
            parser.error(str(exc))
        # the command line wins; a repeatable option given there replaces the file's
        for dest, value in list(values.items()):
            if isinstance(value, list) and getattr(options, dest):
                del values[dest]
        options = parser.parse_args(argv, argparse.Namespace(**values))
    if options.save_config:
        _save_config(parser, options, options.save_config)
        print('options saved in %s' % options.save_config)
        raise SystemExit(0)
    try:
        options.cpus = _cpus(options.cpus)
        options.server_ports = _ports(options.tcp_ports, options.cpus)[1:]
        options.node_port = _ports(options.tcp_ports, options.cpus)[0]
        options.max_file_size = _size(options.max_file_size)
        options.windows = _Windows(*(None if text is None else _clock('--service_' + name, text)
                                     for name, text in (('start', options.service_start),
                                                        ('stop', options.service_stop),
                                                        ('end', options.service_end))))
    except ValueError as exc:
        parser.error(str(exc))
    if options.msg_timeout < 1:
        parser.error('--msg_timeout must be at least 1')
    if options.max_pulse_interval < options.min_pulse_interval:
        parser.error('--max_pulse_interval must be >= --min_pulse_interval')
    if options.zombie_period and options.zombie_period < options.min_pulse_interval:
        parser.error('--zombie_period must be 0 or >= --min_pulse_interval')
    if options.serve == 0 or options.serve < -1:
        parser.error('--serve must be -1 (no limit) or a positive number')
    options.name = options.name or socket.gethostname()
    base = options.dest_path or os.path.join(__import__('tempfile').gettempdir(), 'asyncoro')
    options.node_dir = os.path.join(os.path.abspath(base), 'discoro')
    return options


def _is_server(pid):
    """Whether `pid` runs a discoronode server (a PID file may outlive its
    process, and the number may have gone to another program since)."""
    try:
        import psutil
        return any('discoronode' in part for part in psutil.Process(pid).cmdline())
    except ImportError:
        pass
    except Exception:      # psutil.NoSuchProcess, AccessDenied, ZombieProcess
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _stale_servers(node_dir, clean):
    """Deal with pid files of servers from an earlier run: kill them with
    --clean, otherwise refuse to start while one still runs."""
    for entry in os.listdir(node_dir):
        if not (entry.startswith('discoroproc-') and entry.endswith('.pid')):
            continue
        path = os.path.join(node_dir, entry)
        try:
            with open(path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        alive = bool(pid) and _is_server(pid)
        if alive and not clean:
            raise SystemExit('a server from an earlier run (pid %d, %s) is still running; '
                             'stop it or start with --clean' % (pid, path))
        if alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.remove(path)


def main(argv=None):
    """The discoronode.py program. Returns its exit status."""
    options = _options(argv)
    os.makedirs(options.node_dir, exist_ok=True)
    _stale_servers(options.node_dir, options.clean)
    # before any runtime, thread or socket: the zygote that forks servers
    zygote = _start_zygote()
    level = logging.DEBUG if options.debug else logging.INFO
    asyncoro.logger.setLevel(level)
    asyncoro.MsgTimeout = options.msg_timeout
    if not options.ip_addr:
        options.ip_addr = disasyncoro._default_node()
    try:
        rt = disasyncoro.AsynCoro(node=options.ip_addr, tcp_port=options.node_port,
                                  udp_port=options.udp_port, ext_ip_addr=options.ext_ip_addr,
                                  name='%s_proc-0' % options.name, discover_peers=False,
                                  secret=options.secret, certfile=options.certfile,
                                  keyfile=options.keyfile, dest_path=options.node_dir,
                                  max_file_size=options.max_file_size)
    except OSError as exc:
        os.kill(zygote[0], signal.SIGKILL)
        if exc.errno == errno.EADDRINUSE:
            print('discoronode: a port on %s is already in use (TCP %s, UDP %s): is another '
                  'discoronode running? Choose others with --tcp_ports / -u'
                  % (options.ip_addr, options.node_port or 'any', options.udp_port),
                  file=sys.stderr)
        else:
            print('discoronode: cannot start on %s: %s' % (options.ip_addr, exc),
                  file=sys.stderr)
        return 1
    node = rt._run_here(_NodeService, options, zygote)
    log.info('network server "%s_proc-0" @ %s, udp_port=%s', options.name, rt.location,
             options.udp_port)
    print('discoronode ready %s pid=%d servers=%d' % (rt.location, os.getpid(), options.cpus),
          flush=True)
    rt.discover_peers(port=options.scheduler_port)
    for peer in options.peer:
        host, _, port = peer.rpartition(':')
        rt.peer(Location(host, int(port)))
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda *_: _quit_event.set())
    if not options.daemon and _in_background():
        options.daemon = True
    if not options.daemon:
        reader = threading.Thread(target=_read_commands, args=(node, rt), daemon=True)
        reader.start()
    try:
        while not _quit_event.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    rt._run_here(node.quit)
    rt.terminate()
    return 0


def _in_background():
    """Started in the background of a terminal (`&`): stdin is not ours."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) != os.getpgrp()
    except OSError:
        return False


_COMMANDS = ('commands: status (or an empty line), close (the current computation), '
             'quit or exit (when running jobs are done), terminate (now)')


def _read_commands(node, rt):
    """The console (a thread): EOF is `quit`."""
    print(_COMMANDS, flush=True)
    while not _quit_event.is_set():
        line = sys.stdin.readline()
        command = line.strip().lower() if line else 'quit'
        if command in ('', 'status'):
            print('\n'.join(rt._run_here(node.status_lines)), flush=True)
        elif command == 'close':
            comp = node.comp
            if comp is None:
                print('no computation to close', flush=True)
            else:
                rt._run_here(node._end_computation, comp, 'closed from the console')
        elif command in ('quit', 'exit'):
            print('quitting when the running jobs are done', flush=True)
            rt._run_here(node.finish)
        elif command == 'terminate':
            _quit_event.set()
        else:
            print(_COMMANDS, flush=True)
        if not line:
            return


if __name__ == '__main__':
    # run the package's module, not this copy: messages must pickle as asyncoro.discoronode's
    from asyncoro.discoronode import main as _main
    sys.exit(_main())
