"""asyncoro.schedstate: what the scheduler knows, without processes.

A table test for every move the state tables allow (each row: a node,
server, job or computation in a state, a stimulus, the state it goes to and
the effects it must give), the moves it refuses, the scenarios of the three
faults that were bugs of the old scheduler (a busy node, a call on a node
that has gone, a server that cannot start), and a randomized test
(hypothesis' stateful testing) that drives the state with long random
sequences of stimuli, late and stale answers included, and checks the
invariants after each.
"""

import collections

import pytest

from asyncoro import schedstate as st
from asyncoro.schedstate import CompState as C, JobState as J, NodeState as N
from asyncoro.schedstate import ServerState as S

Info = collections.namedtuple('Info', 'name addr')
ADDRS = ('10.0.0.1', '10.0.0.2', '10.0.0.3')


def key(addr):
    return ('node', addr)


class Harness:
    """A SchedState, and what a shell would do with its effects: the calls
    it has made and not yet had answered, the answers given to run()."""

    def __init__(self, **flags):
        self.s = st.SchedState()
        self.flags = flags
        self.now = 0.0
        self.effects = []           # every effect so far
        self.asked = {}             # (tag, addr) -> part: node calls made, unanswered
        self.starts = {}            # job id -> (server location, token): START made
        self.setups = set()         # server locations asked to run server_setup
        self.answers = {}           # job id -> outcome its run() got
        self.ended = {}             # job id -> (msg, lost) of its end
        self.ports = iter(range(9000, 99999))
        self.rcoros = iter(range(1, 10 ** 9))

    def do(self, stimulus, *args):
        """Feed one stimulus; the tags of its effects."""
        result = stimulus(*args)
        effects = self.s.take()
        for effect in effects:
            self._record(effect)
        self.effects += effects
        self.last = result
        return [effect[0] for effect in effects]

    def _record(self, effect):
        tag = effect[0]
        if tag in (st.RESERVE, st.SEND_FILES, st.SET_UP):
            self.asked[tag, effect[1].addr] = effect[2]
        elif tag == st.START:
            job, server, token = effect[1:]
            self.starts[job.id] = (server.location, token)
        elif tag == st.SERVER_SETUP:
            self.setups.add(effect[1].location)
        elif tag == st.ANSWER or (tag == st.CREATED and effect[2]):
            job = effect[1]
            assert job.id not in self.answers, 'run() answered twice: %s' % job
            self.answers[job.id] = job.outcome
        elif tag == st.ENDED:
            job = effect[1]
            assert job.id not in self.ended, 'a job ended twice: %s' % job
            self.ended[job.id] = effect[2:]

    # ---------------- building a scene

    def begin(self, **flags):
        comp = st.Comp(1, 10, **dict(self.flags, **flags))
        return self.do(self.s.begin, comp, lambda node: node.cpus or 2)

    def tags(self, func, *args):
        """Run `func(*args)`: the tags of the effects of every stimulus it fed."""
        mark = len(self.effects)
        func(*args)
        return [effect[0] for effect in self.effects[mark:]]

    def find(self, addr, cpus=2):
        self.do(self.s.cluster.peer_online, key(addr))
        return self.do(self.s.cluster.probe_done, key(addr), addr, Info('box', addr),
                       'coro-' + addr, cpus)

    def part(self, tag, addr):
        return self.asked.pop((tag, addr))

    def node_call_done(self, tag, addr, part):
        """The node did what the call `tag` asked (reserve, files, setup)."""
        cluster = self.s.cluster
        if tag == st.RESERVE:
            self.do(cluster.node_reserved, addr, part, 10, self.now)
        elif tag == st.SEND_FILES:
            self.do(cluster.files_sent, addr, part)
        else:
            self.do(cluster.node_set_up, addr, part, self.now)

    def reserve(self, addr):
        return self.do(self.s.cluster.node_reserved, addr, self.part(st.RESERVE, addr), 10,
                       self.now)

    def files(self, addr):
        return self.do(self.s.cluster.files_sent, addr, self.part(st.SEND_FILES, addr))

    def set_up(self, addr):
        return self.do(self.s.cluster.node_set_up, addr, self.part(st.SET_UP, addr), self.now)

    def server(self, addr):
        location = (addr, next(self.ports))
        self.do(self.s.cluster.server_up, addr, self.node(addr).part, location, 'srv')
        return location

    def up(self, addr, servers=2):
        """Node `addr` found, set up, with `servers` ready servers."""
        if addr not in self.s.cluster.nodes:
            self.find(addr, servers)
        self.reserve(addr)
        self.files(addr)
        self.set_up(addr)
        return [self.server(addr) for _ in range(servers)]

    def node(self, addr):
        return self.s.cluster.nodes[addr]

    def job(self, kind=st.CPU, where=None, want_result=True):
        job = self.s.work.new_job(kind, where, want_result, ('f', None, (), {}))
        return job, self.do(self.s.work.ask, job)

    def start(self, job):
        """The server started `job` (its latest START)."""
        location, token = self.starts[job.id]
        rcoro = ('rcoro', next(self.rcoros))
        return rcoro, self.do(self.s.work.job_started, job.id, token, rcoro)

    def running(self, kind=st.CPU, where=None):
        job, _ = self.job(kind, where)
        rcoro, _ = self.start(job)
        return job, rcoro


