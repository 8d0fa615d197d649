"""asyncoro.client: a computation, seen from the client program.

What it owns: `Computation` (components to ship, `schedule`, the `run*`
family, `close`) and its client-side service, which takes the results of
`run_result*` jobs and answers the scheduler's pings. asyncoro.discoro is
its public home.

How it works: `schedule()` finds the scheduler (`discoro_scheduler`: in this
process with `Scheduler()`, or a discoro.py program), sends it the component
files if it lives elsewhere, and submits the computation; every later call
asks that scheduler (asyncoro.service). A request refused or lost comes back
as a Failure and becomes, here at the edge, the return value asyncoro 4.5
gives (-1, None, an error tuple), with one WARNING saying why. Nothing waits
forever: a call waits as long as the scheduler is reachable, and one that
waits long (no node, the queue) says why after `Computation.wait_warning`
seconds.
"""

import functools
import inspect
import itertools
import logging
import os
import sys
import time
import types
import uuid
import weakref

import gevent
import gevent.event

from asyncoro import disasyncoro, netio
from asyncoro.core import _msg_timeout
from asyncoro.disasyncoro import Coro, Location, PeerStatus, SysCoro
from asyncoro.failure import Failure, NoAnswer, spawn, spawn_later
from asyncoro.records import (DiscoroError, DiscoroNodeAllocate, JobNotCreated, MaxPulseInterval,
                              MinPulseInterval, Package, ServerLost, SMALLEST_PULSE_INTERVAL,
                              upload_dir)
from asyncoro.service import (CLOSE, ENABLE_NODE, ENABLE_SERVER, NODES, NOTICE, PING, RESULT,
                              RUN, SCHEDULE, SERVERS, WAITING, Service, answers, service_here)

__all__ = ['Computation']

log = logging.getLogger(__name__)


# CPython drops __main__.__file__ once the script's last line has run, and
# inspect needs it to find a class's source: programs build computations in
# coroutines that run after that (exit-wait), so remember it now
_MAIN_FILE = getattr(sys.modules.get('__main__'), '__file__', None)


def _source(obj, what):
    main = sys.modules.get('__main__')
    if _MAIN_FILE and main is not None and getattr(obj, '__module__', None) == '__main__' \
            and getattr(main, '__file__', None) is None:
        main.__file__ = _MAIN_FILE
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise DiscoroError('%s %r: its source code is not available (%s); define it in a '
                           'file' % (what, obj, exc)) from exc


def _tracked(cls):
    """A line to run after a class component's source on the servers: it makes
    the class made there the one the client's instances unpickle to, and
    instances made there unpickle here to `cls`."""
    return '\nasyncoro.netio.track_class(%r, %s)\n' % (netio.class_tracker_id(cls), cls.__name__)


def _dedent(text):
    lines = text.splitlines(True)
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return ''.join(line[indent:] for line in lines)


def _check_arguments(pulse_interval, status_coro, node_setup, server_setup, disable_nodes,
                     disable_servers, retry_lost):
    """Raise DiscoroError, saying which and why, for a bad argument of
    Computation (node_allocations: see _allocation_rules)."""
    if isinstance(pulse_interval, bool) or not isinstance(pulse_interval, (int, float)) or \
            not pulse_interval >= SMALLEST_PULSE_INTERVAL:
        raise DiscoroError('pulse_interval must be a number of seconds, at least %s (each '
                           'node keeps it within its own bounds, %s to %s by default), '
                           'not %r' % (SMALLEST_PULSE_INTERVAL, MinPulseInterval,
                                       MaxPulseInterval, pulse_interval))
    if status_coro is not None and not isinstance(status_coro, Coro):
        raise DiscoroError('status_coro must be a Coro, not %r' % (status_coro,))
    for name, setup in (('node_setup', node_setup), ('server_setup', server_setup)):
        if setup is not None and not inspect.isgeneratorfunction(setup):
            raise DiscoroError('%s must be a generator function, not %r' % (name, setup))
    if isinstance(retry_lost, bool) or not isinstance(retry_lost, int) or retry_lost < 0:
        raise DiscoroError('retry_lost must be a number of retries (0 or more), not %r'
                           % (retry_lost,))
    if (disable_nodes or disable_servers) and status_coro is None:
        raise DiscoroError('disable_nodes and disable_servers need a status_coro (to hear '
                           'of the nodes and servers to enable)')


