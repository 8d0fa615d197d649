"""Synchronisation primitives (per coroutine) and the thread pool
(docs/guide/coroutines.rst, "Locks, events and threads")."""

import sqlite3
import threading
import time

import pytest

import asyncoro
from conftest import run_coro


def test_lock_is_exclusive_and_owned_per_coroutine():
    lock = asyncoro.Lock()
    events = []

    def user(tag, coro=None):
        assert (yield lock.acquire()) is True
        events.append((tag, 'in'))
        yield coro.sleep(0.01)
        events.append((tag, 'out'))
        lock.release()

    def intruder(coro=None):
        try:
            lock.release()
        except RuntimeError as exc:
            return str(exc)
        yield

    def main(coro=None):
        users = [asyncoro.Coro(user, t) for t in 'abc']
        yield coro.sleep(0.005)
        msg = yield asyncoro.Coro(intruder).finish()
        for u in users:
            yield u.finish(timeout=5)
        return msg
    msg = run_coro(main)
    assert 'does not own it' in msg
    for i in range(0, 6, 2):      # never two holders at once
        assert events[i][0] == events[i + 1][0]
        assert (events[i][1], events[i + 1][1]) == ('in', 'out')


def test_lock_nonblocking_and_timeout():
    lock = asyncoro.Lock()

    def holder(coro=None):
        yield lock.acquire()
        yield coro.sleep(0.2)
        lock.release()

    def main(coro=None):
        asyncoro.Coro(holder)
        yield coro.sleep(0.01)
        now = yield lock.acquire(blocking=False)
        t0 = time.monotonic()
        timed = yield lock.acquire(timeout=0.03)
        waited = time.monotonic() - t0
        later = yield lock.acquire(timeout=5)
        lock.release()
        return now, timed, waited >= 0.03, later
    assert run_coro(main) == (False, False, True, True)


def test_rlock_reentrant():
    rlock = asyncoro.RLock()

    def main(coro=None):
        yield rlock.acquire()
        yield rlock.acquire()
        rlock.release()
        other = asyncoro.Coro(lambda coro=None: rlock.acquire(blocking=False))
        blocked = yield other.finish()
        rlock.release()
        other2 = asyncoro.Coro(lambda coro=None: rlock.acquire(blocking=False))
        free = yield other2.finish()
        return blocked, free
    assert run_coro(main) == (False, True)


def test_condition_wait_notify():
    cv = asyncoro.Condition()
    items = []

    def consumer(coro=None):
        yield cv.acquire()
        while not items:
            notified = yield cv.wait(5)
            assert notified
        item = items.pop()
        cv.release()
        return item

    def main(coro=None):
        c = asyncoro.Coro(consumer)
        yield coro.sleep(0.01)
        yield cv.acquire()
        items.append('thing')
        cv.notify()
        cv.release()
        got = yield c.finish(timeout=5)
        yield cv.acquire()
        timed_out = yield cv.wait(0.02)
        cv.release()
        return got, timed_out
    assert run_coro(main) == ('thing', False)


def test_event_set_from_a_thread_wakes_coroutines():
    event = asyncoro.Event()

    def waiter(coro=None):
        first = yield event.wait(0.01)
        second = yield event.wait(5)
        return first, second
    w = asyncoro.Coro(waiter)
    threading.Timer(0.05, event.set).start()
    assert w.value(timeout=5) == (False, True)
    assert event.is_set() and event.isSet()
    event.clear()
    assert not event.is_set()


def test_semaphore_counts():
    sem = asyncoro.Semaphore(2)

    def main(coro=None):
        a = yield sem.acquire()
        b = yield sem.acquire()
        c = yield sem.acquire(blocking=False)
        sem.release()
        d = yield sem.acquire(blocking=False)
        return a, b, c, d
    assert run_coro(main) == (True, True, False, True)


def test_primitives_need_a_coroutine():
    with pytest.raises(asyncoro.WrongContextError):
        asyncoro.Lock().acquire()


def test_thread_pool_runs_blocking_calls_without_blocking_others():
    pool = asyncoro.AsyncThreadPool(2)
    ticks = []

    def ticker(coro=None):
        for i in range(5):
            ticks.append(i)
            yield coro.sleep(0.01)

    def blocking(x):
        time.sleep(0.1)           # a real blocking call, in a pool thread
        return x * 2, threading.current_thread().name

    def failing():
        raise KeyError('in thread')

    def main(coro=None):
        t = asyncoro.Coro(ticker)
        value, thread_name = yield pool.async_task(blocking, 21)
        ticks_meanwhile = len(ticks)
        try:
            yield pool.async_task(failing)
        except KeyError as exc:
            error = exc.args[0]
        yield t.finish()
        return value, thread_name, ticks_meanwhile, error
    value, thread_name, ticks_meanwhile, error = run_coro(main)
    pool.join()
    assert value == 42
    assert thread_name.startswith('asyncoro-pool')
    assert ticks_meanwhile >= 3           # the ticker ran while the pool thread blocked
    assert error == 'in thread'


def test_db_cursor_through_the_pool():
    pool = asyncoro.AsyncThreadPool(1)
    conn = sqlite3.connect(':memory:', check_same_thread=False)
    cursor = asyncoro.AsyncDBCursor(pool, conn.cursor())

    def main(coro=None):
        yield cursor.execute('create table t (k integer, v text)')
        yield cursor.executemany('insert into t values (?, ?)', [(1, 'a'), (2, 'b')])
        yield cursor.execute('select v from t where k > ?', (1,))
        return cursor.fetchall()
    assert run_coro(main) == [('b',)]
    pool.terminate()
    conn.close()
