"""asyncoro.service: the one request/reply engine of discoro's parts.

What it owns: `Service` (a role that answers operations: the scheduler, a
node, a server, a computation's client side, the web monitor's watcher),
the operations of the discoro protocol, declared once here by the service
that answers them (so a sender and its handler are found by searching one
name), and the two wire kinds that carry them.

How it works:

- A service is a system coroutine plus a table of operations. The coroutine
  is its identity: it is registered and located by name, travels in messages
  as a reference, monitors jobs and hears of peers. Plain messages to it go
  to `on_monitor` and `on_peer` at once, where they are delivered (the hub
  thread; core's `_hand_messages`), in the order they were sent: these must
  not block.
- `call(target, OP, *args, timeout=...)` asks the service whose coroutine is
  `target` to do OP and returns its answer, or a `Failure` saying why there
  is none: the operation failed there (with its traceback text), the target
  does not exist (any more), the peer went away or cannot be reached, no
  answer came in time. It travels on the distributed layer's own call/reply
  (`AsynCoro.request`: its request ids, its waiters, its failing of requests
  whose peer went away); a target in this process is called directly. A call
  never waits longer than its timeout, and without one, no longer than the
  target's process is reachable.
- `tell(target, OP, *args)`: the same, wanting no answer.
- On the answering side each operation runs in a greenlet of its own (it may
  block) and its value is the answer. An operation that raises (or returns)
  a `Failure` refuses, which is an answer like any other; any other
  exception is logged with its traceback and answered as a Failure.
"""

import logging

import gevent
import gevent.event

from asyncoro import disasyncoro, netio, strict
from asyncoro.core import MonitorException, _hand_messages
from asyncoro.failure import Failure, NoAnswer, run_guarded, spawn
from asyncoro.handlers import handler
from asyncoro.remote import PeerStatus, SysCoro

__all__ = []

log = logging.getLogger(__name__)

# the wire kinds (asyncoro.handlers has the others)
CALL = 'service-call'       # (CALL, request id, service id, service name, op, args)
TELL = 'service-tell'       # (TELL, service id, service name, op, args)

# ---------------------------------------------------------------- operations
# Named by the service that answers; each line says who asks, with what, and
# what the answer is.

# the scheduler (`discoro_scheduler`, in a client or in discoro.py)
SCHEDULE = 'scheduler.schedule'     # client: (package) -> 0 once it is its turn
RUN = 'scheduler.run'               # client: (id, kind, where, name, source, args, kwargs,
                                    #   want result) -> the job's remote Coro
CLOSE = 'scheduler.close'           # client: (id, await async) -> 0 once closed
NODES = 'scheduler.nodes'           # client: (id) -> [node address]
SERVERS = 'scheduler.servers'       # client: (id) -> [server Location]
ENABLE_NODE = 'scheduler.enable_node'       # client: (id, addr, setup args)
ENABLE_SERVER = 'scheduler.enable_server'   # client: (id, Location, setup args)
WAITING = 'scheduler.waiting'       # client: (id) -> why its request still waits (text)
SERVER_UP = 'scheduler.server_up'   # server: (id, part, Location, node addr, service) -> 0
SERVER_CLOSED = 'scheduler.server_closed'   # node: (id, Location, why) a server died
SERVER_NOT_STARTED = 'scheduler.server_not_started'  # node: (id, part, addr, index, Location,
                                            #   why) a server could not start
NODE_DRAINING = 'scheduler.node_draining'   # node: (id, addr) no more jobs there
NODE_CLOSED = 'scheduler.node_closed'       # node: (id, addr, why, final, failed) it ended
                                            #   the computation (final: for good)
ENDS_HEARD = 'scheduler.ends_heard'         # server: (id) -> 0 once what it sent before
                                            #   (its jobs' ends) is handled
NODE_AVAILABLE = 'scheduler.node_available'  # node: (addr, service) it takes computations
                                            #   (again, or it is back)
PULSE = 'scheduler.pulse'           # node: (id, addr, avail info) -> jobs running there
WATCH = 'scheduler.watch'           # monitor: (coro) -> the state so far; news follows
UNWATCH = 'scheduler.unwatch'       # monitor: (coro)