def _allocation_rules(node_allocations):
    """Computation's node_allocations as DiscoroNodeAllocate rules (a string
    is one); DiscoroError for anything else."""
    rules = []
    for rule in node_allocations or []:
        if isinstance(rule, str):
            rule = DiscoroNodeAllocate(rule)
        if not isinstance(rule, DiscoroNodeAllocate):
            raise DiscoroError('node_allocations must be DiscoroNodeAllocate objects or '
                               'strings, not %r' % (rule,))
        rules.append(rule)
    return rules


def _gather(components):
    """(code, files, names) of a computation's components: the source text
    of its functions and classes (and of the classes of its objects), as one
    program that compiles; the (path, folder) of its modules and files; the
    names the source defines. DiscoroError for a component that cannot be
    shipped."""
    code, files, names = [], [], set()
    for item in components:
        if isinstance(item, (types.FunctionType, type)):
            if item.__name__ not in names:
                code.append(_dedent(_source(item, 'component')))
                if isinstance(item, type):
                    code.append(_tracked(item))
                names.add(item.__name__)
        elif isinstance(item, types.ModuleType):
            path = getattr(item, '__file__', None) or ''
            if not path.endswith('.py'):
                raise DiscoroError('module component %r has no .py source' % item.__name__)
            files.append(_component_file(path, os.path.join(*item.__name__.split('.')[:-1])
                                         if '.' in item.__name__ else None))
        elif isinstance(item, str):
            if not os.path.isfile(item):
                raise DiscoroError('file component %r does not exist' % item)
            files.append(_component_file(item, None))
        elif isinstance(item, (types.BuiltinFunctionType, functools.partial,
                               types.MethodType)) or type(item).__module__ == 'builtins':
            raise DiscoroError('component %r is not a function, class, module or file'
                               % (item,))
        else:
            cls = type(item)
            if cls.__name__ not in names:
                code.append(_dedent(_source(cls, 'class of component')))
                code.append(_tracked(cls))
                names.add(cls.__name__)
    code = '\n'.join(code)
    try:
        compile(code, '<computation components>', 'exec')
    except SyntaxError as exc:
        raise DiscoroError('components do not compile: %s' % exc) from exc
    return code, files, names


def _component_file(path, rel):
    """(absolute path, the folder it goes to under the computation's folder
    on the servers): `rel` given (a package module's), else the path's folder
    relative to the working directory when it is under it, else the top."""
    path = os.path.abspath(path)
    if rel is None:
        cwd = os.getcwd()
        parent = os.path.dirname(path)
        rel = os.path.relpath(parent, cwd) if os.path.commonpath([cwd, parent]) == cwd else ''
        rel = '' if rel == '.' else rel
    return (path, rel)