def tags_of(effects, tag):
    return [effect for effect in effects if effect[0] == tag]


# ================================================================ the table of moves
# Each row: (what, from, to, scene): `scene(h)` builds the thing in state
# `from` and returns (the thing, a function that feeds the stimulus); the
# row checks the state after, and the effects it names.

def _node_in(state, **flags):
    """A harness with node ADDRS[0] in `state` (and a computation running,
    except for IDLE and LOST/REJOINING with none)."""
    h = Harness(**flags)
    addr = ADDRS[0]
    if state in (N.IDLE, N.LOST, N.REJOINING):
        h.find(addr)
        if state is not N.IDLE:
            h.do(h.s.cluster.node_gone, key(addr), 'cut off')
            h.begin()
            if state is N.REJOINING:
                h.do(h.s.tick, 1.0)
        return h, h.node(addr)
    h.begin()
    h.find(addr, 0 if state is N.UNUSED else 2)
    node = h.node(addr)
    if state in (N.RESERVING, N.UNUSED):
        return h, node
    if state is N.WAITING:
        h.do(h.s.cluster.node_refused, addr, h.part(st.RESERVE, addr), 'it is busy', False)
        return h, node
    if state is N.LEFT_OUT:
        h.do(h.s.cluster.node_refused, addr, h.part(st.RESERVE, addr), 'bad secret', True)
        return h, node
    h.reserve(addr)
    if state is N.SENDING:
        return h, node
    if state is N.ENABLING:
        h.s.comp.disable_nodes = True
        h.files(addr)
        return h, node
    h.files(addr)
    if state is N.SETTING_UP:
        return h, node
    h.set_up(addr)
    h.server(addr)
    if state is N.DRAINING:
        h.do(h.s.cluster.node_draining, addr)
    return h, node


def _close(h):
    """The computation closes: the effects of all three steps."""
    return (h.do(h.s.closing, 'closed by its client') + h.do(h.s.end, 'closed by its client') +
            h.do(h.s.closed))


