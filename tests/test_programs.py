"""Whole programs as subprocesses: exit-wait, a main thread blocked in input()
or time.sleep() while coroutines run, daemons, finish and terminate.

As docs/guide/coroutines.rst says: most existing programs end with a bare
module-level `asyncoro.Coro(...)`, and many block their main thread.
"""



TIMEOUT = 30


def finish(proc, stdin_text=None):
    out, err = proc.communicate(stdin_text, timeout=TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


def test_last_line_creates_a_coroutine_and_its_result_is_printed(program):
    proc = program('''
import asyncoro

def compute(n, coro=None):
    total = 0
    for i in range(n):
        yield coro.sleep(0.01)
        total += i
    print('result', total)
    raise StopIteration(total)

asyncoro.Coro(compute, 10)
''')
    code, out, err = finish(proc)
    assert (code, out) == (0, 'result 45\n'), err


def test_exit_waits_for_non_daemons_and_not_for_daemons(program):
    proc = program('''
import asyncoro

def forever(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        print('daemon got', msg)

def worker(d, coro=None):
    for i in range(3):
        d.send(i)
        yield coro.sleep(0.01)
    print('worker done')

d = asyncoro.Coro(forever)
asyncoro.Coro(worker, d)
''')
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ['daemon got 0', 'daemon got 1', 'daemon got 2', 'worker done']


def test_coroutines_keep_running_while_main_thread_waits_in_input(program):
    proc = program('''
import asyncoro

def ticker(coro=None):
    coro.set_daemon()
    i = 0
    while True:
        print('tick', i, flush=True)
        i += 1
        yield coro.sleep(0.02)

def reader(coro=None):
    line = yield coro.receive()
    print('got line', line.strip(), flush=True)

asyncoro.Coro(ticker)
r = asyncoro.Coro(reader)
line = input()
r.send(line)
''')
    ticks = []
    for _ in range(5):             # ticks keep coming while the main thread is in input()
        line = proc.stdout.readline().decode()
        assert line.startswith('tick'), line
        ticks.append(int(line.split()[1]))
    assert ticks == list(range(5))
    proc.stdin.write(b'hello there\n')
    proc.stdin.close()
    rest = proc.stdout.read().decode().splitlines()
    assert proc.wait(TIMEOUT) == 0
    assert 'got line hello there' in rest
    assert all(line.startswith('tick') for line in rest if line != 'got line hello there')


def test_main_thread_in_time_sleep_and_value(program):
    proc = program('''
import time
import asyncoro

def counter(coro=None):
    n = 0
    while n < 5:
        yield coro.sleep(0.01)
        n += 1
    return n

c = asyncoro.Coro(counter)
time.sleep(0.3)              # a blocking sleep in the main thread: the coroutine still runs
print('alive after sleep', c.is_alive())
print('value', c.value(timeout=10))
''')
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ['alive after sleep False', 'value 5']


def test_queued_messages_are_received_before_exit(program):
    proc = program('''
import asyncoro

def receiver(n, coro=None):
    for i in range(n):
        msg = yield coro.receive()
        print('received', msg)

r = asyncoro.Coro(receiver, 100)
for i in range(100):
    r.send(i)
''')
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ['received %d' % i for i in range(100)]


def test_runtime_terminate_stops_at_once_and_finally_runs(program):
    proc = program('''
import asyncoro

def stuck(coro=None):
    try:
        yield coro.receive()
    finally:
        print('finally ran', flush=True)

def started(coro=None):
    yield

asyncoro.Coro(stuck)
asyncoro.Coro(started).value(timeout=5)
asyncoro.AsynCoro.instance().terminate()
print('terminated')
''')
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ['finally ran', 'terminated']


def test_atexit_hooks_run_after_coroutines_by_priority(program):
    proc = program('''
import asyncoro

def work(coro=None):
    yield coro.sleep(0.02)
    print('work done')

rt = asyncoro.AsynCoro()
rt.atexit(1, print, 'low priority hook')
rt.atexit(10, print, 'high priority hook')
asyncoro.Coro(work)
''')
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ['work done', 'high priority hook', 'low priority hook']


def test_program_that_monkey_patches_first(program):
    # STYLE allows a program to patch in its first statement; the runtime must
    # still get a real thread of its own (a patched Thread is a greenlet).
    proc = program('''
from gevent import monkey; monkey.patch_all()
import threading
import time
import asyncoro

def work(coro=None):
    yield coro.sleep(0.05)
    return 'ok'

c = asyncoro.Coro(work)
time.sleep(0.01)
print('value', c.value(timeout=5))
asyncoro.Coro(work)        # exit-wait still works
''')
    code, out, err = finish(proc)
    assert (code, out) == (0, 'value ok\n'), err


def test_thread_pool_made_and_used_while_the_program_exits(program):
    # chat_chan_client.py reads input() through a pool, in a coroutine that
    # runs after the main program's last line: a concurrent.futures executor
    # refuses work by then
    proc = program('''
import atexit
import asyncoro

def reader(coro=None):
    assert (yield coro.receive()) == 'go'       # sent while the interpreter exits
    pool = asyncoro.AsyncThreadPool(1)
    lines = []
    while True:
        try:
            lines.append((yield pool.async_task(input)))
        except EOFError:
            break
    print('read', lines)

r = asyncoro.Coro(reader)
atexit.register(r.send, 'go')      # runs before the runtime's own exit hook
''')
    code, out, err = finish(proc, b'one\ntwo\n')
    assert (code, out) == (0, "read ['one', 'two']\n"), err