class Computation:
    """A computation: code and files (`components`) to ship to servers, and
    the jobs run with them.

    :param components: functions, classes, objects (their class), modules and
        file paths to ship to every server.
    :param pulse_interval: seconds between the nodes' pulses, which carry
        their load and prove they are there (a node silent for 5 pulses is
        dropped). At least 1; each node keeps it within its own
        ``--min_pulse_interval``/``--max_pulse_interval`` (10 and 100 by
        default).
    :param node_allocations: DiscoroNodeAllocate rules saying which nodes
        to use, and how many of their servers; the first rule that matches
        a node decides, and a node no rule matches is used whole. A plain
        string in the list is ``DiscoroNodeAllocate(string)``, whose `cpus`
        is 0: it *excludes* the nodes it matches (as in asyncoro 4.5).
    :param status_coro: a Coro that gets the status messages.
    :param node_setup: a generator function run once per node before its
        servers start; the globals it sets are in every server of that node.
        It runs with no runtime: it gets no `coro` argument, and what it
        yields comes straight back (it cannot sleep, receive or send); it
        succeeds by returning (or yielding last) 0.
    :param server_setup: a generator function run on each server first,
        as a coroutine of that server (it gets `coro`).
    :param disable_nodes: nodes (servers) wait for enable_node
        (enable_server) before they are used.
    :param peers_communicate: servers pair with one another.
    :param retry_lost: (this package's extension) how many times a CPU job
        whose server or node dies before it ends is started again on another
        server (0, as in asyncoro 4.5: never). It applies to jobs of run,
        run_result, run_results and of run_at / run_result_at with a node
        address; a job placed on one server (run_at with a Location) and
        async jobs are never run again. status_coro sees the lost attempt
        end with (Scheduler.ServerClosed, DiscoroJobLost) and CoroCreated for
        the new one; run_result* gives the result of the attempt that ended,
        or a DiscoroJobLost listing every attempt.
    :raises DiscoroError: for a bad argument, saying which and why.

    `wait_warning` (seconds, 10 by default; class or instance attribute):
    when schedule() or a run* call has waited that long, one WARNING says
    what the scheduler knows of why (its queue, no node found, nodes that
    refused and why, peers with another secret).
    """

    wait_warning = 10

    def __init__(self, components, pulse_interval=(5 * MinPulseInterval),
                 node_allocations=[],         # noqa: B006 - asyncoro 4.5's signature; never mutated
                 status_coro=None, node_setup=None, server_setup=None, disable_nodes=False,
                 disable_servers=False, peers_communicate=False, retry_lost=0):
        if not isinstance(components, (list, tuple)):
            components = [components]
        _check_arguments(pulse_interval, status_coro, node_setup, server_setup, disable_nodes,
                         disable_servers, retry_lost)
        self._allocations = _allocation_rules(node_allocations)
        setups = [setup for setup in (node_setup, server_setup) if setup is not None]
        self._code, self._files, self._names = _gather(list(components) + setups)
        self._pulse_interval = pulse_interval
        self.status_coro = status_coro
        self._node_setup = node_setup.__name__ if node_setup else None
        self._server_setup = server_setup.__name__ if server_setup else None
        self._disable_nodes = bool(disable_nodes)
        self._disable_servers = bool(disable_servers)
        self._peers_communicate = bool(peers_communicate)
        self._retry_lost = retry_lost
        # the key of this computation everywhere: id(self) alone is not unique
        # across client processes, which share one scheduler program
        self._id = uuid.uuid4().int >> 65
        self.scheduler = None
        self._client = None
        self._closed = False

    def _package(self):
        """What the scheduler (and through it the nodes) needs of this."""
        return Package(self._id, self._code, self._files, self._pulse_interval,
                        self._allocations, self.status_coro, self._node_setup,
                        self._server_setup, self._disable_nodes, self._disable_servers,
                        self._peers_communicate, self._client.coro,
                        disasyncoro.AsynCoro.instance().location, id(self), self._retry_lost,
                        self.status_coro is not None and self.status_coro in _DETAILED)

    def _upload(self, rt, scheduler):
        """A scheduler in another process gets the component files first:
        it sends them on to the nodes. 0, or the reason it failed."""
        for path, rel in self._files:
            folder = os.path.join(upload_dir(self._id), rel) if rel else upload_dir(self._id)
            if rt.send_file(scheduler.location, path, dir=folder, overwrite=True,
                            timeout=_msg_timeout()) < 0:
                return 'could not send %s to the scheduler at %s' % (path, scheduler.location)
        return 0

    # -------------------------------------------- scheduling

    def schedule(self, location=None, timeout=None):
        """Find the scheduler and submit this computation; wait until the
        scheduler starts it (it runs one computation at a time, in the order
        they came).

        :param location: where the scheduler runs (a Location); None: look
            for it on the network (at most MsgTimeout seconds).
        :param timeout: accepted, as in asyncoro 4.5, and not used.
        :returns: 0; or -1, with a WARNING saying why, if no scheduler was
            found or it would not take the computation.

        Blocks until the computation starts, or the scheduler goes away. With
        the computation waiting longer than :attr:`wait_warning` seconds, one
        WARNING says what keeps it. Call form:
        ``yield computation.schedule()``.
        """
        if self.scheduler is not None:
            return 0
        if self._closed:
            raise DiscoroError('computation %x was closed' % self._id)
        rt = disasyncoro.AsynCoro.instance()
        scheduler = None
        if location is None and _last_scheduler[0] is not None:
            # the scheduler of this client's last computation, asked alone
            # first: a broadcast would also ask every server of the last
            # computation, which may be going away just now
            scheduler = rt._run_here(SysCoro.locate, 'discoro_scheduler', _last_scheduler[0],
                                     _msg_timeout())
        if scheduler is None:
            scheduler = rt._run_here(SysCoro.locate, 'discoro_scheduler', location,
                                     _msg_timeout())
        if scheduler is None:
            log.warning('no scheduler answered at %s within %ss (is discoro.py running, or '
                        'Scheduler() called? same secret and UDP port %s?)',
                        location or 'any peer', _msg_timeout(), rt.udp_port)
            return -1
        if scheduler.location != rt.location:
            failed = self._upload(rt, scheduler)
            if failed:
                log.warning('scheduling computation %x failed: %s', self._id, failed)
                return -1
        self._client = rt._run_here(_ClientService, scheduler, self)
        answer = rt._run_here(self._client.ask, self.wait_warning, scheduler, SCHEDULE,
                              self._package())
        if isinstance(answer, Failure):
            log.warning('scheduling computation %x failed: %s', self._id, answer)
            rt._run_here(self._client.stop, 'computation %x was not scheduled' % self._id)
            self._client = None
            return -1
        self.scheduler = scheduler
        _last_scheduler[0] = scheduler.location
        rt.atexit(10, self._close_at_exit)
        return 0

    def _close_at_exit(self):
        if self.scheduler is not None and not self._closed:
            self.close()

    def _check_open(self, op):
        if self.scheduler is None:
            raise DiscoroError('computation %x is not scheduled (call schedule() first)'
                               % self._id)
        if self._closed and op != CLOSE:
            raise DiscoroError('computation %x is closed' % self._id)

    def _ask(self, op, *args, timeout=None, patient=False):
        """Ask the scheduler `op` about this computation: its answer, or a
        Failure. `patient`: a wait with no limit (placing a job), which says
        after wait_warning seconds why it still waits."""
        self._check_open(op)
        rt = disasyncoro.AsynCoro.instance()
        return rt._run_here(self._client.ask, self.wait_warning if patient else None,
                            self.scheduler, op, self._id, *args, timeout=timeout)

    # -------------------------------------------- jobs

    def _job_spec(self, gen):
        if isinstance(gen, str):
            return gen, None
        if not callable(gen) or not hasattr(gen, '__name__'):
            raise DiscoroError('%r is not a function (or the name of one)' % (gen,))
        if gen.__name__ in self._names:
            return gen.__name__, None
        return gen.__name__, _dedent(_source(gen, 'job function'))

    def _run(self, kind, where, gen, args, kwargs, want_result):
        name, source = self._job_spec(gen)
        if where is not None and not isinstance(where, (str, Location)):
            raise DiscoroError('where must be a node address or a server Location, not %r'
                               % (where,))
        scheduler = service_here(self.scheduler)
        if scheduler is None:
            answer = self._ask(RUN, kind, where, name, source, args, kwargs, want_result,
                               patient=True)
        else:
            self._check_open(RUN)
            answer = disasyncoro.AsynCoro.instance()._run_here(
                self._run_locally, scheduler, kind, where, (name, source, args, kwargs),
                want_result)
        return self._outcome(name, answer, want_result)

    def _run_locally(self, scheduler, kind, where, spec, want_result):
        waiter = gevent.event.AsyncResult()
        self._submit(scheduler, kind, where, spec, want_result, waiter.set)
        return waiter.get()

    def _submit(self, scheduler, kind, where, spec, want_result, then):
        """Ask the scheduler of this process (`scheduler`, its service) to
        run a job, as RUN does, with no call between: ``then(answer)`` gets
        RUN's answer, in the hub. A job that waits for a server is named
        after wait_warning seconds, as a call of RUN is."""
        client = self._client
        if client.gone:
            then(Failure(RUN, client.gone))
            return
        token = client.waits(self.wait_warning, self.scheduler, RUN)

        def answered(answer):
            client.waited(token)
            then(answer)
        scheduler.submit(self._id, kind, where, spec, want_result, answered)

    def _outcome(self, name, answer, want_result):
        """What run*() returns for job `name`, from the scheduler's answer."""
        if want_result and isinstance(answer, NoAnswer) and \
                self.scheduler.location != disasyncoro.AsynCoro.instance().location:
            # the scheduler program went away, maybe after the job started:
            # the error every run_result* gets once the scheduler is gone
            return DiscoroError(_scheduler_gone(self.scheduler.location))
        if isinstance(answer, ServerLost) and want_result:
            return answer           # run_result*: the job's error
        if isinstance(answer, JobNotCreated):
            # the server could not create it: asyncoro 4.5's error tuple
            self._client.once('job %s of computation %x not created: %s'
                              % (name, self._id, answer))
            return (answer.error, name, answer.traceback)
        if isinstance(answer, (Failure, ServerLost)):
            self._client.once('job %s of computation %x not run: %s' % (name, self._id, answer))
            return None
        return answer

    def run_at(self, where, gen, *args, **kwargs):
        """Start ``gen(*args, **kwargs)`` as a CPU-bound job (one at a time
        per server) on node `where` or server `where`.

        :param where: a node's IP address (any of its servers that is free
            now; if none is, the job is not run) or a server's Location (the
            job waits until that server is free).
        :param gen: a function of the components (or its name), or a
            module-level function, whose source goes with the job.
        :returns: the job's remote Coro once it has started; None, with a
            WARNING saying why, if it could not be placed; ``(exc_type, name,
            traceback text)`` if the server could not create it.

        Blocks until the job has started. Call form:
        ``rcoro = yield computation.run_at(where, compute, 1)``.
        """
        return self._run('cpu', where, gen, args, kwargs, False)

    def run(self, gen, *args, **kwargs):
        """Start a CPU-bound job on a free server of the least loaded node.

        :returns: as :meth:`run_at`.

        Blocks until a server is free and the job has started, so a loop of
        ``run()`` keeps every server busy and no more. Call form:
        ``rcoro = yield computation.run(compute, 1)``.
        """
        return self._run('cpu', None, gen, args, kwargs, False)

    def run_async_at(self, where, gen, *args, **kwargs):
        """Start a job that does not reserve its server (any number run at
        once on one server) on node `where` (its least busy server) or server
        `where`.

        :returns: as :meth:`run_at`.
        """
        return self._run('async', where, gen, args, kwargs, False)

    def run_async(self, gen, *args, **kwargs):
        """Start a job that does not reserve its server on the least busy
        server of the node with the fewest jobs.

        :returns: as :meth:`run_at`.
        """
        return self._run('async', None, gen, args, kwargs, False)

    def run_result_at(self, where, gen, *args, **kwargs):
        """Like :meth:`run_at`, then wait for the job to end.

        :returns: the job's value; the exception it raised; a DiscoroJobLost
            if it was lost with its server (after the retries asked with
            `retry_lost`); the error tuple of a job that could not be created;
            a DiscoroError if the scheduler program went away; or None, with
            a WARNING, if it could not run.

        Blocks until the job ends, its server is lost, the computation is
        closed or its scheduler program is gone. It does not raise for the
        job's errors. Call form:
        ``value = yield computation.run_result_at(where, compute, 1)``.
        """
        return self._result(self._run('cpu', where, gen, args, kwargs, True))

    def run_result(self, gen, *args, **kwargs):
        """Like :meth:`run`, then wait for the job to end.

        :returns: as :meth:`run_result_at`.
        """
        return self._result(self._run('cpu', None, gen, args, kwargs, True))

    def _result(self, rcoro):
        if not isinstance(rcoro, Coro):
            return rcoro
        rt = disasyncoro.AsynCoro.instance()
        return rt._run_here(self._client.result, rcoro)

    def run_results(self, gen, iterable):
        """Run :meth:`run_result` for each item of `iterable`, all at once.

        :param iterable: the jobs' arguments: an item that is a tuple is the
            positional arguments; another iterable becomes ``tuple(item)``
            (so a str gives one argument per character); anything else is the
            one argument.
        :returns: a list of what :meth:`run_result` gives for each item, in
            the items' order.

        :raises DiscoroError: if the computation is not scheduled or is
            closed, or `gen` is not a function (no job is run).

        Blocks until every job has ended. Call form:
        ``values = yield computation.run_results(compute, range(10))``.
        """
        calls = []
        for item in iterable:
            if isinstance(item, tuple):
                args = item
            elif isinstance(item, (list, str, bytes, set, frozenset, dict, range)) or \
                    hasattr(item, '__iter__'):
                args = tuple(item)
            else:
                args = (item,)
            calls.append(args)
        self._check_open(RUN)
        name, source = self._job_spec(gen)      # (a wrong one: the caller's error, at once)
        rt = disasyncoro.AsynCoro.instance()
        scheduler = service_here(self.scheduler)
        if scheduler is not None:
            return rt._run_here(self._results_here, scheduler, name, source, calls)

        def all_results():
            jobs = [spawn(self.run_result, gen, *args) for args in calls]
            gevent.joinall(jobs)
            return [job.value for job in jobs]
        return rt._run_here(all_results)

    def _results_here(self, scheduler, name, source, calls):
        """run_results with the scheduler in this process: each job's answer
        and its result come to callbacks in the hub, not to a greenlet of
        its own (a run_results of thousands of jobs would make thousands)."""
        client = self._client
        results = [_PENDING] * len(calls)
        left = [len(calls)]
        all_came = gevent.event.Event()

        def came(i, value):
            if results[i] is _PENDING:
                results[i] = value
                left[0] -= 1
                if not left[0]:
                    all_came.set()

        def answered(i, answer):
            try:
                value = self._outcome(name, answer, True)
                if isinstance(value, Coro):
                    client.result_then(value, functools.partial(came, i))
                else:
                    came(i, value)
            except Exception as exc:    # a bug: this job's value says so, the others go on
                log.error('run_results of computation %x: job %d failed', self._id, i,
                          exc_info=True)
                came(i, DiscoroError('job %s: %s: %s' % (name, type(exc).__name__, exc)))

        for i, args in enumerate(calls):
            self._submit(scheduler, 'cpu', None, (name, source, args, {}), True,
                         functools.partial(answered, i))
        if left[0]:
            all_came.wait()
        return results

    # -------------------------------------------- nodes and servers

    def enable_node(self, ip_addr, *setup_args):
        """With `disable_nodes`: let the scheduler set up a node that waits.

        :param ip_addr: the node's IP address, or a Location whose address is
            used. A node that is not waiting to be enabled is left as it is.
        :param setup_args: the arguments of ``node_setup(*setup_args)`` there.
        :raises DiscoroError: if the computation is not scheduled.

        Does not block: the scheduler is told, and does not answer. Call
        form: ``computation.enable_node(addr, arg)``.
        """
        addr = ip_addr.addr if isinstance(ip_addr, Location) else ip_addr
        self._tell(ENABLE_NODE, addr, setup_args)

    def enable_server(self, location, *setup_args):
        """With `disable_servers`: let the scheduler set up a server that waits.

        :param location: the server's Location. A server that is not waiting
            to be enabled is left as it is.
        :param setup_args: the arguments of ``server_setup(*setup_args)``
            there; the server takes jobs once that gives 0 (at once without a
            server_setup).
        :raises DiscoroError: if the computation is not scheduled.

        Does not block: the scheduler is told, and does not answer. Call
        form: ``computation.enable_server(location, arg)``.
        """
        self._tell(ENABLE_SERVER, location, setup_args)

    def _tell(self, op, *args):
        if self.scheduler is None:
            raise DiscoroError('computation %x is not scheduled' % self._id)
        rt = disasyncoro.AsynCoro.instance()
        rt._run_here(self._client.tell, self.scheduler, op, self._id, *args)

    def nodes(self):
        """The nodes set up for this computation.

        :returns: their IP addresses (``[]`` if the scheduler does not answer
            within MsgTimeout).
        """
        answer = self._ask(NODES, timeout=_msg_timeout())
        return [] if isinstance(answer, Failure) else answer

    def servers(self):
        """The servers ready for jobs.

        :returns: their Locations (``[]`` if the scheduler does not answer
            within MsgTimeout).
        """
        answer = self._ask(SERVERS, timeout=_msg_timeout())
        return [] if isinstance(answer, Failure) else answer

    def close(self, await_async=False):
        """Close the computation: wait for its CPU-bound jobs, end the async
        ones (or wait for them too), close the servers, release the nodes and
        delete the files.

        :param await_async: wait for the jobs of ``run_async*`` too, instead
            of terminating them.
        :returns: 0; or -1, with a WARNING, if the scheduler did not close it.

        Blocks until the scheduler has closed it, or is gone. Call form:
        ``yield computation.close()``.
        """
        if self.scheduler is None or self._closed:
            return 0
        self._closed = True
        answer = self._ask(CLOSE, bool(await_async))
        rt = disasyncoro.AsynCoro.instance()
        rt._drop_atexit(self._close_at_exit)
        rt._run_here(self._client.stop, 'computation %x is closed' % self._id)
        if isinstance(answer, Failure):
            log.warning('closing computation %x: %s', self._id, answer)
            return -1
        return 0