NODE_ROWS = [
    # from, stimulus, to, effects it must give
    (N.IDLE, lambda h, n: h.begin(), N.RESERVING, {st.RESERVE}),
    (N.IDLE, lambda h, n: h.do(h.s.begin, st.Comp(2, 10), lambda node: 0), N.UNUSED, set()),
    (N.IDLE, lambda h, n: h.do(h.s.cluster.node_gone, n.key, 'gone'), N.LOST, set()),
    (N.RESERVING, lambda h, n: h.reserve(n.addr), N.SENDING, {st.STATUS, st.SEND_FILES}),
    (N.RESERVING, lambda h, n: h.do(h.s.cluster.node_refused, n.addr, n.part, 'busy', False),
     N.WAITING, {st.LOG}),
    (N.RESERVING, lambda h, n: h.do(h.s.cluster.node_refused, n.addr, n.part, 'no', True),
     N.LEFT_OUT, {st.LOG}),
    (N.RESERVING, lambda h, n: h.do(h.s.cluster.node_unreachable, n.addr, n.part, 'gone'),
     N.LOST, {st.LOG}),
    (N.RESERVING, lambda h, n: _close(h), N.IDLE, {st.RELEASE}),
    (N.SENDING, lambda h, n: h.files(n.addr), N.SETTING_UP, {st.SET_UP}),
    (N.SENDING, lambda h, n: (setattr(h.s.comp, 'disable_nodes', True), h.files(n.addr))[1],
     N.ENABLING, set()),
    (N.SENDING, lambda h, n: h.do(h.s.cluster.node_refused, n.addr, n.part, 'file too big'),
     N.LEFT_OUT, {st.LOG, st.CLOSE_NODE, st.STATUS}),
    (N.SENDING, lambda h, n: h.do(h.s.cluster.node_gone, n.key, 'gone'), N.LOST,
     {st.LOG, st.STATUS}),
    (N.SENDING, lambda h, n: _close(h), N.IDLE, {st.RELEASE}),
    (N.ENABLING, lambda h, n: h.do(h.s.cluster.enable_node, n.addr, (1,)), N.SETTING_UP,
     {st.SET_UP}),
    (N.ENABLING, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'quit', True, False),
     N.LEFT_OUT, {st.LOG, st.STATUS}),
    (N.ENABLING, lambda h, n: h.do(h.s.cluster.node_gone, n.key, 'gone'), N.LOST, {st.LOG}),
    (N.ENABLING, lambda h, n: _close(h), N.IDLE, {st.RELEASE}),
    (N.SETTING_UP, lambda h, n: h.set_up(n.addr), N.UP, {st.STATUS}),
    (N.SETTING_UP, lambda h, n: h.do(h.s.cluster.node_draining, n.addr), N.DRAINING, set()),
    (N.SETTING_UP, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'window', False, False),
     N.WAITING, {st.LOG, st.STATUS}),
    (N.SETTING_UP, lambda h, n: h.do(h.s.cluster.node_refused, n.addr, n.part,
                                     'node_setup failed'), N.LEFT_OUT, {st.CLOSE_NODE}),
    (N.SETTING_UP, lambda h, n: h.do(h.s.cluster.node_unreachable, n.addr, n.part, 'gone'),
     N.LOST, {st.LOG}),
    (N.SETTING_UP, lambda h, n: _close(h), N.IDLE, {st.RELEASE}),
    (N.UP, lambda h, n: h.do(h.s.cluster.node_draining, n.addr), N.DRAINING, set()),
    (N.UP, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'window ended', False, False),
     N.WAITING, {st.STATUS}),
    (N.UP, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'it quits', True, False),
     N.LEFT_OUT, {st.STATUS}),
    (N.UP, lambda h, n: h.do(h.s.tick, 51.0), N.LOST, {st.LOG, st.STATUS}),
    (N.UP, lambda h, n: _close(h), N.IDLE, {st.RELEASE, st.STATUS}),
    (N.DRAINING, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'window', False, False),
     N.WAITING, {st.STATUS}),
    (N.DRAINING, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'quits', True, False),
     N.LEFT_OUT, {st.STATUS}),
    (N.DRAINING, lambda h, n: h.do(h.s.cluster.node_gone, n.key, 'gone'), N.LOST,
     {st.STATUS}),
    (N.DRAINING, lambda h, n: _close(h), N.IDLE, {st.RELEASE}),
    (N.WAITING, lambda h, n: h.do(h.s.cluster.node_available, n.addr, n.key, n.coro, 2),
     N.RESERVING, {st.RESERVE}),
    (N.WAITING, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'quits', True, False),
     N.LEFT_OUT, {st.LOG}),
    (N.WAITING, lambda h, n: h.do(h.s.cluster.node_gone, n.key, 'gone'), N.LOST, set()),
    (N.WAITING, lambda h, n: _close(h), N.IDLE, set()),
    (N.UNUSED, lambda h, n: _close(h), N.IDLE, set()),
    (N.LEFT_OUT, lambda h, n: _close(h), N.IDLE, set()),
    (N.LOST, lambda h, n: h.do(h.s.tick, 1.0), N.REJOINING, {st.REJOIN}),
    (N.LOST, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'quits', True, False),
     N.LEFT_OUT, {st.LOG}),
    (N.LOST, lambda h, n: h.do(h.s.cluster.probe_done, ('node', 'new'), n.addr, n.info,
                               'coro2', 0), N.UNUSED, set(), (N.IDLE,)),
    (N.REJOINING, lambda h, n: h.do(h.s.cluster.rejoin_failed, n.addr), N.LOST, set()),
    (N.REJOINING, lambda h, n: h.do(h.s.cluster.node_closed, n.addr, 'quits', True, False),
     N.LEFT_OUT, {st.LOG}),
    (N.REJOINING, lambda h, n: h.do(h.s.cluster.rejoined, n.addr, ('node', 'new'), n.info,
                                    'coro2', 2), N.RESERVING, {st.RESERVE}, (N.IDLE,)),
]


def _moves(rows):
    """The moves the rows make: from, through the states a row names as
    passed on its way (a node back from LOST is IDLE, then at once
    RESERVING), to."""
    moves = set()
    for row in rows:
        path = (row[0],) + (row[4] if len(row) > 4 else ()) + (row[2],)
        moves.update(zip(path, path[1:]))
    return moves


def _rows(rows):
    """The rows for parametrize: (from, stimulus, to, effects)."""
    return [row[:4] for row in rows]


@pytest.mark.parametrize('start, stimulus, end, effects', _rows(NODE_ROWS),
                         ids=['%s-%s' % (r[0].name, r[2].name) for r in NODE_ROWS])
def test_each_node_move(start, stimulus, end, effects):
    h, node = _node_in(start)
    assert node.state is start
    h.s.check()
    tags = stimulus(h, node)
    assert h.s.cluster.nodes[node.addr].state is end
    assert effects <= set(tags), (effects, tags)
    h.s.check()


def test_the_node_rows_make_every_move_the_table_allows():
    allowed = {(a, b) for a, targets in st.NODE_MOVES.items() for b in targets}
    assert _moves(NODE_ROWS) == allowed


