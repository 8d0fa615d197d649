"""asyncoro.records: what discoro's parts tell each other and the user.

What it owns: the status messages and records of asyncoro 4.5's discoro
(`DiscoroStatus`, `DiscoroCoroInfo`, `DiscoroNodeInfo`,
`DiscoroNodeAvailInfo`, `DiscoroNodeAllocate`; asyncoro.discoro is their
public home), the bounds of a computation's pulse interval, the errors a
computation gives (`DiscoroError`, `ServerLost`, `DiscoroJobLost`), the
refusal that says "not now" (`Busy`), `Package`: a computation as its
client sends it to the scheduler, and what the scheduler tells monitors
beyond asyncoro 4.5's messages (`StatusDetail`, `JobsWaiting`).
"""

import collections
import re

from asyncoro.disasyncoro import AsyncoroError, Location
from asyncoro.netio import plain_type
from asyncoro.failure import Failure

__all__ = []

MinPulseInterval = 10       # the bounds nodes keep by default (--min/--max_pulse_interval)
MaxPulseInterval = 100
SMALLEST_PULSE_INTERVAL = 1     # what no node goes below, whatever it is told
DEFAULT_NODE_PORT = 51351


class DiscoroError(AsyncoroError):
    """A computation was used wrongly, or cannot go on.

    The message says which and why. Computation raises it for a bad argument or component, or a call on a
    computation that is not scheduled or is closed. run_result* gives one
    (as the value, not raised) for a job whose result cannot come: the
    computation was closed or its scheduler went away.
    """


class ServerLost(DiscoroError):
    """A job's server closed or died under it.

    The base of DiscoroJobLost, which is what run_result* gives for such a
    job.
    """


class DiscoroJobLost(ServerLost):
    """A job lost with its server.

    The server's process died, its node went silent or ended the
    computation, or the computation was closed under it. It is the value of
    the job's end, as in
    ``MonitorException(rcoro, (Scheduler.ServerClosed, DiscoroJobLost(...)))``
    (asyncoro 4.5 sent None there), and what run_result* gives for the job
    (not raised). `str()` gives all of it in words.

    :param server: the server's Location (the attribute `server`).
    :param cause: what happened, in words (the attribute `cause`).
    :param attempts: for a job that was run again (Computation's
        `retry_lost`) and lost each time, the DiscoroJobLost of each earlier
        attempt (the attribute `attempts`, a tuple).
    :param code: what happened, as a code (the attribute `code`): ``'died'``
        (the server's process died), ``'disconnected'`` (its connection was
        lost), ``'silent'`` (its node sent no pulse for 5 pulse intervals),
        ``'node ended'`` (its node ended its part: it quit, its service window
        ended, it was left out), ``'closed'`` (the computation was closed);
        None when not known. The first three are losses, the others closes.
    """

    def __init__(self, server, cause, attempts=(), code=None):
        text = 'job lost with server %s: %s' % (server, cause)
        if attempts:
            text += ' (run %d times; before: %s)' % (len(attempts) + 1, '; '.join(
                '%s: %s' % (lost.server, lost.cause) for lost in attempts))
        super().__init__(text, server, cause, tuple(attempts))
        self.server = server
        self.cause = cause
        self.attempts = tuple(attempts)     # the DiscoroJobLost of each earlier attempt
        self.code = code

    def __reduce__(self):
        return (DiscoroJobLost, (self.server, self.cause, self.attempts, self.code))

    def __str__(self):
        return self.args[0]


class Busy(Failure):
    """A refusal that says: not now. A node busy with another computation
    or out of its service window, a server whose node drains: the
    scheduler waits for another chance rather than giving up."""


# ---------------------------------------------------------------- status and data

DiscoroStatus = collections.namedtuple('DiscoroStatus', ['status', 'info'])
DiscoroStatus.__doc__ = """A status message for a computation's status_coro: `status` is one of
the Scheduler's status codes (``Scheduler.NodeDiscovered`` ...), `info` what
it is about: a DiscoroNodeInfo for a node, a server's Location, a
DiscoroCoroInfo for CoroCreated, the computation's id for ComputationClosed."""
DiscoroCoroInfo = collections.namedtuple('DiscoroCoroInfo', ['coro', 'args', 'kwargs',
                                                             'start_time'])
DiscoroCoroInfo.__doc__ = """A job that started (the info of CoroCreated): its remote `coro`, its
`args` (a tuple) and `kwargs` (a dict), and `start_time` (time.time())."""
CoroInfo = DiscoroCoroInfo


