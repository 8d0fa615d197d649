"""asyncoro.node: a discoro node, the service `discoro_node`.

What it owns: the node's side of a computation (reserve, set up, pulse,
drain, end), its daily service window, and what it tells schedulers. The
processes it runs computations in are asyncoro.server's; the program that
starts it is asyncoro.discoronode.

How it works: a scheduler reserves the node for a computation, sends it the
component files and asks it to set up: the node has its zygote start a
computation process (node_setup, then the server processes) and waits for
node_setup's result. From then on it pulses the scheduler every pulse
interval (the computation's, kept within this node's --min_pulse_interval
and --max_pulse_interval). The computation ends here when the scheduler
closes it, when the scheduler is silent for 5 pulse intervals or goes
away, when it is idle for zombie_period, when its servers could not start
or all died, or from the node's console or service window; the node then
kills the computation's processes, empties its folder, tells the scheduler
(why, when it could not serve it) and is available again. A node that ended
a computation because it could not serve it is not given it again.
"""

import logging
import os
import platform
import re
import shutil
import signal
import threading
import time

import gevent
import gevent.event

from asyncoro.core import _msg_timeout
from asyncoro.disasyncoro import Location, PeerStatus
from asyncoro.failure import Failure, NoAnswer, in_thread, spawn
from asyncoro.records import Busy, DiscoroNodeAvailInfo, DiscoroNodeInfo, SMALLEST_PULSE_INTERVAL
from asyncoro.server import (COMPUTATION_PID, QUIT, SERVER_EXIT, SERVER_FAILED, SERVER_PID,
                             SETUP_DONE, START, command)
from asyncoro.service import (DRAIN, NODE_AVAILABLE, NODE_CLOSE, NODE_CLOSED, NODE_DRAINING,
                              NODE_INFO, NODE_SETUP, PULSE, RESERVE, SERVER_CLOSED,
                              SERVER_IDLE, SERVER_NOT_STARTED, SERVER_STARTED, SERVER_STATUS,
                              Service, answers)
from asyncoro import netio

__all__ = []

log = logging.getLogger(__name__)


def avail_info(location, path):
    """What this node has free now, as DiscoroNodeAvailInfo, with the CPU %
    and resident memory of each of its server processes (`processes`).

    It reads /proc (psutil): call it in the thread pool (`in_thread`), not
    in the hub; calls from two threads take turns."""
    try:
        import psutil
    except ImportError:     # figures unknown without psutil
        return DiscoroNodeAvailInfo(location, None, None, None, None)
    with _MEASURING:
        return DiscoroNodeAvailInfo(location, 100.0 - psutil.cpu_percent(),
                                    psutil.virtual_memory().available,
                                    psutil.disk_usage(path).free,
                                    100.0 - psutil.swap_memory().percent,
                                    _server_processes(psutil, location))


# pid -> (psutil.Process, port) of a server process: kept from one report to
# the next, because cpu_percent() measures since the previous call on the same
# object, and because finding a process's port reads the whole TCP table
_MEASURED = {}
_MEASURING = threading.Lock()       # (avail_info runs in the thread pool)


def _server_processes(psutil, location):
    """[{'location', 'pid', 'cpu', 'rss'}] of this node's server processes.

    The servers are descendants of this process (node -> zygote ->
    computation -> servers) and each listens on its own TCP port: a
    descendant's listening socket of lowest descriptor (its runtime opened
    it first) names the server's Location. The zygote and the computation
    process listen on nothing and are not counted."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return None
    found = []
    for child in children:
        try:
            known = _MEASURED.get(child.pid)
            first = known is None or known[0].create_time() != child.create_time()
            if first:
                port = _listening_port(psutil, child)
                if port is None:
                    continue
                known = _MEASURED[child.pid] = (child, port)
            measured, port = known
            cpu = measured.cpu_percent(None)    # since the last report (0.0 the first time)
            if first:           # the first time: on average since it started
                times = measured.cpu_times()
                age = time.time() - measured.create_time()
                cpu = 100.0 * (times.user + times.system) / age if age > 0 else None
            found.append({'location': type(location)(location.addr, port), 'pid': child.pid,
                          'cpu': cpu, 'rss': measured.memory_info().rss})
        except psutil.Error:    # it ended (or hides) between the listing and the reading
            continue
    alive = {entry['pid'] for entry in found}
    for pid in [pid for pid in _MEASURED if pid not in alive]:
        del _MEASURED[pid]
    return found


def _listening_port(psutil, process):
    """The port of `process`'s listening TCP socket of lowest descriptor, or None."""
    listing = getattr(process, 'net_connections', None) or process.connections  # psutil < 6
    listening = [conn for conn in listing(kind='tcp')
                 if conn.status == psutil.CONN_LISTEN and conn.laddr]
    if not listening:
        return None
    return min(listening, key=lambda conn: conn.fd if conn.fd >= 0 else 1 << 30).laddr[1]


