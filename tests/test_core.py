"""The core runtime: Coro on greenlets with the yield adapter, local messaging.

Each test runs coroutines in the real runtime (its hub thread) and asserts the
semantics docs/guide/coroutines.rst and messages.rst give, mostly as
transcripts of what happened.
"""

import collections
import os
import subprocess
import sys
import threading
import time

import pytest

import asyncoro
from conftest import run_coro, wait_until


# ------------------------------------------------------------ values (§11.2)

def test_return_value():
    def gen(coro=None):
        yield coro.sleep(0.001)
        return 42
    assert run_coro(gen) == 42


def test_raise_stopiteration_gives_its_value():
    def gen(coro=None):
        yield coro.sleep(0.001)
        raise StopIteration(7)
    assert run_coro(gen) == 7


def test_raise_stopiteration_with_two_args_gives_tuple():
    def gen(coro=None):
        yield
        raise StopIteration('a', 'b')
    assert run_coro(gen) == ('a', 'b')


def test_no_value_gives_last_value_yielded():
    def falls_off():
        yield 'a'
        yield 'b'

    def bare_stop():
        yield 1
        raise StopIteration

    def bare_return():
        yield 'x'
        return
    assert run_coro(falls_off) == 'b'
    assert run_coro(bare_stop) == 1
    assert run_coro(bare_return) == 'x'


def test_yield_of_plain_value_comes_back_as_is():
    seen = []

    def gen():
        seen.append((yield 5))
        seen.append((yield b'data'))
        seen.append((yield None))
        return 'done'
    assert run_coro(gen) == 'done'
    assert seen == [5, b'data', None]


def test_nested_generators_return_values_and_share_the_coroutine():
    def leaf(coro, x):
        msg = yield coro.receive()
        raise StopIteration(x * msg)        # PEP 479 inside a sub-generator

    def middle(coro, x):
        a = yield leaf(coro, x)
        b = yield leaf(coro, x + 1)
        return a + b

    def main(coro=None):
        coro.send(10)
        coro.send(100)
        total = yield middle(coro, 2)
        return total
    assert run_coro(main) == 2 * 10 + 3 * 100


def test_sub_generator_without_value_returns_its_last_value():
    def helper(coro):
        yield coro.sleep(0.001, alarm_value='slept')

    def main(coro=None):
        got = yield helper(coro)
        return got
    assert run_coro(main) == 'slept'


def test_exception_in_sub_generator_reaches_caller():
    def failing():
        yield
        raise KeyError('inner')

    def main():
        try:
            yield failing()
        except KeyError as exc:
            return 'caught %s' % exc.args[0]
    assert run_coro(main) == 'caught inner'


def test_greenlet_style_function_blocks_and_returns():
    def func(a, b=0, coro=None):
        coro.send(a)
        msg = coro.receive()
        coro.sleep(0.001)
        return msg + b
    assert run_coro(func, 3, b=4) == 7


def test_keyword_form_and_explicit_coro_is_overridden():
    def gen(x, coro=None):
        yield
        return (x, coro is asyncoro.AsynCoro.cur_coro())
    coro = asyncoro.Coro(target=gen, args=(5,), kwargs={'coro': 'not me'})
    assert coro.value(timeout=5) == (5, True)


def test_operation_methods_work_as_targets():
    ev = asyncoro.Event()

    def setter(coro=None):
        yield coro.sleep(0.01)
        ev.set()
    asyncoro.Coro(setter)
    waiter = asyncoro.Coro(ev.wait, 5)
    assert waiter.value(timeout=5) is True


# ------------------------------------------------------------ messages

def test_receive_timeout_returns_alarm_value():
    def gen(coro=None):
        t0 = time.monotonic()
        got = yield coro.receive(timeout=0.05, alarm_value='alarm')
        polled = yield coro.receive(timeout=0, alarm_value='empty')
        return got, polled, time.monotonic() - t0
    got, polled, took = run_coro(gen)
    assert (got, polled) == ('alarm', 'empty')
    assert took >= 0.05


def test_messages_sent_before_start_are_kept_in_order():
    def gen(coro=None):
        got = []
        for _ in range(3):
            got.append((yield coro.receive()))
        return got
    coro = asyncoro.Coro(gen)
    for i in range(3):
        assert coro.send(i) == 0
    assert coro.value(timeout=5) == [0, 1, 2]