class DiscoroNodeAvailInfo:
    """What a node has free, as its last report said.

    :param location: the node process's Location.
    :param cpu: percent of CPU idle.
    :param memory: bytes of memory available.
    :param disk: bytes free where the node keeps files.
    :param swap: percent of swap free.
    :param processes: one dict per server process the node runs (None when
        not measured): ``'location'`` (the server's Location), ``'pid'``,
        ``'cpu'`` (percent of one CPU used since the node's last report, or
        since the process started at the first; None if unknown) and
        ``'rss'`` (resident bytes). The web monitor shows them.

    The attributes have the parameters' names. The figures are None where
    psutil cannot tell.
    """

    __slots__ = ('location', 'cpu', 'memory', 'disk', 'swap', 'processes')

    def __init__(self, location, cpu, memory, disk, swap, processes=None):
        self.location = location
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
        self.swap = swap
        self.processes = processes

    def __reduce__(self):
        args = (self.location, self.cpu, self.memory, self.disk, self.swap)
        if self.processes is not None:      # five arguments otherwise, as before
            args += (self.processes,)
        return (DiscoroNodeAvailInfo, args)

    def __repr__(self):
        return ('DiscoroNodeAvailInfo(%s, cpu=%s, memory=%s, disk=%s, swap=%s%s)'
                % (self.location, self.cpu, self.memory, self.disk, self.swap,
                   '' if self.processes is None else ', %d processes' % len(self.processes)))


class DiscoroNodeInfo(collections.namedtuple('DiscoroNodeInfo',
                                             ['name', 'addr', 'cpus', 'platform', 'avail_info'])):
    """A node as the scheduler sees it.

    Its `name`, its IP address `addr`, `cpus` (the servers it runs),
    `platform` (``platform.platform()`` there, in lower case) and its last
    `avail_info` (DiscoroNodeAvailInfo). The properties `location`, `cpu`,
    `memory`, `disk` and `swap` read avail_info (None when there is none).
    """

    __slots__ = ()

    #: The node process's Location (``avail_info.location``); None without
    #: avail_info.
    location = property(lambda self: self.avail_info.location if self.avail_info else None)
    #: Percent of the node's CPU idle (``avail_info.cpu``); None without
    #: avail_info.
    cpu = property(lambda self: self.avail_info.cpu if self.avail_info else None)
    #: Bytes of memory available (``avail_info.memory``); None without
    #: avail_info.
    memory = property(lambda self: self.avail_info.memory if self.avail_info else None)
    #: Bytes of disk free (``avail_info.disk``); None without avail_info.
    disk = property(lambda self: self.avail_info.disk if self.avail_info else None)
    #: Percent of swap free (``avail_info.swap``); None without avail_info.
    swap = property(lambda self: self.avail_info.swap if self.avail_info else None)


class DiscoroNodeAllocate:
    """A rule saying which nodes a computation uses, and how many of their
    servers (Computation's `node_allocations` is a list of them: the first
    rule that applies to a node decides; with none, all its servers).

    :param node: a host name, an IP address or a pattern with ``*``
        (``'192.168.1.*'``, ``'*'``); the whole address must match. (In
        asyncoro 4.5 it was a regular expression.)
    :param platform: a regular expression searched (ignoring case) in the
        node's platform string ('' matches any).
    :param cpus: how many of the node's servers to use. More than 0: that
        many (a node that has fewer is not used). 0, the default: none, so
        the rule *excludes* the nodes it matches, as asyncoro 4.5's code
        does. Less than 0: all the node's servers but that many. None: all
        its servers (this package's addition; asyncoro 4.5 has no way to
        say it).
    :param memory: the bytes of memory the node must have free; a node
        with less is not used.
    :param disk: the bytes of disk the node must have free; a node with
        less is not used.
    :raises TypeError: if `node` is not a string, or `cpus` is neither a
        number nor None.
    :raises ValueError: if `node` looks like a regular expression (asyncoro
        4.5's manual asked for one; its code, as this one, matched ``*``
        only, so such a rule matched no node).

    For example, ``DiscoroNodeAllocate('*', memory=4 * 1024**3, cpus=None)``
    uses every server of each node with 4 GiB free and no other node.
    Subclasses may override :meth:`allocate`.
    """

    def __init__(self, node, platform='', cpus=0, memory=0, disk=0):
        if not isinstance(node, str) or not node:
            raise TypeError('DiscoroNodeAllocate node must be a host, an IP address or a '
                            'pattern such as "192.168.1.*", not %r' % (node,))
        if cpus is not None:
            try:
                cpus = int(cpus)
            except (TypeError, ValueError):
                raise TypeError('DiscoroNodeAllocate cpus must be a number of servers (0 '
                                'excludes the nodes; less than 0, all their servers but that '
                                'many) or None (all their servers), not %r' % (cpus,)) from None
        if re.search(r'[\\^$\[\](){}+?|]', node):
            raise ValueError('DiscoroNodeAllocate node %r looks like a regular expression; it '
                             'is a host, an IP address or a pattern where * is the only '
                             'wildcard, such as "192.168.1.*"' % (node,))
        if '*' not in node and not re.fullmatch(r'[0-9a-fA-F.:]+', node):
            node = Location(node, 0).addr        # a host name: its address
        self.node = node
        self.ip_rex = re.compile('^' + re.escape(node).replace(r'\*', '.*') + '$')
        self.platform = re.compile(platform, re.IGNORECASE) if platform else None
        self.cpus = cpus
        self.memory = memory or 0
        self.disk = disk or 0

    def allocate(self, ip_addr, name, platform, cpus, memory, disk):
        """How many servers of this node to use.

        :param ip_addr: the node's IP address.
        :param name: its name.
        :param platform: its platform string (``platform.platform()`` there).
        :param cpus: how many servers it runs.
        :param memory: its bytes of memory available (None: unknown).
        :param disk: its bytes of disk free (None: unknown).
        :returns: more than 0, that many; 0, not this node; less than 0,
            this rule does not apply (the next one is asked).
        """
        if not self.ip_rex.match(ip_addr):
            return -1
        if self.platform is not None and not self.platform.search(platform or ''):
            return -1
        if (self.memory and memory is not None and memory < self.memory) or \
                (self.disk and disk is not None and disk < self.disk):
            return 0
        if self.cpus is None:
            return cpus
        if self.cpus > 0:
            return self.cpus if cpus >= self.cpus else 0
        if self.cpus == 0:
            return 0
        return max(cpus + self.cpus, 0)

    def __repr__(self):
        return 'DiscoroNodeAllocate(%r, cpus=%r)' % (self.node, self.cpus)


