"""The hub's rule (DESIGN: nothing done in the hub greenlet may block, sleep,
wait on a peer, touch the disk or run user code): checked while programs run
(asyncoro.strict, on in every test), and read from the source (every frame
handler and inline operation walked for the calls that block).
"""

import ast
import json

import pytest

from conftest import free_udp_port, options, read_line
from test_structure import MODULES

BLOCKING = r'''
import sys, json, time
import gevent
import asyncoro.disasyncoro as asyncoro
from asyncoro.service import Service, answers

rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))

class Careless(Service):
    """Two operations that break the hub's rule, as a mistake would."""

    @answers('careless.nap', inline=True)
    def nap(self):
        time.sleep(0.1)             # blocks the whole hub thread
        return 'napped'

    @answers('careless.wait', inline=True)
    def wait(self):
        try:
            gevent.sleep(0.01)      # a wait in the hub greenlet: gevent refuses it
        except Exception as exc:    # ... and the mistake swallows the refusal
            return type(exc).__name__
        return 'waited'

    @answers('careless.quick', inline=True)
    def quick(self):
        return 'quick'

service = rt._run_here(Careless, 'careless')
print('ready', rt.location, flush=True)
sys.stdin.read()
'''


@pytest.mark.deadline(60)
@pytest.mark.expected_strict(r'careless\.nap blocked the hub greenlet',
                             r'a wait in the hub greenlet')
def test_strict_mode_names_a_handler_that_blocks_and_one_that_waits(processes, tmp_path):
    record = tmp_path / 'steps.jsonl'
    port = free_udp_port()
    server, where = processes(BLOCKING, options(node='127.0.0.1', udp_port=port,
                                                discover_peers=False),
                              env={'ASYNCORO_STRICT_LOG': str(record)})
    client, _ = processes(r'''
import sys, json
import asyncoro.disasyncoro as asyncoro
from asyncoro.service import Service
rt = asyncoro.AsynCoro(**json.loads(sys.argv[1]))
loc = asyncoro.Location(*sys.argv[2].rsplit(':', 1))

def ask(coro=None):
    target = yield asyncoro.SysCoro.locate('careless', loc, timeout=10)
    asker = Service()
    for op in ('careless.quick', 'careless.nap', 'careless.wait', 'careless.quick'):
        print(op, asker.call(target, op, timeout=10), flush=True)
print('ready', flush=True)
asyncoro.Coro(ask)
''', options(node='127.0.0.1', udp_port=port, discover_peers=False), where)
    answers = [read_line(client, 30, 'an answer') for _ in range(4)]
    assert answers == ['careless.quick quick', 'careless.nap napped',
                       'careless.wait BlockingSwitchOutError', 'careless.quick quick']
    server.stdin.close()
    out = bytes(server.__dict__.get('_pending_output', b'')) + server.stdout.read()
    server.wait(20)
    strict = [line for line in out.decode().splitlines() if 'strict mode:' in line]
    # one line for the nap (it blocked, not waiting for a CPU), one for the wait
    # (named where it was made, though the operation swallowed it); none for quick
    assert len(strict) == 2, strict
    assert 'careless.nap blocked the hub greenlet' in strict[0]
    assert 'a wait in the hub greenlet' in strict[1] and 'quick' not in ' '.join(strict)
    # and at its exit, the process wrote its slowest steps: the nap (within its
    # frame, the service call) among them, with how long it took
    (line,) = record.read_text().splitlines()
    steps = json.loads(line)
    assert steps['pid'] == server.pid
    naps = [step for step in steps['steps'] if step[0] == 'careless.nap']
    assert naps and naps[0][1] == 1 and naps[0][2] >= 100, steps


# ---------------------------------------------------------------- read from the source

# Calls that block, run user code or touch the disk: none may be made by a
# frame handler or an inline operation in its own body (work it hands to a
# greenlet or the thread pool is written in a function of its own).
BLOCKS = {'sleep', 'wait', 'join', 'joinall', 'locate', 'call', 'request', 'open', 'exec',
          'compile', 'rmtree', 'read', 'write', 'finish', 'acquire', 'value', 'receive',
          'avail_info', 'connect', 'accept', 'in_thread'}
# ... the os module's file operations (a list's remove, say, is no such call)
OS_FILES = {'remove', 'replace', 'rmdir', 'makedirs', 'listdir', 'stat', 'chmod', 'utime',
            'realpath', 'isfile', 'isdir', 'exists', 'unlink', 'rename'}
# ... a get() with no key: an AsyncResult's or a queue's, which waits (a dict's has one)
# ... and one named call that does not block where it is made: deliver() to a local
# coroutine (asyncoro.handlers' DELIVER: the coroutine is this process's) queues it
LOCAL = {('coro', 'deliver')}


def _blocks(call):
    left, name = _callee(call)
    if (left, name) in LOCAL:
        return False
    if name in BLOCKS or (name == 'deliver'):
        return True
    if name in OS_FILES and left in ('os', 'os.path', 'shutil'):
        return True
    return name == 'get' and not call.args


def _callee(call):
    """('left.side', 'name') of a call: ('', 'open') for open(...)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return ast.unparse(func.value), func.attr
    if isinstance(func, ast.Name):
        return '', func.id
    return '', ''


def _own_calls(func):
    """The calls made in `func`'s own body (not in the functions and
    lambdas it defines: those run elsewhere, in a greenlet or a thread)."""
    todo = list(func.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                             ast.ClassDef)):
            continue
        if isinstance(node, ast.Call):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _hub_steps():
    """(module, function) of every frame handler (@handler) and inline
    operation (@answers(..., inline=True) or an inline function)."""
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if not isinstance(deco, ast.Call):
                    continue
                name = _callee(deco)[1]
                inline = [k for k in deco.keywords if k.arg == 'inline']
                if name == 'handler' or (name == 'answers' and inline and not (
                        isinstance(inline[0].value, ast.Constant) and
                        inline[0].value.value is False)):
                    yield module, node


def test_no_frame_handler_or_inline_operation_calls_what_blocks():
    steps = list(_hub_steps())
    assert len(steps) > 30         # the handlers of asyncoro.handlers, service, scheduler, ...
    found = []
    for module, func in steps:
        for call in _own_calls(func):
            if _blocks(call):
                left, name = _callee(call)
                found.append('%s.%s calls %s%s()' % (module, func.name, left + '.' if left
                                                     else '', name))
    assert found == []


def test_the_static_walk_sees_a_blocking_call():
    tree = ast.parse('''
@answers('op', inline=True)
def careless(self, path):
    time.sleep(1)
    answer = self.waiter.get()
    os.remove(path)
    self.seen.get(path)             # a dict's get: fine
    self.names.remove(path)         # a list's remove: fine
    def later():
        gevent.sleep(1)             # in a function of its own: spawned elsewhere, not here
    spawn(later)
''')
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert sorted(_callee(c) for c in _own_calls(func) if _blocks(c)) == [
        ('os', 'remove'), ('self.waiter', 'get'), ('time', 'sleep')]
