"""asyncoro.schedio: the discoro scheduler's effects, carried out.

What it owns: `Effects`, the part of the scheduler's I/O shell that turns
the effects of its state (asyncoro.schedstate) into calls and tells to
nodes and servers, status messages for the client and the monitors, answers
to the client's run() calls and log lines; and the greenlets that do what
may block (a node's setup, a file transfer, a probe), whose ends come back
to the state as stimuli. The other part, asyncoro.scheduler, turns what
comes in into stimuli.

How it works: `feed(stimulus, *args)` gives the state one stimulus and
`apply()` carries out what it asks, in order. Nothing here blocks the
caller: what may block runs in a greenlet of its own, started with
`_spawn`, which feeds a stimulus of its own failure if it dies of a bug, so
nothing waits for it forever. A job's start is a call whose answer comes to
a callback (`Service.call_then`): no greenlet per job, and a job whose server
goes while its answer is on its way is lost at once.
"""

import functools
import gc
import logging
import os
import time

import gevent.event

from asyncoro import schedstate as st
from asyncoro.core import _msg_timeout
from asyncoro.disasyncoro import Coro, MonitorException, SysCoro
from asyncoro.failure import Failure, NoAnswer, spawn, spawn_later
from asyncoro.records import (DiscoroCoroInfo, DiscoroJobLost, DiscoroStatus, JobNotCreated,
                              JobsWaiting, Busy, ServerLost, StatusDetail, servers_for)
from asyncoro.service import (JOB, NODE_CLOSE, NODE_INFO, NODE_SETUP, NOTICE, PEERS, RESERVE,
                              RESULT, SERVER_CLOSE, SERVER_SETUP)

__all__ = []

log = logging.getLogger(__name__)

_LEVELS = {'warning': logging.WARNING, 'info': logging.INFO, 'debug': logging.DEBUG}
_WAITING_EVERY = 0.25       # seconds: the monitors hear the count of waiting jobs this often