def _server_in(state, **flags):
    h = Harness(**flags)
    h.begin()
    addr = ADDRS[0]
    h.find(addr)
    h.reserve(addr)
    h.files(addr)
    h.set_up(addr)
    if state is S.READY:
        return h, h.s.cluster.servers[h.server(addr)]
    h.s.comp.disable_servers = state is S.ENABLING
    h.s.comp.server_setup = True
    return h, h.s.cluster.servers[h.server(addr)]


SERVER_ROWS = [
    (S.ENABLING, lambda h, v: h.do(h.s.cluster.enable_server, v.location, ()), S.SETTING_UP,
     {st.SERVER_SETUP}),
    (S.ENABLING, lambda h, v: (setattr(h.s.comp, 'server_setup', False),
                               h.do(h.s.cluster.enable_server, v.location, ()))[1], S.READY,
     {st.STATUS}),
    (S.ENABLING, lambda h, v: h.do(h.s.cluster.server_gone, v.location, st.DIED, 'died'),
     S.GONE, {st.STATUS}),
    (S.SETTING_UP, lambda h, v: h.do(h.s.cluster.server_set_up, v.location, 0), S.READY,
     {st.STATUS}),
    (S.SETTING_UP, lambda h, v: h.do(h.s.cluster.server_set_up, v.location, 1), S.GONE,
     {st.LOG, st.CLOSE_SERVER, st.STATUS}),
    (S.READY, lambda h, v: h.do(h.s.cluster.server_gone, v.location, st.DIED, 'died'),
     S.GONE, {st.STATUS}),
]


@pytest.mark.parametrize('start, stimulus, end, effects', SERVER_ROWS,
                         ids=['%s-%s' % (r[0].name, r[2].name) for r in SERVER_ROWS])
def test_each_server_move(start, stimulus, end, effects):
    h, server = _server_in(start)
    assert server.state is start
    tags = stimulus(h, server)
    assert server.state is end
    assert (server.location in h.s.cluster.servers) == (end is not S.GONE)
    assert effects <= set(tags), (effects, tags)
    h.s.check()


def test_the_server_rows_make_every_move_the_table_allows():
    allowed = {(a, b) for a, targets in st.SERVER_MOVES.items() for b in targets}
    assert _moves(SERVER_ROWS) == allowed


def _job_in(state):
    """A harness, two nodes of one server each (retry_lost 1), and a CPU
    job in `state` (RETRYING: with no free server to run again on)."""
    h = Harness(retry_lost=1)
    h.begin()
    first = h.up(ADDRS[0], 1)[0]
    if state is J.WAITING:
        h.running()                         # the only server busy
        job, _ = h.job()
        return h, job
    job, _ = h.job()
    if state is J.STARTING:
        return h, job
    h.start(job)
    if state is J.RETRYING:
        h.do(h.s.cluster.server_gone, first, st.DIED, 'died')
    return h, job


JOB_ROWS = [
    (None, lambda h, j: h.job()[1], J.WAITING, set()),
    (J.WAITING, lambda h, j: h.tags(h.up, ADDRS[1], 1), J.STARTING, {st.START}),
    (J.WAITING, lambda h, j: _close(h), J.ENDED, {st.ANSWER}),
    (J.STARTING, lambda h, j: h.start(j)[1], J.RUNNING, {st.CREATED}),
    (J.STARTING, lambda h, j: h.do(h.s.cluster.node_draining, ADDRS[0]) + h.do(
        h.s.work.job_not_started, j.id, j.token, 'draining', False), J.WAITING, {st.WAITING}),
    (J.STARTING, lambda h, j: h.do(h.s.cluster.server_gone, j.server.location, st.DIED,
                                   'died'), J.RETRYING, {st.LOG}),
    (J.STARTING, lambda h, j: h.do(h.s.work.job_not_started, j.id, j.token, 'no such job'),
     J.ENDED, {st.ANSWER}),
    (J.RUNNING, lambda h, j: h.do(h.s.cluster.server_gone, j.server.location, st.DIED,
                                  'died'), J.RETRYING, {st.LOST_TRY}),
    (J.RUNNING, lambda h, j: h.do(h.s.work.job_ended, j.rcoro, 'its end'), J.ENDED,
     {st.ENDED}),
    (J.RETRYING, lambda h, j: h.tags(h.up, ADDRS[1], 1), J.STARTING, {st.START}),
    (J.RETRYING, lambda h, j: _close(h), J.ENDED, {st.ENDED}),
]


@pytest.mark.parametrize('start, stimulus, end, effects', JOB_ROWS,
                         ids=['%s-%s' % (r[0] and r[0].name, r[2].name) for r in JOB_ROWS])
def test_each_job_move(start, stimulus, end, effects):
    if start is None:
        h, job = Harness(), None
        h.begin()
        tags = stimulus(h, job)
        job = h.s.work.jobs[1]
    else:
        h, job = _job_in(start)
        assert job.state is start
        tags = stimulus(h, job)
    assert job.state is end
    assert effects <= set(tags), (effects, tags)
    h.s.check()