# a computation's client side
RESULT = 'client.result'            # scheduler: (remote Coro, value) a job's result
PING = 'client.ping'                # scheduler: () -> 0 while the client is there
NOTICE = 'client.notice'            # scheduler: (text) a warning for the client's log

# a node (`discoro_node`)
NODE_INFO = 'node.info'             # scheduler: () -> DiscoroNodeInfo
RESERVE = 'node.reserve'            # scheduler: (id, client Location, pulse interval, cpus,
                                    #   scheduler) -> the pulse interval the node keeps
NODE_SETUP = 'node.setup'           # scheduler: (id, code, node_setup, args, scheduler, client,
                                    #   client Location, server_setup, part) -> 0 once set
                                    #   up; `part` tells this setup from an earlier one
NODE_CLOSE = 'node.close'           # scheduler: (id) -> 0 once its processes are gone
SERVER_STARTED = 'node.server_started'  # server: ((id, part), index, Location, service)
SERVER_IDLE = 'node.server_idle'    # server: ((id, part), index) its jobs are done (draining)

# a server (`discoro_server`)
SERVER_SETUP = 'server.setup'       # scheduler: (setup args) -> server_setup's value
JOB = 'server.job'                  # scheduler: (name, source, args, kwargs, monitor)
                                    #   -> the job's Coro
SERVER_STATUS = 'server.status'     # node: () -> jobs running
DRAIN = 'server.drain'              # node: () -> jobs running; it takes no more
PEERS = 'server.peers'              # scheduler: ([Location]) pair with the other servers
SERVER_CLOSE = 'server.close'       # scheduler, node: () the server ends

_SERVICES = {}      # coroutine id -> the Service of this process it is


def service_here(target):
    """The Service of this process whose coroutine is `target`; None if
    `target` is another process's, or its service has ended."""
    if getattr(target, '_remote', True):
        return None
    return _SERVICES.get(target._id)


def answers(op, push=False, inline=False):
    """Decorator: the method answers `op`; its arguments are the call's.

    :param push: put its answer on the wire before anything it started runs
        (a job that computes without yielding would hold it back).
    :param inline: the method never blocks: a `tell` from this very process
        runs it at once, in the teller's greenlet, and a call or tell from
        another process in the hub greenlet that read it. Or a function of
        the service and the call's arguments that says so of each call (a
        job whose code is already loaded is started inline; one whose code
        must first run its module level is not).
    """
    def mark(func):
        func.answers = op
        func.push = push
        func.inline = inline
        return func
    return mark