def test_sleep_is_not_woken_by_send_and_resume_is_not_seen_by_receive():
    events = []

    def sleeper(coro=None):
        got = yield coro.sleep(timeout=None)
        events.append(('resumed with', got))
        msg = yield coro.receive()
        events.append(('message', msg))

    def driver(coro=None):
        s = asyncoro.Coro(sleeper)
        yield coro.sleep(0.01)
        s.send('early message')           # queued, does not wake the sleeper
        yield coro.sleep(0.01)
        events.append(('still sleeping', s.is_alive()))
        s.resume('update')
        yield s.finish(timeout=5)
    run_coro(driver)
    assert events == [('still sleeping', True), ('resumed with', 'update'),
                      ('message', 'early message')]


def test_resume_of_a_receiving_coroutine_is_ignored():
    def receiver(coro=None):
        msg = yield coro.receive()
        return msg

    def driver(coro=None):
        r = asyncoro.Coro(receiver)
        yield coro.sleep(0.01)
        result = r.resume('ignored')
        r.send('msg')
        value = yield r.finish(timeout=5)
        return result, value
    assert run_coro(driver) == (0, 'msg')


def test_sleep_returns_alarm_value_and_suspend_is_sleep():
    def gen(coro=None):
        a = yield coro.sleep(0.01, alarm_value='a')
        b = yield coro.suspend(0.01, 'b')
        return a, b
    assert run_coro(gen) == ('a', 'b')


def test_deliver_local_and_to_finished_coroutine():
    def receiver(coro=None):
        return (yield coro.receive())

    def driver(coro=None):
        r = asyncoro.Coro(receiver)
        first = yield r.deliver('hello')
        value = yield r.finish()
        second = yield r.deliver('too late', timeout=1)
        return first, value, second, r.send('late')
    assert run_coro(driver) == (1, 'hello', -1, -1)


def test_ten_thousand_coroutines_exchange_messages_in_order():
    n_pairs, per_pair = 5000, 20

    def consumer(coro=None):
        got = []
        for _ in range(per_pair):
            got.append((yield coro.receive(timeout=30)))
        return got

    def producer(target, tag, coro=None):
        for i in range(per_pair):
            target.send((tag, i))
            if i % 5 == 0:
                yield
        return tag

    def main(coro=None):
        consumers = [asyncoro.Coro(consumer) for _ in range(n_pairs)]
        producers = [asyncoro.Coro(producer, c, tag) for tag, c in enumerate(consumers)]
        results = []
        for c in consumers:
            results.append((yield c.finish(timeout=30)))
        for p in producers:
            yield p.finish(timeout=30)
        return results
    results = run_coro(main, timeout=60)
    assert len(results) == n_pairs
    for tag, got in enumerate(results):
        assert got == [(tag, i) for i in range(per_pair)]


def test_many_senders_to_one_receiver_keep_per_sender_order():
    senders, each = 50, 200

    def receiver(coro=None):
        got = collections.defaultdict(list)
        for _ in range(senders * each):
            tag, i = yield coro.receive(timeout=10)
            got[tag].append(i)
        return got

    def sender(r, tag):
        for i in range(each):
            r.send((tag, i))
            if i % 7 == 0:
                yield

    def main(coro=None):
        r = asyncoro.Coro(receiver)
        for tag in range(senders):
            asyncoro.Coro(sender, r, tag)
        return (yield r.finish(timeout=20))
    got = run_coro(main, timeout=30)
    assert sorted(got) == list(range(senders))
    assert all(got[tag] == list(range(each)) for tag in got)