def test_the_job_rows_make_every_move_the_table_allows():
    allowed = {(a, b) for a, targets in st.JOB_MOVES.items() for b in targets}
    assert _moves(JOB_ROWS) == allowed


def test_each_computation_move_and_the_refused_ones():
    h = Harness()
    h.begin()
    assert h.s.comp.state is C.RUNNING
    h.do(h.s.closing, 'by its client')
    assert h.s.comp.state is C.CLOSING
    comp = h.s.comp
    h.do(h.s.end, 'by its client')
    assert comp.state is C.ENDING
    tags = h.do(h.s.closed)
    assert comp.state is C.CLOSED and h.s.comp is None and st.STATUS in tags
    h.begin()
    with pytest.raises(st.StateError, match='running -> ending'):
        h.s.end('the computation must be closing first')
    allowed = {(a, b) for a, targets in st.COMP_MOVES.items() for b in targets}
    assert allowed == {(C.RUNNING, C.CLOSING), (C.CLOSING, C.ENDING), (C.ENDING, C.CLOSED)}


def test_a_move_the_tables_do_not_allow_is_refused():
    h, node = _node_in(N.UP)
    with pytest.raises(st.StateError, match='up -> reserving'):
        h.s.cluster._node_to(node, N.RESERVING)
    job, _ = h.running()
    with pytest.raises(st.StateError, match='running -> waiting'):
        h.s.work._job_to(job, J.WAITING)
    server = next(iter(h.s.cluster.servers.values()))
    with pytest.raises(st.StateError, match='ready -> setting up'):
        h.s.cluster._server_to(server, S.SETTING_UP)


# ================================================================ the faults of issue 21

def test_a_busy_node_is_waited_for_and_the_job_runs_when_it_is_free():
    h = Harness()
    h.begin()
    h.find(ADDRS[0])
    job, tags = h.job()
    assert job.state is J.WAITING and st.ANSWER not in tags
    # "busy with another computation" is a reason to wait, not to fail
    tags = h.do(h.s.cluster.node_refused, ADDRS[0], h.part(st.RESERVE, ADDRS[0]),
                'it refused: it is busy with computation 5', False)
    assert st.ANSWER not in tags and job.state is J.WAITING
    assert h.node(ADDRS[0]).state is N.WAITING
    assert any('is busy with computation 5' in part for part in h.s.why_waiting())
    # the other computation ends there: the node says it is available
    node = h.node(ADDRS[0])
    h.do(h.s.cluster.node_available, ADDRS[0], node.key, node.coro, 2)
    h.reserve(ADDRS[0])
    h.files(ADDRS[0])
    h.set_up(ADDRS[0])
    h.server(ADDRS[0])
    assert job.state is J.STARTING
    h.start(job)
    assert isinstance(h.answers[job.id], tuple) and h.answers[job.id][0] == 'rcoro'
    h.s.check()


def test_a_lasting_refusal_of_every_node_fails_the_waiting_job_at_once():
    h = Harness()
    h.begin()
    h.find(ADDRS[0])
    job, _ = h.job()
    h.do(h.s.cluster.node_refused, ADDRS[0], h.part(st.RESERVE, ADDRS[0]), 'wrong secret')
    assert job.state is J.ENDED
    assert 'no node can run it: node %s: wrong secret' % ADDRS[0] in h.answers[job.id].reason


@pytest.mark.parametrize('kind', [st.CPU, st.ASYNC])
def test_a_job_bound_to_a_node_that_goes_silent_ends_when_the_node_is_lost(kind):
    h = Harness()
    h.begin()
    h.up(ADDRS[0], 2)
    h.up(ADDRS[1], 1)
    h.now = 2.0      # cut off: it pulses no more; a job is sent there, its start not answered
    job, _ = h.job(kind, where=ADDRS[0])
    assert job.state is J.STARTING and job.id not in h.answers
    h.do(h.s.tick, 40.0)             # not silent for 5 pulse intervals yet
    assert job.state is J.STARTING
    tags = h.do(h.s.tick, 51.0)
    assert h.node(ADDRS[0]).state is N.LOST
    lost = h.answers[job.id]
    assert isinstance(lost, st.Lost) and lost.code == st.SILENT and 'no pulse' in lost.cause
    assert job.state is J.ENDED and st.ANSWER in tags
    # its start's answer coming after all: the job it started is terminated
    location, token = h.starts[job.id]
    assert h.do(h.s.work.job_started, job.id, token, ('rcoro', 'late')) == [st.TERMINATE]
    h.s.check()