class _Computation:
    __slots__ = ('id', 'client_location', 'pulse_interval', 'cpus', 'scheduler', 'pid',
                 'servers', 'locations', 'closing', 'setup_result', 'server_coros', 'draining',
                 'busy', 'drain_reason', 'ended', 'failed', 'started', 'key', 'known',
                 'answered')

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
        self.failed = {}                # index -> why that server could not start
        self.started = 0                # servers that have started so far
        self.draining = False           # its servers finish their jobs, then it ends
        self.busy = set()               # while draining: servers still running jobs
        self.drain_reason = None        # (why, rejoin) for when they are done
        self.closing = False
        self.setup_result = None
        self.ended = gevent.event.Event()     # set once it has ended here
        self.key = None                 # (id, part): what its processes report under
        self.known = gevent.event.Event()     # set once each server started or failed
        self.answered = False           # the scheduler has its setup's answer


class NodeService(Service):
    """The node: `NodeService(options, zygote)` in the runtime's hub thread.
    `quit` (a threading.Event) is set when the program should end."""

    def __init__(self, options, zygote):
        super().__init__('discoro_node')
        self.options = options
        self.zygote_pid, self.zygote_cmd, self.zygote_reports = zygote
        self.quit = threading.Event()
        self.comp = None
        self.served = 0
        self.quitting = False           # the zygote is told to go; its pipe closing is no fault
        self.quit_after = False         # quit once the current computation has ended
        self.closed_ids = set()         # computations this node could not serve
        self.schedulers = set()         # told when this node takes computations again
        self.windows = options.windows
        self.accepting = self.windows.state() == 'open'
        self.rt.peer_status(self.coro)
        spawn(self._read_reports)
        if self.windows.given:
            spawn(self._keep_windows)
        if options.ping_interval:
            spawn(self._ping_schedulers, options.ping_interval)

    # ---------------- describing the node

    def info(self):
        """The node's DiscoroNodeInfo (its figures read in the thread pool:
        the calling greenlet waits)."""
        return DiscoroNodeInfo(self.options.name, self.rt.location.addr, self.options.cpus,
                               platform.platform().lower(), self.availability())

    # What a hollow node of the benchmarks (bench/hollow.py: no processes of its
    # own, figures made up) does otherwise: availability, start_processes,
    # kill_processes.

    def availability(self):
        """What this node has free now, a DiscoroNodeAvailInfo (read in the
        thread pool: the calling greenlet waits)."""
        return in_thread(avail_info, self.rt.location, self.options.node_dir)

    @answers(NODE_INFO)
    def describe(self):
        return self.info()

    # ---------------- a computation's life here

    @answers(RESERVE)
    def reserve(self, comp_id, client_location, pulse_interval, cpus, scheduler=None):
        """Reserve this node for the computation; the pulse interval it
        keeps (the one asked, within this node's bounds)."""
        if scheduler is not None:
            self.schedulers.add(scheduler)
        what = 'reserve node %s' % self.rt.location.addr
        if self.quit_after:
            raise Failure(what, 'it quits')
        if not self.accepting:      # its service window will open: not now, but later
            raise Busy(what, 'it is not in service now%s' % self.windows.next_start())
        if self.comp is not None and self.comp.closing:
            # its end waits for the folder's cleaning: the node says when it is free
            raise Busy(what, 'it is ending computation %x' % self.comp.id)
        if self.comp is not None and self.comp.id == comp_id and \
                self.comp.setup_result is not None:
            # the scheduler sets it up again (it had dropped this node, which
            # is back): what still runs here of it ends first
            self._end_computation(self.comp, 'the scheduler sets it up again', by_scheduler=True)
        if self.comp is not None:
            if self.comp.id == comp_id:
                return self.comp.pulse_interval
            raise Busy(what, 'it is busy with computation %x' % self.comp.id)
        if comp_id in self.closed_ids:
            raise Failure(what, 'computation %x could not be served here before' % comp_id)
        opts = self.options
        kept = min(max(pulse_interval, opts.min_pulse_interval), opts.max_pulse_interval)
        kept = max(kept, SMALLEST_PULSE_INTERVAL)
        if kept != pulse_interval:
            log.info('computation %x asks for pulses every %ss; this node keeps %ss (its '
                     '--min_pulse_interval %s, --max_pulse_interval %s)', comp_id,
                     pulse_interval, kept, opts.min_pulse_interval, opts.max_pulse_interval)
        self.comp = _Computation(comp_id, client_location, kept, min(cpus, opts.cpus))
        log.debug('reserved for computation %x of %s', comp_id, client_location)
        return kept

    @answers(NODE_SETUP)
    def setup(self, comp_id, code, node_setup, setup_args, scheduler, client, client_location,
              server_setup, part):
        comp = self.comp
        what = 'set up computation %x' % comp_id
        if comp is None or comp.id != comp_id or comp.setup_result is not None:
            raise Failure(what, 'node %s is not reserved for it' % self.rt.location.addr)
        comp.scheduler = scheduler
        comp.key = (comp_id, part)
        opts = self.options
        comp.setup_result = gevent.event.AsyncResult()
        spec = {
            'id': comp_id, 'code': code, 'node_setup': node_setup,
            'setup_args': tuple(setup_args), 'node_dir': opts.node_dir, 'name': opts.name,
            'bind_addr': opts.ip_addr, 'addr': self.rt.location.addr,
            'ext_ip_addr': opts.ext_ip_addr, 'udp_port': opts.udp_port,
            'secret': opts.secret, 'certfile': opts.certfile, 'keyfile': opts.keyfile,
            'max_file_size': opts.max_file_size, 'max_frame_size': opts.max_frame_size,
            'msg_timeout': opts.msg_timeout,
            'servers': [(i, opts.server_ports[i - 1]) for i in range(1, comp.cpus + 1)],
            'scheduler': scheduler.__reduce__()[1], 'node': self.coro.__reduce__()[1],
            'client_location': client_location, 'server_setup_name': server_setup,
            'part': part, 'key': comp.key,
        }
        self.start_processes(comp, spec)
        result = comp.setup_result.get()
        if result != 0:
            self._end_computation(comp, result, by_scheduler=True, refused=True)
            raise Failure(what, result, self.rt.location.addr)
        # answered once each server has started or could not (said before this
        # answer, on the same connection): no job runs before the scheduler knows
        if not comp.known.wait(_msg_timeout()):
            log.info('computation %x: %d of %d servers have started or failed after %ss; '
                     'the scheduler is told the node is set up', comp.id,
                     comp.started + len(comp.failed), comp.cpus, _msg_timeout())
        if len(comp.failed) >= comp.cpus:
            why = 'its servers could not start: %s' % '; '.join(
                comp.failed[i] for i in sorted(comp.failed))
            self._end_computation(comp, why, by_scheduler=True, refused=True)
            raise Failure(what, why, self.rt.location.addr)
        for index in sorted(comp.failed):      # the others run it
            self._tell_not_started(comp, index)
        comp.answered = True
        spawn(self._pulse, comp)
        return 0

    def start_processes(self, comp, spec):
        """Have the zygote start the computation process of `spec` (it runs
        node_setup, then forks the servers): its reports say how each fared."""
        command(self.zygote_cmd, START, spec)

    def kill_processes(self, comp):
        """Kill the computation's processes (its process group) now."""
        if comp.pid:
            try:
                os.killpg(comp.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):    # already gone
                pass

    def _tell_not_started(self, comp, index):
        location = Location(self.rt.location.addr, self.options.server_ports[index - 1])
        self.tell(comp.scheduler, SERVER_NOT_STARTED, comp.id, comp.key[1],
                  self.rt.location.addr, index, location, comp.failed[index])

    @staticmethod
    def _count(comp):
        """A server started or could not: are they all known now?"""
        if comp.started + len(comp.failed) >= comp.cpus:
            comp.known.set()

    @answers(SERVER_STARTED, inline=True)
    def server_started(self, key, index, location, coro=None):
        comp = self.comp
        if comp is not None and comp.key == key:
            comp.locations[index] = location
            comp.started += 1
            if coro is not None:
                comp.server_coros[index] = coro
            self._count(comp)
        return 0

    @answers(NODE_CLOSE)
    def close(self, comp_id):
        comp = self.comp
        if comp is None or comp.id != comp_id:
            return 0
        self._end_computation(comp, 'closed by the scheduler', by_scheduler=True)
        return 0

    def end_computation(self, comp, why):
        """End computation `comp` here now (its jobs are killed), telling its
        scheduler `why` (the node's console: close). Blocks the greenlet."""
        self._end_computation(comp, why)

    def _end_computation(self, comp, why, by_scheduler=False, rejoin=False, refused=False):
        """Kill the computation's processes and clean up; tell the scheduler
        unless it asked (with `refused`: why this node could not serve it).
        A computation ended here (not by its scheduler) is not taken again,
        unless `rejoin` (a service window that will open)."""
        if comp.closing:
            return
        comp.closing = True
        comp.ended.set()
        if refused:
            log.warning('computation %x cannot run here: %s', comp.id, why)
        else:
            log.info('computation %x ends here: %s', comp.id, why)
        if comp.scheduler is not None and not by_scheduler and not comp.draining:
            # first, so that the scheduler places no job on a server being killed
            # (drain() told it already)
            self.call(comp.scheduler, NODE_DRAINING, comp.id, self.rt.location.addr,
                      timeout=2)
        self.kill_processes(comp)
        self._clean()
        if self.comp is comp:
            self.comp = None
        if refused or (not by_scheduler and not rejoin):
            self.closed_ids.add(comp.id)
        if comp.scheduler is not None:
            if not by_scheduler:
                self.tell(comp.scheduler, NODE_CLOSED, comp.id, self.rt.location.addr, why,
                          not rejoin, refused)
            self.served += 1
        if self.options.serve > 0 and self.served >= self.options.serve:
            log.info('served %d computations; quitting', self.served)
            self.quit.set()
        elif self.quit_after:
            self.quit.set()
        elif self.accepting:
            self._announce()

    def _announce(self):
        """Tell schedulers that this node takes computations (again)."""
        self.rt.discover_peers(port=self.options.scheduler_port)
        for scheduler in list(self.schedulers):
            self.tell(scheduler, NODE_AVAILABLE, self.rt.location.addr, self.coro)

    def _ping_schedulers(self, interval):
        """--ping_interval: while it has no computation and takes one, the
        node says so again every `interval` seconds (a scheduler started
        after it, or one that missed its first word, finds it then)."""
        while not self.quitting:
            gevent.sleep(interval)
            if self.comp is None and self.accepting:
                self._announce()

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
        self.tell(comp.scheduler, NODE_DRAINING, comp.id, self.rt.location.addr)
        for index, coro in list(comp.server_coros.items()):
            running = self.call(coro, DRAIN, timeout=_msg_timeout())
            if isinstance(running, int) and running > 0:
                comp.busy.add(index)
        if not comp.busy and self.comp is comp:
            self._end_computation(comp, why, rejoin=rejoin)
        else:
            comp.drain_reason = (why, rejoin)

    @answers(SERVER_IDLE)
    def server_idle(self, key, index):
        comp = self.comp
        if comp is not None and comp.key == key and comp.draining:
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
                    spawn(self.drain, comp, 'service window stopped', True)
            else:
                log.info('service window ends%s', self.windows.next_start())
                self.accepting = False
                if comp is not None:
                    self._end_computation(comp, 'service window ended', rejoin=True)

    def _clean(self):
        """Empty the node's folder (in the thread pool: the calling greenlet
        waits)."""
        for path, exc in in_thread(_empty_folder, self.options.node_dir):
            log.warning('could not remove %s: %s', path, exc)

    # ---------------- reports from the zygote's processes

    def _read_reports(self):
        waiter = netio.FdWaiter()
        fd = self.zygote_reports
        os.set_blocking(fd, True)
        while True:
            waiter.wait(fd, netio.READ, None, TimeoutError)
            msg = netio.read_pipe_frame(fd)
            if msg is None:
                if not self.quitting:
                    log.error('the zygote is gone; no more computations can start here')
                return
            comp = self.comp
            handle = self._REPORTS.get(msg[0])
            if comp is not None and comp.key == msg[1] and handle is not None:
                handle(self, comp, *msg[2:])

    def _report_computation(self, comp, pid):
        comp.pid = pid

    def _report_setup(self, comp, result):
        comp.setup_result.set(result)

    def _report_server_pid(self, comp, index, pid):
        comp.servers[index] = pid

    def _report_server_failed(self, comp, index, why):
        comp.failed[index] = why
        log.warning('server %d of computation %x could not start: %s', index, comp.id, why)
        if comp.answered:       # else setup() tells, once it knows whether any started
            self._tell_not_started(comp, index)
        self._count(comp)

    def _report_server_exit(self, comp, index, pid, status):
        comp.servers.pop(index, None)
        location = comp.locations.pop(index, None)
        if comp.closing:
            return
        if location is None and index not in comp.failed:
            # it died before it introduced itself: it could not start
            self._report_server_failed(comp, index, 'server %d exited as it started (status '
                                       '%s)' % (index, status))
        if index not in comp.failed:
            log.warning('server %d (pid %d) of computation %x died (status %s)',
                        index, pid, comp.id, status)
        if location is not None and comp.scheduler is not None:
            self.tell(comp.scheduler, SERVER_CLOSED, comp.id, location,
                      'its process died (status %s)' % status)
        if not comp.servers and comp.setup_result is not None and comp.setup_result.ready():
            if comp.failed and len(comp.failed) == comp.cpus:
                why = 'its servers could not start: %s' % '; '.join(
                    comp.failed[i] for i in sorted(comp.failed))
            else:
                why = 'all its servers died'
            self._end_computation(comp, why, refused=True)

    _REPORTS = {COMPUTATION_PID: _report_computation, SETUP_DONE: _report_setup,
                SERVER_PID: _report_server_pid, SERVER_FAILED: _report_server_failed,
                SERVER_EXIT: _report_server_exit}

    # ---------------- pulses and faults

    def _pulse(self, comp):
        """Pulse the scheduler every pulse interval; when it has answered none
        for 5 intervals the computation ends here, and so it does when it
        has had no job for zombie_period."""
        interval = comp.pulse_interval
        answered = idle_since = time.monotonic()
        due = answered
        while self.comp is comp and not comp.closing:
            figures = self.availability()
            answer = self.call(comp.scheduler, PULSE, comp.id, self.rt.location.addr, figures,
                               timeout=interval)
            now = time.monotonic()
            if comp.closing:
                return
            if isinstance(answer, int):
                answered = now
                if answer > 0:
                    idle_since = now
                elif self.options.zombie_period and \
                        now - idle_since > self.options.zombie_period:
                    self._end_computation(comp, 'idle for %ss (zombie_period)'
                                          % self.options.zombie_period)
                    return
            elif not isinstance(answer, NoAnswer):      # the scheduler says it is not ours
                self._end_computation(comp, 'the scheduler no longer runs it here (%s)'
                                      % answer.reason, by_scheduler=True)
                return
            elif now - answered >= 5 * interval:
                # (it may come back: the node takes the computation again then)
                self._end_computation(comp, 'the scheduler answered no pulse for %.0f s (5 '
                                      'pulse intervals)' % (now - answered), rejoin=True)
                return
            due += interval
            if comp.ended.wait(max(due - time.monotonic(), 0)):
                return

    def on_peer(self, status):
        comp = self.comp
        if status.status == PeerStatus.Offline:
            self.schedulers = {s for s in self.schedulers if s.location != status.location}
            if comp is not None and comp.scheduler is not None and \
                    status.location == comp.scheduler.location:
                spawn(self._end_computation, comp, 'the scheduler went away', by_scheduler=True)

    def finish(self):
        """quit/exit: take no more jobs; quit when the running ones are done."""
        self.accepting = False
        self.quit_after = True
        comp = self.comp
        if comp is None:
            self.quit.set()
        else:
            spawn(self.drain, comp, 'the node quits')

    def stop_node(self):
        """The program ends: the computation here ends now, the zygote goes."""
        self.quitting = True
        if self.comp is not None:
            self._end_computation(self.comp, 'the node quits')
        try:
            command(self.zygote_cmd, QUIT)
        except OSError:     # the zygote is gone already
            pass

    def status_lines(self):
        comp = self.comp
        if comp is None:
            state = 'idle' if self.accepting else 'not taking computations%s' % (
                self.windows.next_start(),)
            return ['discoronode "%s" @ %s: %s' % (self.options.name, self.rt.location, state)]
        lines = []
        for index, pid in sorted(comp.servers.items()):
            coro = comp.server_coros.get(index)
            running = self.call(coro, SERVER_STATUS, timeout=2) if coro is not None else None
            lines.append('discoro server "%s_proc-%d" @ %s with PID %s running %s coroutines '
                         'for %s' % (self.options.name, index, comp.locations.get(index), pid,
                                     running if isinstance(running, int) else '?',
                                     comp.client_location))
        return lines or ['discoronode "%s" @ %s: starting computation %x of %s'
                         % (self.options.name, self.rt.location, comp.id, comp.client_location)]


def _empty_folder(folder):
    """Remove what `folder` holds: [(path, OSError)] of what could not be."""
    failed = []
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError as exc:
                failed.append((path, exc))
    return failed


# ---------------------------------------------------------------- service windows

_DAY = 24 * 3600


def clock(option, text):
    """Seconds into the day of 'HH:MM' (or 'HH:MM:SS'), local time; ValueError
    naming `option` if it is not one."""
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


class Windows:
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