_last_scheduler = [None]      # where this client's last computation found its scheduler

# status coroutines that take the scheduler's details (records.StatusDetail,
# JobsWaiting) beside asyncoro 4.5's messages: a monitor's (asyncoro.httpd)
_DETAILED = weakref.WeakSet()


def wants_details(coro):
    """Make `coro`, as a computation's status_coro, get the scheduler's
    details for monitors too (records.StatusDetail, JobsWaiting), which a
    program written for asyncoro 4.5 would not know."""
    _DETAILED.add(coro)


class _ClientService(Service):
    """The client side of one computation: job results for run_result*
    come here, and the scheduler pings it to know the client is there."""

    def __init__(self, scheduler, computation):
        super().__init__()
        self._results = {}          # remote Coro -> AsyncResult of its value
        self._scheduler = scheduler
        self._comp_id = computation._id
        self._gone = None           # why every answer fails: the scheduler is gone
        self._said = {}             # warning -> how many times it came again
        self._asks = itertools.count()
        self._asking = {}           # token -> (deadline, target, op) of an ask() that waits
        self._patience = None       # the greenlet that checks them, when one is due
        if scheduler.location != self.rt.location:
            self.rt.peer_status(self.coro)

    def on_peer(self, status):
        """A scheduler program that goes away fails whatever waits for it."""
        if status.status == PeerStatus.Offline and status.location == self._scheduler.location:
            self._gone = _scheduler_gone(status.location)
            log.warning('%s: computation %x ends here', self._gone, self._comp_id)
            for slot in self._results.values():
                if not slot.ready():
                    slot.set(DiscoroError(self._gone))

    def ask(self, patience, target, op, *args, timeout=None):
        """call(); with `patience` (seconds), a call that has waited that long
        logs one WARNING with what the scheduler says of why."""
        if self._gone:
            return Failure(op, self._gone)
        token = self.waits(patience, target, op)
        try:
            return self.call(target, op, *args, timeout=timeout)
        finally:
            self.waited(token)

    @property
    def gone(self):
        """Why every answer fails (the scheduler is gone, the computation
        closed); None while it is there."""
        return self._gone

    def waits(self, patience, target, op):
        """A call of `op` to `target` starts to wait: with `patience`, its
        token, which `waited` takes when the answer came; None without."""
        if not patience:
            return None
        # one timer for all the calls that wait, not one each: a run_results
        # of thousands of jobs makes thousands of calls
        token = next(self._asks)
        self._asking[token] = (time.monotonic() + patience, target, op)
        if self._patience is None:
            self._patience = spawn_later(patience, self._check_waits, patience)
        return token

    def waited(self, token):
        if token is not None:
            self._asking.pop(token, None)

    def _check_waits(self, patience):
        """Calls of ask() that have waited `patience` seconds: say why, once
        for each kind of call (they wait for the same reason)."""
        self._patience = None
        now = time.monotonic()
        due = {}
        for token, (deadline, target, op) in list(self._asking.items()):
            if deadline <= now:
                due.setdefault(op, []).append(token)
                self._asking[token] = (float('inf'), target, op)     # said, or to be
        for op, tokens in due.items():
            spawn(self._waited, tokens, self._asking[tokens[0]][1], op, patience)
        ahead = [deadline for deadline, _, _ in self._asking.values() if deadline < now + 1e9]
        if ahead and not self._gone:
            self._patience = spawn_later(max(min(ahead) - now, 0), self._check_waits, patience)

    def _waited(self, tokens, target, op, patience):
        """Calls of ask() (`tokens`) have waited `patience` seconds: say why,
        once, if one of them still waits when the scheduler has said."""
        why = self.call(target, WAITING, self._comp_id, timeout=_msg_timeout())
        if any(token in self._asking for token in tokens):
            self.once('%s for computation %x has waited %ss: %s'
                      % (_WAITS.get(op, op), self._comp_id, patience, why))

    def once(self, warning):
        """Log `warning`, unless this computation has logged it already (a
        run_results of a thousand jobs that all wait for the same reason says
        it once, and how many more times it happened at the close)."""
        if warning in self._said:
            self._said[warning] += 1
        else:
            self._said[warning] = 0
            log.warning('%s', warning)

    def _slot(self, rcoro):
        slot = self._results.get(rcoro)
        if slot is None:
            slot = self._results[rcoro] = gevent.event.AsyncResult()
        return slot

    @answers(RESULT, inline=True)
    def result_came(self, rcoro, value):
        slot = self._slot(rcoro)
        if not slot.ready():
            slot.set(value)

    @answers(PING, inline=True)
    def ping(self):
        return 0

    @answers(NOTICE, inline=True)
    def notice(self, text):
        """A scheduler elsewhere says what this program should know (a node
        left out, a server that could not start): one WARNING here too."""
        self.once(text)

    def result(self, rcoro):
        """The value of job `rcoro` (an error once the computation is closed
        or its scheduler gone). Blocks this greenlet until then."""
        slot = self._slot(rcoro)
        if self._gone and not slot.ready():
            slot.set(DiscoroError(self._gone))
        value = slot.get()
        self._results.pop(rcoro, None)
        return value

    def result_then(self, rcoro, then):
        """result() without a wait: ``then(value)``, in the hub, once the
        value came (at once if it has). Does not block."""
        slot = self._slot(rcoro)
        if self._gone and not slot.ready():
            slot.set(DiscoroError(self._gone))

        def came(slot):
            self._results.pop(rcoro, None)
            then(slot.value)
        if slot.ready():
            came(slot)
        else:
            slot.rawlink(came)

    def stop(self, reason='the service stopped'):
        """The computation is closed: results still awaited will not come."""
        for warning, again in self._said.items():
            if again:
                log.warning('(%d more times: %s)', again, warning)
        self._gone = reason
        if self._patience is not None:          # (it would hold this service 10 s more)
            self._patience.kill(block=False)
            self._patience = None
        for slot in self._results.values():
            if not slot.ready():
                slot.set(DiscoroError(reason))
        super().stop(reason)


_WAITS = {SCHEDULE: 'schedule()', RUN: 'a job'}
_PENDING = object()     # a run_results job whose value has not come


def _scheduler_gone(location):
    return 'the scheduler at %s is gone' % location