def servers_for(allocations, info):
    """How many servers of the node `info` a computation uses (the first
    rule that applies decides; with none, all of them)."""
    avail = info.avail_info
    for rule in allocations:
        n = rule.allocate(info.addr, info.name, info.platform, info.cpus,
                          avail.memory if avail else None, avail.disk if avail else None)
        if n >= 0:
            return min(n, info.cpus)
    return info.cpus


class Package:
    """A computation as its client sends it to the scheduler (pickled when
    the scheduler is in another process): what it is, not how it goes."""

    def __init__(self, comp_id, code, files, pulse_interval, allocations, status_coro,
                 node_setup, server_setup, disable_nodes, disable_servers, peers_communicate,
                 client, client_location, public_id, retry_lost=0, status_details=False):
        self.id = comp_id
        self.code = code
        self.files = files
        self.pulse_interval = pulse_interval
        self.allocations = allocations
        self.status_coro = status_coro
        self.node_setup = node_setup
        self.server_setup = server_setup
        self.disable_nodes = disable_nodes
        self.disable_servers = disable_servers
        self.peers_communicate = peers_communicate
        self.client = client
        self.client_location = client_location
        self.public_id = public_id          # id(computation), for ComputationClosed
        self.retry_lost = retry_lost        # how often a lost CPU job is run again
        self.status_details = status_details    # status_coro takes StatusDetail, JobsWaiting


class StatusDetail(collections.namedtuple('StatusDetail', 'status subject code text')):
    """For monitors (a watcher, or a status_coro that asked for them): why
    the node or server of the DiscoroStatus(`status`, `subject`) just sent
    went, as a `code` (DiscoroJobLost's codes; ``'setup failed'``, ``'not
    started'``) and a `text`. Not an asyncoro 4.5 message."""
    __slots__ = ()


class JobsWaiting(collections.namedtuple('JobsWaiting', 'computation count')):
    """For monitors: how many jobs of the computation wait for a server now.
    Not an asyncoro 4.5 message."""
    __slots__ = ()


# The records sent on every job's start and every node's pulse pickle by name
# and carry plain data: the plain pickler writes them (cloudpickle's bytes,
# several times faster), when their parts are plain.
for _record in (DiscoroStatus, DiscoroCoroInfo, DiscoroNodeInfo, StatusDetail, JobsWaiting):
    plain_type(_record, tuple)
# (a node's figures: numbers and Locations by construction, so not looked into)
plain_type(DiscoroNodeAvailInfo)


def upload_dir(comp_id):
    """Where a scheduler program keeps a computation's files (under its dest_path)."""
    return 'computation-%x' % comp_id


class JobNotCreated(Failure):
    """The failure of a job its server could not create (its code did not
    run, its name is not defined, its arguments do not fit): `error` is the
    exception type and `traceback` the server's traceback text."""