def test_a_server_that_could_not_start_is_said_to_the_client_and_the_monitors():
    h = Harness()
    h.begin()
    h.find(ADDRS[0])
    h.reserve(ADDRS[0])
    h.files(ADDRS[0])
    node = h.node(ADDRS[0])
    tags = h.do(h.s.cluster.server_failed, ADDRS[0], node.part, 2, (ADDRS[0], 9002),
                'server 2: [Errno 98] Address already in use')
    assert tags == [st.LOG, st.STATUS]
    log, status = h.effects[-2:]
    assert log[1] == 'warning' and log[3] is True        # the client is told too
    assert 'server 2 of node %s could not start' % ADDRS[0] in log[2]
    assert status[1:4] == ('ServerIgnore', (ADDRS[0], 9002), st.NOT_STARTED)
    assert 'Address already in use' in ' '.join(h.s.why_waiting())


# ================================================================ more orderings

def test_a_lost_job_runs_again_once_and_its_run_is_answered_once():
    h = Harness(retry_lost=1)
    h.begin()
    first = h.up(ADDRS[0], 1)[0]
    h.up(ADDRS[1], 1)
    job, rcoro = h.running()
    busy = h.s.cluster.servers[first] if job.server.location == first else None
    location = job.server.location
    tags = h.do(h.s.cluster.server_gone, location, st.DIED, 'its process died')
    assert st.LOST_TRY in tags and st.START in tags and job.state is J.STARTING
    assert job.attempts == (st.Lost(location, st.DIED, 'its process died'),)
    assert busy is None or busy.state is S.GONE
    second, _ = h.start(job)
    assert h.answers[job.id] == rcoro           # its run() was answered once, by the first
    assert job.origin == rcoro                  # its result goes to the first start
    h.do(h.s.cluster.server_gone, job.server.location, st.DIED, 'died again')
    msg, lost = h.ended[job.id]
    assert msg is None and lost.cause == 'died again' and job.attempts[0].code == st.DIED


def test_an_end_before_the_start_answer_and_a_late_end_of_a_lost_job():
    h = Harness()
    h.begin()
    h.up(ADDRS[0], 1)
    job, _ = h.job()
    location, token = h.starts[job.id]
    h.do(h.s.work.job_ended, ('rcoro', 'r1'), 'its end')       # overtook the start's answer
    assert job.state is J.STARTING
    tags = h.do(h.s.work.job_started, job.id, token, ('rcoro', 'r1'))
    assert tags[:2] == [st.CREATED, st.ENDED] and job.state is J.ENDED and job.id in h.answers
    other, rcoro = h.running()
    h.do(h.s.cluster.server_gone, other.server.location, st.DISCONNECTED, 'gone')
    tags = h.do(h.s.work.job_ended, rcoro, 'its real end, too late')
    assert tags == [st.LOG]                 # old news: not a second end
    assert rcoro not in h.s.work.early


def test_a_job_refused_by_a_draining_server_waits_for_another():
    h = Harness()
    h.begin()
    h.up(ADDRS[0], 1)
    job, _ = h.job()
    h.do(h.s.cluster.node_draining, ADDRS[0])
    tags = h.do(h.s.work.job_not_started, job.id, job.token, 'draining', False)
    assert job.state is J.WAITING and st.ANSWER not in tags
    h.up(ADDRS[1], 1)
    assert job.state is J.STARTING and h.starts[job.id][0][0] == ADDRS[1]


def test_a_job_for_one_server_waits_for_it_and_fails_when_it_goes():
    h = Harness()
    h.begin()
    location = h.up(ADDRS[0], 1)[0]
    h.running(where=location)
    job, _ = h.job(where=location)
    assert job in h.s.cluster.servers[location].waiting
    h.do(h.s.cluster.server_gone, location, st.DISCONNECTED, 'its connection was lost')
    assert h.answers[job.id] == st.Refused('server %s is gone: its connection was lost'
                                           % (location,))


def test_the_close_refuses_what_waits_loses_what_runs_and_releases_the_nodes():
    h = Harness()
    h.begin()
    h.up(ADDRS[0], 1)
    running, rcoro = h.running()
    waiting, _ = h.job()
    h.do(h.s.closing, 'closed by its client')
    assert h.s.work.busy((st.CPU,)) == 1
    tags = h.do(h.s.end, 'closed by its client')
    assert st.RELEASE in tags
    assert h.answers[waiting.id] == st.Refused('the computation was closed')
    assert h.ended[running.id][1].code == st.CLOSED
    h.do(h.s.closed)
    assert h.effects[-1][:2] == (st.STATUS, 'ComputationClosed')
    assert h.s.comp is None and not h.s.work.jobs and h.node(ADDRS[0]).state is N.IDLE
    h.s.check()