class Effects:
    """The effects of `service.state`, carried out for `service` (the
    scheduler's service: its calls, its computation, its watchers)."""

    def __init__(self, service, statuses):
        self.service = service
        self.state = service.state
        self.statuses = statuses            # the status codes: Scheduler (which owns them)
        self.server_closed = statuses.ServerClosed
        self.waiters = {}                   # job id -> what its run()'s answer goes to: then(answer)
        self.releases = []                  # greenlets releasing nodes at the close
        self.job_ended = gevent.event.Event()   # set at each job's end (close waits on it)
        self._applying = False              # apply() is carrying effects out

    def apply(self):
        """Carry out the state's effects, in order (one may lead to more:
        they are carried out too). Never blocks. Called again while it runs
        (an effect that feeds a stimulus), it leaves the new effects to the
        loop that runs."""
        if self._applying:
            return
        effects, do = self.state.effects, self._DO
        self._applying = True
        done = 0
        try:
            for effect in effects:      # (it goes on to the effects appended meanwhile)
                done += 1
                do[effect[0]](self, *effect[1:])
        finally:
            del effects[:done]
            self._applying = False

    def feed(self, stimulus, *args):
        """Give the state one stimulus, then carry out its effects."""
        stimulus(*args)
        self.apply()

    def _spawn(self, func, *args, failed=None):
        """Run `func(*args)`, which may block, in a greenlet; if it dies of
        a bug, the stimulus `failed` (with its arguments) is fed, so that
        nothing waits for it."""
        def fail(_failure):
            if failed is not None:
                self.feed(*failed)
        return spawn(func, *args, fail=fail)

    def cpus(self, info):
        """How many of the node's servers the computation running uses."""
        package = self.service.package
        return servers_for(package.allocations, info) if package is not None else 0

    # ================================================================ nodes (greenlets)

    def _probe(self, key, coro):
        """Is the peer at `key` a node (`coro`: its service, if known)?"""
        service = self.service
        if coro is None:
            coro = SysCoro.locate('discoro_node', key, _msg_timeout())
        info = None
        if coro is not None:
            info = service.call(coro, NODE_INFO, timeout=_msg_timeout())
            if isinstance(info, Failure):
                log.warning('node at %s did not describe itself: %s', key, info)
                info = None
        if info is None:
            self.feed(self.state.cluster.probe_done, key)
            return
        log.debug('node %s (%s) with %d servers discovered', info.name, info.addr, info.cpus)
        self.feed(self.state.cluster.probe_done, key, info.addr, info, coro, self.cpus(info))

    def _rejoin(self, node):
        info = self.service.call(node.coro, NODE_INFO, timeout=_msg_timeout())
        cluster = self.state.cluster
        if isinstance(info, Failure):
            self.feed(cluster.rejoin_failed, node.addr)
        else:
            self.feed(cluster.rejoined, node.addr, node.key, info, node.coro, self.cpus(info))

    def _reserve(self, package, node, part):
        service = self.service
        answer = service.call(node.coro, RESERVE, package.id, package.client_location,
                              package.pulse_interval, node.cpus, service.coro,
                              timeout=_msg_timeout())
        cluster = self.state.cluster
        if isinstance(answer, NoAnswer):
            self.feed(cluster.node_unreachable, node.addr, part, answer.reason)
        elif isinstance(answer, Failure):
            self.feed(cluster.node_refused, node.addr, part, 'it refused: %s' % answer.reason,
                      not isinstance(answer, Busy))
        elif service.package is package:
            self.feed(cluster.node_reserved, node.addr, part, answer, time.monotonic())
        else:           # reserved for a computation that has ended meanwhile
            service.tell(node.coro, NODE_CLOSE, package.id)

    def _send_files(self, package, node, part):
        rt = self.service.rt
        for path, rel in package.files:
            failed = rt.transfer_file(node.key, path, dir=rel or None, overwrite=True,
                                      timeout=_msg_timeout())
            if failed:
                self.feed(self.state.cluster.node_refused, node.addr, part, 'file %s could '
                          'not be sent to it: %s' % (os.path.basename(path), failed))
                return
        self.feed(self.state.cluster.files_sent, node.addr, part)

    def _set_up(self, package, node, part, args):
        service = self.service
        answer = service.call(node.coro, NODE_SETUP, package.id, package.code,
                              package.node_setup, args, service.coro, package.client,
                              package.client_location, package.server_setup, part)
        cluster = self.state.cluster
        if isinstance(answer, NoAnswer):
            self.feed(cluster.node_unreachable, node.addr, part, answer.reason)
        elif isinstance(answer, Failure):
            self.feed(cluster.node_refused, node.addr, part, answer.reason)
        else:
            self.feed(cluster.node_set_up, node.addr, part, time.monotonic())

    def _release(self, node, comp_id):
        answer = self.service.call(node.coro, NODE_CLOSE, comp_id, timeout=_msg_timeout() * 2)
        if isinstance(answer, Failure):
            log.warning('node %s did not close computation %x: %s', node.addr, comp_id, answer)

    def _server_setup(self, server, args):
        answer = self.service.call(server.coro, SERVER_SETUP, args)
        self.feed(self.state.cluster.server_set_up, server.location, answer)

    # ================================================================ jobs

    def _start(self, job, server, token):
        """Send `job` to `server`; its answer comes to `_started`."""
        name, source, args, kwargs = job.spec
        self.service.call_then(server.coro, JOB, (name, source, args, kwargs,
                                                  self.service.coro),
                               functools.partial(self._started, job, server, token))

    def _started(self, job, server, token, answer):
        work = self.state.work
        if isinstance(answer, Coro):
            work.job_started(job.id, token, answer)
            self.apply()
            return
        if answer is None:
            answer = self.service.unsent(server.coro, JOB, job.spec)
        location = server.location
        if isinstance(answer, NoAnswer):
            work.job_unsent(job.id, token, answer.reason)
        elif isinstance(answer, JobNotCreated):     # run() gives asyncoro 4.5's error tuple
            work.job_not_started(job.id, token, answer)
        else:       # a refusal: lasting, unless the server drains (Busy)
            work.job_not_started(job.id, token, Failure('job %s' % job.spec[0], 'server %s: %s'
                                                        % (location, answer)),
                                 not isinstance(answer, Busy))
        self.apply()

    def _answer(self, job):
        outcome = job.outcome
        if isinstance(outcome, st.Refused):
            outcome = Failure('job %s' % job.spec[0], outcome.reason)
        elif isinstance(outcome, st.Lost):
            outcome = _job_lost(job, outcome)
        if job.state is st.JobState.ENDED:
            self.job_ended.set()
        then = self.waiters.pop(job.id, None)
        if then is not None:
            then(outcome)

    def _created(self, job, first):
        _name, _source, args, kwargs = job.spec
        job.info = DiscoroCoroInfo(job.rcoro, args, kwargs, time.time())
        # from here, so that it reaches status_coro before the job's end (same sender)
        self.service.notify(DiscoroStatus(self.statuses.CoroCreated, job.info))
        if first:
            then = self.waiters.pop(job.id, None)
            if then is not None:
                then(job.rcoro)

    def _ended(self, job, msg, lost):
        """A job ended: status_coro hears of it, run_result* gets its result
        (a job given up after it was lost and run again ended as its last
        attempt did, which status_coro has heard of)."""
        self.job_ended.set()
        if lost is not None:
            result = _job_lost(job, lost)
            if job.rcoro is not None:
                msg = MonitorException(job.rcoro, (self.server_closed, result))
        else:
            result = _result(msg, self.server_closed)
        service = self.service
        package = service.package
        if package is None:
            return
        if msg is not None:
            service.notify(msg)
        if job.want_result:
            service.tell(package.client, RESULT, job.origin, result)

    def _lost_try(self, job, lost):
        self.job_ended.set()
        self.service.notify(MonitorException(job.rcoro, (self.server_closed,
                                                         _job_lost(job, lost))))

    # ================================================================ status, log, monitors

    def _status(self, name, subject, code, text):
        status = getattr(self.statuses, name)
        self.service.notify(DiscoroStatus(status, subject))
        if code is not None:
            self.service.notify(StatusDetail(status, subject, code, text), details=True)

    def _log_line(self, level, text, client):
        service = self.service
        package = service.package
        elsewhere = package is not None and package.client_location != service.rt.location
        if level == 'news':
            level = 'info' if elsewhere else 'debug'
        log.log(_LEVELS[level], '%s', text)
        if client and elsewhere:
            service.tell(package.client, NOTICE, text)

    def _waiting(self):
        """The monitors hear the count of waiting jobs, _WAITING_EVERY
        seconds after it changed (a run_results changes it at every job)."""
        spawn_later(_WAITING_EVERY, self._tell_waiting)

    def _tell_waiting(self):
        count = self.state.work.waiting_heard()
        package = self.service.package
        if package is not None:
            self.service.notify(JobsWaiting(package.id, count), details=True)

    def _close_node(self, node):
        comp = self.state.comp
        if comp is not None:
            self.service.tell(node.coro, NODE_CLOSE, comp.id)

    _DO = {
        st.PROBE: lambda self, key, coro: self._spawn(
            self._probe, key, coro, failed=(self.state.cluster.probe_done, key)),
        st.REJOIN: lambda self, node: self._spawn(
            self._rejoin, node, failed=(self.state.cluster.rejoin_failed, node.addr)),
        # (the node's setup is for the computation running now: the package goes with it)
        st.RESERVE: lambda self, node, part: self._spawn(
            self._reserve, self.service.package, node, part, failed=(
                self.state.cluster.node_refused, node.addr, part, 'reserving it failed (a bug)')),
        st.SEND_FILES: lambda self, node, part: self._spawn(
            self._send_files, self.service.package, node, part, failed=(
                self.state.cluster.node_refused, node.addr, part,
                'sending it files failed (a bug)')),
        st.SET_UP: lambda self, node, part, args: self._spawn(
            self._set_up, self.service.package, node, part, args, failed=(
                self.state.cluster.node_refused, node.addr, part,
                'setting it up failed (a bug)')),
        st.CLOSE_NODE: _close_node,
        st.RELEASE: lambda self, node: self.releases.append(
            spawn(self._release, node, self.state.comp.id)),
        st.SERVER_SETUP: lambda self, server, args: self._spawn(
            self._server_setup, server, args, failed=(self.state.cluster.server_set_up,
                                                      server.location, 'a bug')),
        st.CLOSE_SERVER: lambda self, server: self.service.tell(server.coro, SERVER_CLOSE),
        st.PEERS: lambda self, server, others: self.service.tell(server.coro, PEERS, others),
        st.STATUS: _status,
        st.LOG: _log_line,
        st.START: _start,
        st.ANSWER: _answer,
        st.CREATED: _created,
        st.ENDED: _ended,
        st.LOST_TRY: _lost_try,
        st.TERMINATE: lambda self, rcoro: rcoro.terminate(),
        st.WAITING: _waiting,
    }