class Service:
    """A role that answers operations (see the module docstring). Make one
    in the runtime's hub thread.

    :param name: register its coroutine under this name (for
        `SysCoro.locate`); None: not registered.
    """

    _operations = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        table = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                op = getattr(value, 'answers', None)
                if op is not None:
                    table[op] = value
        cls._operations = table

    def __init__(self, name=None):
        self.rt = self.runtime()
        self._local_waiters = set()     # AsyncResults of local calls to this service
        self.stopped = None             # why, once stopped
        self.coro = self.make_coro()
        _hand_messages(self.coro, self._take)       # no wake of a coroutine per message
        _SERVICES[self.coro._id] = self
        if name is not None:
            self.coro.register(name)

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.coro)

    # The two things a hollow node of the benchmarks (bench/hollow.py, many
    # nodes in one process, each with an address of its own) does otherwise:

    def runtime(self):
        """The runtime whose peers it talks to: this process's."""
        return disasyncoro.AsynCoro.instance()

    def make_coro(self):
        """Its coroutine, a system coroutine of this process (whose
        reference names this process's runtime)."""
        return SysCoro(self._mailbox)

    # ------------------------------------------------ asking

    def call(self, target, op, *args, timeout=None):
        """Ask the service whose coroutine is `target` to do `op`. Blocks the
        calling greenlet.

        :param timeout: seconds to wait at most; None: as long as the
            target's process is reachable.
        :returns: its answer, or a Failure saying why there is none.
        """
        if not getattr(target, '_remote', True):
            service = _SERVICES.get(target._id)
            if service is None:
                return NoAnswer(op, 'service %s has ended' % target, target.location)
            return service._answer_here(op, args, timeout)
        where = target.location
        answer = self.rt.request(where, CALL, (target._id, target.name, op, args), timeout,
                                 on_timeout=_TIMED_OUT, on_failure=None)
        if answer is None:
            return self._unsent(op, where, args)
        if answer is _TIMED_OUT:
            return NoAnswer(op, 'no answer from %s within %ss' % (target, timeout), where)
        return answer

    def call_then(self, target, op, args, then):
        """Ask the service whose coroutine is `target` to do `op` (with the
        tuple `args`), and call ``then(answer)`` in the hub greenlet (it
        must not block): with its answer, or None if it could not be sent or
        the peer went away first (`unsent` says which). Does not block.

        A caller waiting for many answers at once needs no greenlet for
        each: the scheduler starts its jobs so.
        """
        if not getattr(target, '_remote', True):
            service = _SERVICES.get(target._id)
            if service is None:
                gevent.get_hub().loop.run_callback(run_guarded, then, None)
            else:
                spawn(lambda: then(service._perform(op, args)))
            return
        self.rt.request_then(target.location, CALL, (target._id, target.name, op, args), then,
                             None)

    def unsent(self, target, op, args):
        """Why a call_then got None: its arguments cannot be pickled (a
        Failure), or the peer is gone (NoAnswer)."""
        if not getattr(target, '_remote', True):
            return NoAnswer(op, 'service %s has ended' % target, target.location)
        return self._unsent(op, target.location, args)

    def tell(self, target, op, *args):
        """Ask the service whose coroutine is `target` to do `op`, wanting no
        answer.

        :returns: 0, or -1 if it could not be sent (the log says why).
        """
        if not getattr(target, '_remote', True):
            service = _SERVICES.get(target._id)
            if service is None:
                log.debug('%s for %s dropped: that service has ended', op, target)
                return -1
            service._start_answer(op, args, service._answer_told, op, args)
            return 0
        return self.rt.send_frame(target.location, (TELL, target._id, target.name, op, args),
                                  what=_Told(op, target))

    def _unsent(self, op, where, args):
        """The Failure of a call that could not be sent to `where`: its
        arguments cannot be pickled (the log says so too: a refusal of the
        caller's data), or the peer is gone (NoAnswer)."""
        try:
            netio.dumps(args)
        except Exception as exc:        # whatever pickling raises: the arguments are at fault
            return Failure(op, 'its arguments cannot be pickled: %s: %s'
                           % (type(exc).__name__, exc), where)
        return NoAnswer(op, 'the peer at %s went away or cannot be reached' % (where,), where)

    # ------------------------------------------------ answering

    def _perform(self, op, args):
        """Do `op`: its value, or the Failure that answers it."""
        method = self._operations.get(op)
        where = self.rt.location
        if method is None:
            return Failure(op, '%s does not answer it' % self.coro, where)
        if self.stopped:
            return Failure(op, '%s has stopped (%s)' % (self.coro, self.stopped), where)
        try:
            return method(self, *args)
        except Failure as failure:      # a refusal: an answer, not a fault
            return failure
        except Exception as exc:        # the edge of an operation: the caller gets the traceback
            log.warning('%s: %s failed', self.coro, op, exc_info=True)
            return Failure.from_exception(op, exc, where)

    def _answer_here(self, op, args, timeout):
        """A call from this very process: with no timeout, the operation runs
        in the caller's greenlet (which would only wait for it); with one, in
        a greenlet of its own, as it would for a remote caller."""
        if timeout is None:
            return self._perform(op, args)
        waiter = gevent.event.AsyncResult()
        self._local_waiters.add(waiter)
        try:
            spawn(lambda: waiter.set(self._perform(op, args)), fail=waiter.set)
            try:
                return waiter.get(timeout=timeout)
            except gevent.Timeout:
                return NoAnswer(op, 'no answer from %s within %ss' % (self.coro, timeout),
                                self.rt.location)
        finally:
            self._local_waiters.discard(waiter)

    def _start_answer(self, op, call_args, func, *args):
        """Run ``func(*args)``, the answering of `op` (called with
        `call_args`): at once, in this greenlet, for an inline operation (it
        never blocks), else in a greenlet of its own."""
        inline = getattr(self._operations.get(op), 'inline', False)
        if inline is not False and (inline is True or inline(self, *call_args)):
            if strict.ON:       # (a step of the hub greenlet: checked in strict mode)
                strict.timed(op, run_guarded, func, *args)
            else:
                run_guarded(func, *args)
        else:
            spawn(func, *args)

    def _answer_told(self, op, args):
        value = self._perform(op, args)
        if isinstance(value, Failure):      # nobody waits for it; it was a refusal
            log.debug('%s: %s', self.coro, value)

    # ------------------------------------------------ its coroutine

    def _mailbox(self, coro=None):
        """The service's coroutine: its identity (the messages sent to it go
        to `_take` at once), waiting until the service stops."""
        while True:
            msg = yield coro.receive()
            self._take(msg)         # (a message queued before _hand_messages: none is)

    def _take(self, msg):
        """A message for the service, where it was delivered (the hub): it
        must not block."""
        if isinstance(msg, MonitorException):
            self._guarded(self.on_monitor, msg)
        elif isinstance(msg, PeerStatus):
            self._guarded(self.on_peer, msg)
        elif isinstance(msg, _Mark):
            msg.reached.set()
        else:
            log.warning('%s: unexpected message %.200r', self.coro, msg)

    def caught_up(self, timeout):
        """Block until the coroutine has handled the messages it had now
        (at most `timeout` seconds): what a peer sent before a request is
        handled before the request is answered."""
        mark = _Mark()
        self.coro.send(mark)
        mark.reached.wait(timeout)

    def _guarded(self, func, *args):
        try:
            func(*args)
        except Exception:       # our bug: log it, keep serving
            log.error('%s: %s failed', self.coro, func.__name__, exc_info=True)

    def on_monitor(self, msg):
        """A MonitorException for the service (a job it watches ended)."""
        log.warning('%s: unexpected %r', self.coro, msg)

    def on_peer(self, status):
        """A PeerStatus, for a service that asked for them."""

    def stop(self, reason='the service stopped'):
        """End this service: it answers nothing more, its coroutine ends.

        :param reason: what local calls still waiting for it fail with.
        """
        if self.stopped:
            return
        self.stopped = reason
        _SERVICES.pop(self.coro._id, None)
        _hand_messages(self.coro, None)     # (it held this service: a cycle to no use)
        for waiter in list(self._local_waiters):
            if not waiter.ready():
                waiter.set(NoAnswer('call', reason, self.rt.location))
        self.coro.terminate()