def test_send_from_foreign_threads_is_safe_and_ordered():
    threads, each = 4, 2000

    def receiver(coro=None):
        got = collections.defaultdict(list)
        for _ in range(threads * each):
            tag, i = yield coro.receive(timeout=10)
            got[tag].append(i)
        return got
    r = asyncoro.Coro(receiver)

    def blast(tag):
        for i in range(each):
            r.send((tag, i))
    workers = [threading.Thread(target=blast, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    got = r.value(timeout=20)
    assert got is not None, 'receiver did not get every message'
    assert {tag: got[tag] for tag in got} == {t: list(range(each)) for t in range(threads)}


def _bursts(style, sizes):
    """A receiver of `style` takes bursts of messages of `sizes`: the first
    of each wakes it, the others are queued while it is ready or running;
    after each burst it waits again. Returns (what it got, in order, and how
    many times it found its mailbox empty)."""
    total = sum(sizes)
    waits = []

    # the receiver tells the producer that it found its mailbox empty, and
    # waits; the producer sends the next burst once told
    if style == 'yield':
        def receiver(producer, coro=None):
            got = []
            for _ in range(total):
                msg = yield coro.receive(timeout=0)
                if msg is None:
                    waits.append(len(got))
                    producer.send('waiting')
                    msg = yield coro.receive(timeout=10)
                got.append(msg)
            return got
    else:
        def receiver(producer, coro=None):
            got = []
            for _ in range(total):
                msg = coro.receive(timeout=0)
                if msg is None:
                    waits.append(len(got))
                    producer.send('waiting')
                    msg = coro.receive(timeout=10)
                got.append(msg)
            return got

    def producer(coro=None):
        r = asyncoro.Coro(receiver, coro)
        n = 0
        for size in sizes:
            assert (yield coro.receive(timeout=10)) == 'waiting'
            for _ in range(size):
                r.send(n)
                n += 1
        return (yield r.finish(timeout=10))
    return run_coro(producer), waits


@pytest.mark.parametrize('style', ['yield', 'greenlet'])
def test_bursts_keep_their_order_across_waits_and_wakes(style):
    # a send that wakes the receiver, the sends that only queue after it,
    # the receiver taking them without waiting, then waiting again
    sizes = [1, 5, 300, 2, 600, 1]
    got, waits = _bursts(style, sizes)
    assert got == list(range(sum(sizes)))
    assert len(waits) == len(sizes)      # it found its mailbox empty before each burst


def test_receive_with_a_timeout_takes_a_queued_message_at_once():
    def gen(coro=None):
        coro.send('a')
        coro.send('b')
        coro.send('c')
        t0 = time.monotonic()
        first = yield coro.receive(timeout=5, alarm_value='alarm')
        second = yield coro.receive(timeout=0, alarm_value='alarm')
        third = coro.receive(0.5, 'alarm')       # greenlet style, in a generator
        fourth = yield coro.receive(timeout=0.01, alarm_value='alarm')
        return [first, second, third, fourth], time.monotonic() - t0
    got, took = run_coro(gen)
    assert got == ['a', 'b', 'c', 'alarm']
    assert took < 1


def test_send_to_a_coroutine_that_ended_with_messages_queued():
    # messages flowed to it (sends that only queue), then it ended: a later
    # send is refused, from the hub and from another thread
    def receiver(coro=None):
        return (yield coro.receive())

    def main(coro=None):
        r = asyncoro.Coro(receiver)
        results = [r.send(i) for i in range(5)]
        value = yield r.finish(timeout=5)
        results.append(r.send('late'))
        return value, results, r
    value, results, r = run_coro(main)
    assert (value, results) == (0, [0, 0, 0, 0, 0, -1])
    assert r.send('later, from a thread') == -1


def test_hand_messages_after_messages_have_flowed():
    # a coroutine whose sends only queued is handed to a handler: later sends
    # go to the handler, none to the mailbox
    from asyncoro.core import _hand_messages
    taken = []

    def service(main, coro=None):
        first = yield coro.receive()
        second = yield coro.receive()
        main.send('took both')
        yield coro.sleep(10)            # until main has handed it and sent more
        return first, second, coro.receive(timeout=0, alarm_value='empty')

    def main(coro=None):
        s = asyncoro.Coro(service, coro)
        s.send(1)
        s.send(2)
        assert (yield coro.receive(timeout=5)) == 'took both'
        _hand_messages(s, taken.append)
        s.send(3)
        s.send(4)
        s.resume()
        return (yield s.finish(timeout=5))
    assert run_coro(main) == (1, 2, 'empty')
    assert taken == [3, 4]


def test_sends_from_a_thread_and_from_the_hub_during_a_burst():
    # the receiver takes messages without waiting while a thread's sends are
    # handed over: each sender's messages keep their order, none is lost
    each = 3000

    def receiver(coro=None):
        got = collections.defaultdict(list)
        for _ in range(2 * each):
            tag, i = yield coro.receive(timeout=10)
            got[tag].append(i)
        return got

    def hub_sender(r, coro=None):
        for i in range(each):
            r.send(('hub', i))
            if i % 100 == 0:
                yield

    r = asyncoro.Coro(receiver)

    def blast():
        for i in range(each):
            r.send(('thread', i))
    t = threading.Thread(target=blast)
    t.start()
    asyncoro.Coro(hub_sender, r)
    t.join(10)
    got = r.value(timeout=20)
    assert got is not None, 'receiver did not get every message'
    assert dict(got) == {'hub': list(range(each)), 'thread': list(range(each))}


def test_a_coroutine_taking_many_queued_messages_lets_others_run():
    # messages that receive() finds come straight back without a switch, but
    # not forever: another ready coroutine runs before 2000 are taken
    n = 2000
    events = []

    def receiver(coro=None):
        for i in range(n):
            coro.send(i)
        got = []
        for _ in range(n):
            got.append((yield coro.receive()))
        events.append('receiver done')
        return got == list(range(n))

    def other(coro=None):
        events.append('other ran')
        yield

    def main(coro=None):
        r = asyncoro.Coro(receiver)
        o = asyncoro.Coro(other)
        in_order = yield r.finish(timeout=10)
        yield o.finish(timeout=10)
        return in_order
    assert run_coro(main) is True
    assert events == ['other ran', 'receiver done']


@pytest.mark.parametrize('how', ['throw', 'terminate'])
def test_an_exception_thrown_while_messages_come_straight_back(how):
    # thrown at itself while it runs: it comes at the next yield, even one
    # whose receive() found a message
    def gen(coro=None):
        for i in range(5):
            coro.send(i)
        got = [(yield coro.receive())]
        try:
            if how == 'throw':
                coro.throw(ValueError('stop'))
            else:
                coro.terminate()
            got.append((yield coro.receive()))
        except ValueError:
            got.append('thrown')
        except GeneratorExit:
            got.append('terminated')
            raise
        finally:
            result.append(list(got))
        got.append((yield coro.receive()))
        return got
    result = []
    c = asyncoro.Coro(gen)
    value = c.value(timeout=5)
    if how == 'throw':
        assert result == [[0, 'thrown']] and value[:2] == [0, 'thrown'] and len(value) == 3
    else:
        assert result == [[0, 'terminated']] and value == 0


def test_a_hub_callback_runs_before_the_coroutines_readied_after_it():
    # a step queues a callback in the hub, then wakes a coroutine: the
    # callback runs first (the next batch does not begin in the worker)
    import gevent
    events = []

    def receiver(main, coro=None):
        main.send('ready')              # main runs once this step parks in receive
        msg = yield coro.receive()
        events.append(('received', msg))

    def main(coro=None):
        r = asyncoro.Coro(receiver, coro)
        assert (yield coro.receive(timeout=5)) == 'ready'      # r waits in receive
        gevent.get_hub().loop.run_callback(events.append, ('callback',))
        r.send('x')
        yield r.finish(timeout=5)
    run_coro(main)
    assert events == [('callback',), ('received', 'x')]


def test_timers_and_threads_are_served_while_coroutines_ping_pong():
    # two coroutines that wake each other run one batch after another in a
    # worker, but not for ever: a sleeper's timer and another thread's sends
    # get their turns while the ping-pong goes on
    seen = set()

    def echo(coro=None):
        while True:
            peer = yield coro.receive()
            if peer is None:
                return
            peer.send(coro)

    def pinger(e, coro=None):
        rounds, deadline = 0, time.monotonic() + 20
        while seen != {'timer', 'thread'} and time.monotonic() < deadline:
            for _ in range(1000):
                e.send(coro)
                yield coro.receive()
            rounds += 1000
        e.send(None)
        return rounds, set(seen)        # what was seen while it went on

    def sleeper(coro=None):
        yield coro.sleep(0.001)
        seen.add('timer')

    def listener(coro=None):
        yield coro.receive()
        seen.add('thread')

    lis = asyncoro.Coro(listener)
    asyncoro.Coro(sleeper)
    p = asyncoro.Coro(pinger, asyncoro.Coro(echo))
    t = threading.Thread(target=lis.send, args=('hello',))
    t.start()
    rounds, seen_meanwhile = p.value(timeout=30)
    t.join(5)
    assert seen_meanwhile == {'timer', 'thread'}, \
        'only %s seen in %s rounds' % (seen_meanwhile, rounds)


# ------------------------------------------------------------ throw, terminate, monitor

def test_throw_is_caught_inside_the_generator():
    def gen(coro=None):
        try:
            yield coro.receive()
        except ValueError as exc:
            return 'caught %s' % exc
        return 'not thrown'

    def driver(coro=None):
        g = asyncoro.Coro(gen)
        yield coro.sleep(0.01)
        assert g.throw(ValueError('boom')) == 0
        return (yield g.finish(timeout=5))
    assert run_coro(driver) == 'caught boom'


@pytest.mark.parametrize('form', ['instance', 'type-value', 'tuple'])
def test_throw_accepts_every_form(form):
    def gen(coro=None):
        try:
            yield coro.sleep(10)
        except KeyError as exc:
            return exc.args
    g = asyncoro.Coro(gen)      # started or not: the throw is delivered wherever it is
    if form == 'instance':
        g.throw(KeyError('k'))
    elif form == 'type-value':
        g.throw(KeyError, 'k')
    else:
        g.throw((KeyError, KeyError('k'), None))
    assert g.value(timeout=5) == ('k',)


def test_throw_into_a_blocked_greenlet_style_coroutine():
    def func(coro=None):
        try:
            coro.receive()
        except KeyError:
            return 'caught'
    c = asyncoro.Coro(func)
    wait_until(lambda: c._state == asyncoro.core._WAITING, 5, 'the coroutine blocking in receive')
    c.throw(KeyError('x'))
    assert c.value(timeout=5) == 'caught'


def test_terminate_runs_finally_and_ends_normally_with_last_value():
    events = []

    def inner(coro):
        try:
            yield coro.receive()
        finally:
            events.append('inner finally')

    def outer(coro=None):
        try:
            yield 'last'
            yield inner(coro)
        finally:
            events.append('outer finally')

    def monitor(target, coro=None):
        yield coro.monitor(target)
        msg = yield coro.receive(timeout=5)
        return msg

    def driver(coro=None):
        o = asyncoro.Coro(outer)
        m = asyncoro.Coro(monitor, o)
        yield coro.sleep(0.02)
        assert o.terminate() == 0
        msg = yield m.finish(timeout=5)
        value = yield o.finish(timeout=5)
        return msg, value, o
    msg, value, o = run_coro(driver)
    assert events == ['inner finally', 'outer finally']
    assert isinstance(msg, asyncoro.MonitorException)
    assert msg.args[0] is o
    assert msg.args[1] == (StopIteration, 'last')
    assert value == 'last'


def test_terminate_a_greenlet_style_coroutine_runs_its_finally():
    events = []

    def func(coro=None):
        try:
            coro.sleep(30)
        finally:
            events.append('finally')
    c = asyncoro.Coro(func)
    wait_until(lambda: c._state == asyncoro.core._WAITING, 5, 'the coroutine sleeping')
    c.terminate()
    c.value(timeout=5)
    assert not c.is_alive()
    assert events == ['finally']



def test_a_generator_that_goes_on_after_terminate_is_closed_with_its_callers(capsys):
    events = []

    def stubborn(coro):
        try:
            yield coro.receive()
        except GeneratorExit:
            events.append('caught')
        try:
            yield 'again'       # goes on: closed here, where it ignores GeneratorExit again
        except GeneratorExit:
            events.append('ignored')
            yield 'still'

    def outer(coro=None):
        try:
            yield 'last'
            yield stubborn(coro)
        finally:
            events.append('outer finally')
    o = asyncoro.Coro(outer)
    wait_until(lambda: o._state == asyncoro.core._WAITING, 5, 'the coroutine waiting in receive')
    assert o.terminate() == 0
    assert o.value(timeout=5) == 'last' and not o.is_alive()
    assert events == ['caught', 'ignored', 'outer finally']
    assert '%s ignored terminate(); closed' % o in capsys.readouterr().out

def test_monitor_receives_exit_value_and_exception():
    def ok(coro=None):
        yield coro.sleep(0.01)
        raise StopIteration('fine')

    def bad(coro=None):
        yield coro.sleep(0.01)
        raise ValueError('broken')

    def watcher(coro=None):
        a = asyncoro.Coro(ok)
        b = asyncoro.Coro(bad)
        assert (yield coro.monitor(a)) == 0
        assert (yield coro.monitor(b)) == 0
        got = {}
        for _ in range(2):
            msg = yield coro.receive(timeout=5)
            assert isinstance(msg, asyncoro.MonitorException)
            got[msg.args[0].name] = msg.args[1]
        return got
    got = run_coro(watcher)
    assert got['ok'] == (StopIteration, 'fine')
    exc_type, exc_value = got['bad']
    assert exc_type is ValueError and exc_value.args == ('broken',)


def test_monitor_of_an_already_finished_coroutine_still_reports():
    def quick():
        yield
        return 3

    def watcher(coro=None):
        q = asyncoro.Coro(quick)
        yield q.finish()
        yield coro.monitor(q)
        msg = yield coro.receive(timeout=5)
        return msg.args[1]
    assert run_coro(watcher) == (StopIteration, 3)


def test_uncaught_exception_is_logged_and_value_is_last(capsys):
    def bad():
        yield 'before'
        raise ZeroDivisionError('oops')
    assert run_coro(bad) == 'before'
    out = capsys.readouterr().out
    assert 'uncaught exception in ~bad/' in out
    assert 'ZeroDivisionError: oops' in out


# ------------------------------------------------------------ finish, value, daemon, names

def test_finish_with_timeout_returns_none():
    def slow(coro=None):
        yield coro.sleep(5)

    def driver(coro=None):
        s = asyncoro.Coro(slow)
        got = yield s.finish(timeout=0.02)
        s.terminate()
        return got, s.is_alive()
    assert run_coro(driver) == (None, True)


def test_value_from_a_thread_times_out_then_succeeds():
    def gen(coro=None):
        return (yield coro.receive())
    c = asyncoro.Coro(gen)
    assert c.value(timeout=0.02) is None
    c.send('v')
    assert c.value(timeout=5) == 'v'
    assert c.value() == 'v'       # finished: at once


def test_set_daemon_only_on_itself():
    def other(coro=None):
        yield coro.sleep(0.01)

    def gen(coro=None):
        o = asyncoro.Coro(other)
        mine = coro.set_daemon()
        theirs = o.set_daemon()
        yield o.finish()
        return mine, theirs
    assert run_coro(gen) == (0, -1)


def test_register_and_locate():
    def server(coro=None):
        assert coro.register('core-test-server') == 0
        msg = yield coro.receive()
        yield coro.receive()       # stays alive (holding the name) until told to end
        return msg

    def client(coro=None):
        s = yield asyncoro.Coro.locate('core-test-server', timeout=5)
        s.send('hi')
        duplicate = asyncoro.Coro(lambda coro=None: coro.register('core-test-server'))
        dup_result = yield duplicate.finish()
        s.send('end')
        result = yield s.finish()
        missing = yield asyncoro.Coro.locate('no-such-name', timeout=0.01)
        return dup_result, result, missing
    asyncoro.Coro(server)
    assert run_coro(client) == (-1, 'hi', None)

class _KindCoro(asyncoro.Coro):
    """A Coro class with names of its own, as SysCoro has."""
    __slots__ = ()
    _registry_kind = 'core-test-kind'


def test_a_coro_class_registers_under_its_own_kind():
    def holder(coro=None):
        yield coro.receive()

    def check(c, coro=None):
        registered = c.register('core-test-kind-name')
        as_coro = yield asyncoro.Coro.locate('core-test-kind-name', timeout=0)
        as_kind = yield _KindCoro.locate('core-test-kind-name', timeout=0)
        withdrawn = c.unregister('core-test-kind-name')
        after = yield _KindCoro.locate('core-test-kind-name', timeout=0)
        c.send('end')
        return registered, as_coro, as_kind is c, withdrawn, after
    c = _KindCoro(holder)
    assert run_coro(check, c) == (0, None, True, 0, None)




def test_hand_messages_gives_what_is_sent_to_the_handler_at_once_and_in_order():
    # a library service's coroutine: its messages go to a handler where they
    # are sent (from another thread, as the send is handed over), and the
    # coroutine itself waits on and ends as any other
    from asyncoro.core import _hand_messages
    taken = []

    def service(coro=None):
        msg = yield coro.receive()
        return msg

    s = asyncoro.Coro(service)

    def in_the_hub(coro=None):
        _hand_messages(s, taken.append)
        s.send(1)
        s.send(2)
        return list(taken)
        yield
    assert run_coro(in_the_hub) == [1, 2]
    for n in range(3, 6):
        assert s.send(n) == 0
    wait_until(lambda: taken == [1, 2, 3, 4, 5], 5, 'messages 3-5 handed over in order')
    assert s.is_alive()
    s.terminate()
    assert s.value(timeout=5) is None and not s.is_alive()

def test_name_repr_location_and_equality():
    def my_coro(coro=None):
        yield
        return coro
    c = asyncoro.Coro(my_coro)
    assert c.value(timeout=5) is c
    assert c.name == 'my_coro'
    # with networking on (asyncoro.disasyncoro imported) the location follows
    assert repr(c) in ('~my_coro/%s' % c._id, '~my_coro/%s@%s' % (c._id, c.location))
    assert c.location == asyncoro.AsynCoro.instance().location
    assert c == c and hash(c) == c._id
    assert not c.is_alive()


def test_coroutine_ids_are_never_reused():
    """id() of a finished coroutine's object comes back at once; a
    coroutine's id (in its repr, its references, the monitor) never does."""
    def short(coro=None):
        yield

    first = asyncoro.Coro(short)
    first.value(timeout=5)
    seen = {first._id}
    objects = {id(first)}

    def many(count, coro=None):
        ids = []
        for _ in range(count):
            c = asyncoro.Coro(short)
            ids.append((c._id, id(c)))
            yield c.finish()
        return ids
    ids = run_coro(many, 100000, timeout=120)
    assert len(ids) == 100000
    assert len(seen | {i for i, _ in ids}) == 100001       # no id came twice
    assert len(objects | {o for _, o in ids}) < 1000        # while id() did, over and over


def test_hot_swap_replaces_generator_and_keeps_messages():
    events = []

    def first(coro=None):
        coro.hot_swappable(True)
        while True:
            msg = yield coro.receive()
            events.append(('first', msg))

    def second(tag, coro=None):
        while True:
            msg = yield coro.receive()
            events.append((tag, msg))
            if msg == 'stop':
                return 'swapped'

    def driver(coro=None):
        c = asyncoro.Coro(first)
        c.send(1)
        yield coro.sleep(0.01)
        assert c.hot_swap(second, 'second') == 0
        c.send(2)
        c.send('stop')
        return (yield c.finish(timeout=5))
    assert run_coro(driver) == 'swapped'
    assert events == [('first', 1), ('second', 2), ('second', 'stop')]


def test_hot_swap_refused_when_caught():
    def stubborn(coro=None):
        coro.hot_swappable(True)
        try:
            yield coro.receive()
        except asyncoro.HotSwapException as exc:
            return 'refused %s' % exc.args[0].__name__

    def other(coro=None):
        yield

    def driver(coro=None):
        c = asyncoro.Coro(stubborn)
        yield coro.sleep(0.01)
        c.hot_swap(other)
        return (yield c.finish(timeout=5))
    assert run_coro(driver) == 'refused other'


# ------------------------------------------------------------ bad input

def test_non_callable_target_is_a_type_error():
    with pytest.raises(TypeError, match='must be a generator function or a function'):
        asyncoro.Coro(42)
    with pytest.raises(TypeError, match='needs a target'):
        asyncoro.Coro()


def test_receive_outside_the_coroutine_is_an_error():
    def gen(coro=None):
        yield coro.sleep(5)
    c = asyncoro.Coro(gen)
    with pytest.raises(asyncoro.WrongContextError, match='receive.*itself'):
        c.receive(timeout=1)

    def other(target, coro=None):
        try:
            target.receive()
        except asyncoro.WrongContextError as exc:
            return str(exc)
        yield
    assert 'can only be called by that coroutine itself' in run_coro(other, c)
    c.terminate()


def test_generator_target_with_bad_arguments_fails_at_creation():
    def gen(a):
        yield a
    with pytest.raises(TypeError):
        asyncoro.Coro(gen, 1, 2, 3)


def test_runtime_finish_from_a_coroutine_is_an_error():
    def gen(coro=None):
        try:
            asyncoro.AsynCoro.instance().finish()
        except asyncoro.WrongContextError as exc:
            return str(exc)
        yield
    assert 'for threads' in run_coro(gen)


def test_function_returning_a_generator_is_driven_as_one():
    def gen(x, coro=None):
        got = yield coro.receive()
        return x + got

    def wrapper(*args, coro=None, **kwargs):      # e.g. a decorator's wrapper
        return gen(*args, coro=coro, **kwargs)

    c = asyncoro.Coro(wrapper, 1)
    c.send(2)
    assert c.value(timeout=5) == 3


def test_throw_into_a_coroutine_blocked_in_a_gevent_wait():
    lock = asyncoro.Lock()
    events = []

    def holder(coro=None):
        yield lock.acquire()
        yield coro.sleep(10)

    def blocked(coro=None):
        try:
            yield lock.acquire()       # blocks its worker greenlet in a gevent semaphore
        except KeyError:
            events.append('caught in acquire')
        return 'done'

    def driver(coro=None):
        h = asyncoro.Coro(holder)
        b = asyncoro.Coro(blocked)
        yield coro.sleep(0.02)
        b.throw(KeyError('x'))
        value = yield b.finish(timeout=5)
        h.terminate()
        return value
    assert run_coro(driver) == 'done'
    assert events == ['caught in acquire']


def test_runtime_is_one_singleton_across_subclasses():
    rt = asyncoro.AsynCoro.instance()

    class Sub(asyncoro.AsynCoro):
        pass
    assert Sub() is rt
    assert asyncoro.AsynCoro() is rt
    assert asyncoro.Coro.scheduler() is rt


def test_hot_swap_waits_until_swappable_and_out_of_sub_generators():
    events = []

    def helper(coro):
        msg = yield coro.receive()
        events.append(('helper', msg))

    def original(coro=None):
        yield helper(coro)                  # a swap asked for now must wait
        msg = yield coro.receive()
        events.append(('original', msg))
        coro.hot_swappable(True)            # the pending swap happens at the next yield
        yield coro.receive()
        events.append('original not replaced')

    def replacement(coro=None):
        msg = yield coro.receive()
        events.append(('replacement', msg))
        return 'new'

    def driver(coro=None):
        c = asyncoro.Coro(original)
        yield coro.sleep(0.01)
        assert c.hot_swap(replacement) == 0
        assert c.hot_swap(42) == -1         # not a generator function
        c.send('one')
        c.send('two')
        yield coro.sleep(0.01)
        c.send('three')
        return (yield c.finish(timeout=5))
    assert run_coro(driver) == 'new'
    assert events == [('helper', 'one'), ('original', 'two'), ('replacement', 'three')]


_SETTINGS = '''
import gc, sys, gevent
{before}
import asyncoro
asyncoro.Coro(lambda coro=None: None).value(timeout=10)
print(gc.get_threshold()[0], gevent.config.track_greenlet_tree)
'''


@pytest.mark.parametrize('before, env, expected', [
    ('', {}, '%d False' % asyncoro.core.GC_YOUNG),      # Python's and gevent's defaults: tuned
    ('gc.set_threshold(50000)', {}, '50000 False'),     # a higher threshold of its own stays
    ('gc.set_threshold(0)', {}, '0 False'),             # collections turned off stay off
    ('', {'GEVENT_TRACK_GREENLET_TREE': '1'}, '%d True' % asyncoro.core.GC_YOUNG),
])
def test_a_runtime_tunes_the_process_only_where_the_program_left_the_default(before, env,
                                                                            expected):
    env = dict({k: v for k, v in os.environ.items() if k != 'GEVENT_TRACK_GREENLET_TREE'},
               **env)
    out = subprocess.run([sys.executable, '-c', _SETTINGS.format(before=before)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected.split()