def _job_lost(job, lost):
    """The DiscoroJobLost of `job`, `lost` with its server (and its earlier
    attempts, each lost too)."""
    return DiscoroJobLost(lost.server, lost.cause, [
        DiscoroJobLost(a.server, a.cause, code=a.code) for a in job.attempts], lost.code)


def _result(msg, server_closed):
    """What run_result* gives for a job that ended with `msg`."""
    kind, value = msg.args[1]
    if kind is StopIteration:
        return value
    if kind == server_closed:
        return value if isinstance(value, ServerLost) else DiscoroJobLost(
            msg.args[0].location, 'its server closed')
    if isinstance(value, BaseException):
        return value
    return kind(value) if isinstance(kind, type) else value    # its type travelled, not it


class Calm:
    """Keeps a big cluster's records out of Python's full garbage collections.

    A full collection walks every object the collector tracks, and comes
    once the objects that outlived younger collections (the jobs in flight,
    say) add a quarter to what it found last time: at 8,192 servers the
    cluster's own records (peers, connections, servers) are 400,000 objects,
    a walk of 0.2 s in the hub for every few thousand jobs queued at once. So
    once a cluster of SMALLEST servers or more has had no server come up for
    a second, its records are frozen (gc.freeze: left out of collections,
    an O(1) move); they are thawed (gc.unfreeze) when it loses a quarter of
    its servers or the computation ends, and what of them became garbage is
    collected then. `servers(count)` tells it the cluster's size now."""

    SMALLEST = 256          # servers: below this a full collection is cheap
    QUIET = 0.25            # seconds without a new server before a freeze

    def __init__(self):
        self.frozen = 0     # servers when last frozen (0: nothing frozen)
        self.count = 0      # servers now
        self.seen = None    # servers at the last look of the timer (None: no timer)

    def servers(self, count):
        grew = count > self.count
        self.count = count
        if self.frozen and count < self.frozen * 3 // 4:
            self.thaw()
        elif grew and count >= max(self.SMALLEST, self.frozen * 5 // 4) and self.seen is None:
            self.seen = count
            spawn_later(self.QUIET, self._look)

    def _look(self):
        if self.count != self.seen:         # still growing: look again in a while
            self.seen = self.count
            spawn_later(self.QUIET, self._look)
            return
        self.seen = None
        if self.count >= max(self.SMALLEST, self.frozen * 5 // 4):
            gc.freeze()
            self.frozen = self.count

    def thaw(self):
        if self.frozen:
            gc.unfreeze()
            self.frozen = 0


class Held:
    """Notices that may wait a moment, to go out together: a node's
    availability comes with each of its pulses, a thousand nodes pulse a
    hundred times a second, and each notice sent alone is a write of its own
    (a tenth of what a pulse costs the scheduler, measured at 1,024 nodes).
    Held for WAIT seconds at most, they then go in
    one turn of the hub, which writes each connection's share at once. The
    owner calls flush() before it sends any other notice, so the order of
    notices is the order they were made in."""

    WAIT = 0.25             # seconds

    def __init__(self, send):
        self._send = send   # send(notice) sends one notice now
        self.held = []

    def hold(self, notice):
        self.held.append(notice)
        if len(self.held) == 1:
            spawn_later(self.WAIT, self.flush)

    def flush(self):
        held, self.held = self.held, []
        for notice in held:
            self._send(notice)