_TIMED_OUT = object()        # what rt.request gives a call whose timeout passed


class _Told:
    """Names a tell in the log (`op for target`), formatted only when a
    line is written."""

    __slots__ = ('op', 'target')

    def __init__(self, op, target):
        self.op = op
        self.target = target

    def __str__(self):
        return '%s for %s' % (self.op, self.target)


class _Mark:
    """Sent by a service to its own coroutine (see `Service.caught_up`)."""

    __slots__ = ('reached',)

    def __init__(self):
        self.reached = gevent.event.Event()


# ---------------------------------------------------------------- the wire

def _service_for(rt, service_id, name, op):
    service = _SERVICES.get(service_id)
    if service is None or service.coro.name != name:
        return Failure(op, 'no service %s/%s here (it has ended)' % (name, service_id),
                       rt.location)
    return service


@handler(CALL)
def _handle_call(rt, conn, request):
    _, request_id, service_id, name, op, args = request
    service = _service_for(rt, service_id, name, op)
    if isinstance(service, Failure):
        rt.reply(conn, request_id, service)
        return

    def answer():
        value = service._perform(op, args)
        push = getattr(service._operations.get(op), 'push', False)
        if rt.reply(conn, request_id, value, push) < 0:      # the log says why
            rt.reply(conn, request_id, Failure(op, 'its answer could not be sent (see the log '
                                               'there)', rt.location))
    service._start_answer(op, args, answer)


@handler(TELL)
def _handle_tell(rt, conn, request):
    _, service_id, name, op, args = request
    service = _service_for(rt, service_id, name, op)
    if isinstance(service, Failure):
        log.debug('%s from %s dropped: %s', op, conn.info, service)
        return
    service._start_answer(op, args, service._answer_told, op, args)