def test_a_node_that_is_back_after_it_was_lost_serves_again():
    h = Harness()
    h.begin()
    h.up(ADDRS[0], 2)
    job, _ = h.job()
    h.running()
    h.do(h.s.cluster.node_gone, key(ADDRS[0]), 'went away')
    assert h.node(ADDRS[0]).state is N.LOST
    assert job.state is J.ENDED and h.answers[job.id].code == st.DISCONNECTED
    waiting, _ = h.job()
    assert waiting.state is J.WAITING       # a lost node may come back: not hopeless
    h.do(h.s.tick, 5.0)
    assert h.node(ADDRS[0]).state is N.REJOINING
    h.do(h.s.cluster.rejoined, ADDRS[0], ('node', 'again'), Info('box', ADDRS[0]), 'c', 1)
    h.up(ADDRS[0], 1)
    assert waiting.state is J.STARTING
    assert h.s.cluster.by_key[('node', 'again')] is h.node(ADDRS[0])


# ================================================================ randomized

hypothesis = pytest.importorskip('hypothesis', reason='hypothesis (the test extra) drives '
                                 'the randomized state test')
from hypothesis import settings, strategies as sts                  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule  # noqa


class Driver(RuleBasedStateMachine):
    """Random stimuli, in any order a network allows: answers late or
    stale, nodes and servers going at any time."""

    def __init__(self):
        super().__init__()
        self.h = Harness()
        self.asked_jobs = set()

    # ---------------- the computation

    @precondition(lambda self: self.h.s.comp is None)
    @rule(retry=sts.integers(0, 2), disable_nodes=sts.booleans(),
          disable_servers=sts.booleans(), server_setup=sts.booleans())
    def begin(self, retry, disable_nodes, disable_servers, server_setup):
        self.h.begin(retry_lost=retry, disable_nodes=disable_nodes,
                     disable_servers=disable_servers, server_setup=server_setup)

    @precondition(lambda self: self.h.s.comp is not None)
    @rule(wait=sts.booleans())
    def close(self, wait):
        h = self.h
        h.do(h.s.closing, 'closed')
        if not wait:
            h.do(h.s.work.terminate, (st.CPU, st.ASYNC))
        h.do(h.s.end, 'closed')
        h.do(h.s.closed)
        assert h.s.comp is None
        assert self.asked_jobs <= set(h.answers), 'a run() never answered'

    # ---------------- nodes

    @rule(addr=sts.sampled_from(ADDRS), cpus=sts.integers(0, 3))
    def find(self, addr, cpus):
        self.h.find(addr, cpus)

    @rule(data=sts.data(), how=sts.sampled_from(['ok', 'busy', 'no', 'gone']))
    def answer_node_call(self, data, how):
        h = self.h
        if not h.asked:
            return
        tag, addr = data.draw(sts.sampled_from(sorted(h.asked)))
        part = h.asked.pop((tag, addr))
        cluster = h.s.cluster
        if how == 'busy' and tag == st.RESERVE:
            h.do(cluster.node_refused, addr, part, 'busy', False)
        elif how == 'no':
            h.do(cluster.node_refused, addr, part, 'no')
        elif how == 'gone':
            h.do(cluster.node_unreachable, addr, part, 'gone')
        else:
            h.node_call_done(tag, addr, part)

    @rule(addr=sts.sampled_from(ADDRS), stale=sts.booleans())
    def server_up(self, addr, stale):
        node = self.h.s.cluster.nodes.get(addr)
        if node is not None:
            self.h.do(self.h.s.cluster.server_up, addr, node.part - stale if node.part else 0,
                      (addr, next(self.h.ports)), 'srv')

    @rule(data=sts.data(), result=sts.sampled_from([0, 0, 1]))
    def server_setup_done(self, data, result):
        if self.h.setups:
            location = data.draw(sts.sampled_from(sorted(self.h.setups)))
            self.h.setups.discard(location)
            self.h.do(self.h.s.cluster.server_set_up, location, result)

    @rule(addr=sts.sampled_from(ADDRS))
    def enable_node(self, addr):
        self.h.do(self.h.s.cluster.enable_node, addr, ())

    @rule(data=sts.data())
    def enable_server(self, data):
        servers = sorted(self.h.s.cluster.servers)
        if servers:
            self.h.do(self.h.s.cluster.enable_server, data.draw(sts.sampled_from(servers)), ())

    @rule(data=sts.data(), code=sts.sampled_from([st.DIED, st.DISCONNECTED]))
    def server_gone(self, data, code):
        servers = sorted(self.h.s.cluster.servers)
        if servers:
            self.h.do(self.h.s.cluster.server_gone, data.draw(sts.sampled_from(servers)), code,
                      'gone')

    @rule(addr=sts.sampled_from(ADDRS), what=sts.sampled_from(
        ['gone', 'draining', 'closed', 'closed final', 'available', 'pulse']))
    def node_news(self, addr, what):
        h, cluster = self.h, self.h.s.cluster
        node = cluster.nodes.get(addr)
        if node is None:
            return
        if what == 'gone':
            h.do(cluster.node_gone, node.key, 'gone')
        elif what == 'draining':
            h.do(cluster.node_draining, addr)
        elif what.startswith('closed'):
            h.do(cluster.node_closed, addr, 'it ends', what == 'closed final', False)
        elif what == 'available':
            h.do(cluster.node_available, addr, node.key, node.coro, 2)
        elif h.s.comp is not None:
            h.do(cluster.pulse, addr, h.s.comp.id, h.now)

    @rule(seconds=sts.sampled_from([1.0, 20.0, 60.0]))
    def time_passes(self, seconds):
        self.h.now += seconds
        self.h.do(self.h.s.tick, self.h.now)

    @rule(data=sts.data(), ok=sts.booleans())
    def rejoin_answer(self, data, ok):
        rejoining = sorted(a for a, n in self.h.s.cluster.nodes.items()
                           if n.state is N.REJOINING)
        if rejoining:
            addr = data.draw(sts.sampled_from(rejoining))
            if ok:
                self.h.do(self.h.s.cluster.rejoined, addr, key(addr), Info('b', addr), 'c', 2)
            else:
                self.h.do(self.h.s.cluster.rejoin_failed, addr)

    @rule()
    def settle(self):
        """Everything asked of nodes and servers goes well: the walk reaches
        servers that run jobs (random answers alone seldom get there)."""
        h, cluster = self.h, self.h.s.cluster
        for _ in range(4):
            for (tag, addr), part in sorted(h.asked.items()):
                del h.asked[tag, addr]
                h.node_call_done(tag, addr, part)
            for location in sorted(h.setups):
                h.setups.discard(location)
                h.do(cluster.server_set_up, location, 0)
            for addr, node in sorted(cluster.nodes.items()):
                h.do(cluster.enable_node, addr, ())
                if node.state in (N.SETTING_UP, N.UP) and len(node.servers) < node.cpus:
                    h.do(cluster.server_up, addr, node.part, (addr, next(h.ports)), 'srv')
            for location in sorted(cluster.servers):
                h.do(cluster.enable_server, location, ())

    # ---------------- jobs

    @precondition(lambda self: self.h.s.comp is not None)
    @rule(data=sts.data(), kind=sts.sampled_from([st.CPU, st.ASYNC]),
          where=sts.sampled_from(['any', 'node', 'server', 'unknown']))
    def ask(self, data, kind, where):
        h = self.h
        if where == 'node':
            where = data.draw(sts.sampled_from(ADDRS))
        elif where == 'server':
            servers = sorted(h.s.cluster.servers)
            where = data.draw(sts.sampled_from(servers)) if servers else None
        elif where == 'unknown':
            where = ('10.9.9.9', 1)
        else:
            where = None
        job, _ = h.job(kind, where)
        self.asked_jobs.add(job.id)

    @rule(data=sts.data(), how=sts.sampled_from(['started', 'started', 'refused', 'busy',
                                                 'unsent']))
    def answer_start(self, data, how):
        h = self.h
        if not h.starts:
            return
        job_id = data.draw(sts.sampled_from(sorted(h.starts)))
        location, token = h.starts.pop(job_id)      # a late answer too, at times
        work = h.s.work
        if how == 'started':
            h.do(work.job_started, job_id, token, ('rcoro', next(h.rcoros)))
        elif how == 'refused':
            h.do(work.job_not_started, job_id, token, 'no such function')
        elif how == 'busy':
            h.do(work.job_not_started, job_id, token, 'draining', False)
        else:
            h.do(work.job_unsent, job_id, token, 'connection reset')

    @rule()
    def start_all(self):
        """Every start on its way is answered: the job runs."""
        h = self.h
        for job_id, (location, token) in sorted(h.starts.items()):
            del h.starts[job_id]
            h.do(h.s.work.job_started, job_id, token, ('rcoro', next(h.rcoros)))

    @rule()
    def monitors_hear(self):
        """The shell's timer tells the monitors how many jobs wait."""
        if self.h.s.work.waiting_due:
            self.h.s.work.waiting_heard()

    @rule(data=sts.data(), early=sts.booleans())
    def job_ends(self, data, early):
        work = self.h.s.work
        if early or not work.by_rcoro:
            self.h.do(work.job_ended, ('rcoro', next(self.h.rcoros)), 'an end')
        else:
            rcoro = data.draw(sts.sampled_from(sorted(work.by_rcoro)))
            self.h.do(work.job_ended, rcoro, 'its end')

    # ---------------- after each step

    @invariant()
    def holds(self):
        h = self.h
        h.s.check()
        for job_id in self.asked_jobs:
            if job_id not in h.s.work.jobs:         # ended: its run() was answered
                assert job_id in h.answers, 'job %s ended with no answer' % job_id


TestRandomStimuli = Driver.TestCase
TestRandomStimuli.settings = settings(max_examples=400, stateful_step_count=80, deadline=None,
                                      database=None)
