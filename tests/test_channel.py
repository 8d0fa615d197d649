"""Local channels and CategorizeMessages (docs/guide/messages.rst)."""

import asyncoro
from conftest import run_coro


def collect(n, coro=None):
    got = []
    for _ in range(n):
        got.append((yield coro.receive(timeout=5)))
    return got


def test_send_reaches_every_subscriber_in_order_even_before_they_start():
    def main(coro=None):
        channel = asyncoro.Channel('ch-order')
        subs = [asyncoro.Coro(collect, 4) for _ in range(2)]
        for s in subs:
            assert (yield channel.subscribe(s)) == 0
            assert (yield channel.subscribe(s)) == 0      # twice: no extra effect
        for x in (1, 2, 3, 4):
            assert channel.send(x) == 0
        results = []
        for s in subs:
            results.append((yield s.finish(timeout=5)))
        channel.close()
        return results
    assert run_coro(main) == [[1, 2, 3, 4], [1, 2, 3, 4]]


def test_transform_replaces_and_drops_messages():
    def upper_unless_secret(name, msg):
        return None if msg == 'secret' else '%s:%s' % (name, msg.upper())

    def main(coro=None):
        channel = asyncoro.Channel('tx', transform=upper_unless_secret)
        s = asyncoro.Coro(collect, 2)
        yield channel.subscribe(s)
        channel.send('a')
        channel.send('secret')
        dropped = yield channel.deliver('secret')
        channel.send('b')
        got = yield s.finish(timeout=5)
        channel.close()
        return dropped, got
    assert run_coro(main) == (0, ['tx:A', 'tx:B'])


def test_none_is_a_message_like_any_other_without_a_transform():
    # "send None to end the subscribers" is the usual idiom (tut_channel.py);
    # only a transform's None means "drop"
    def main(coro=None):
        channel = asyncoro.Channel('ch-none')
        s = asyncoro.Coro(collect, 3)
        yield channel.subscribe(s)
        channel.send(1)
        delivered = yield channel.deliver(None)
        channel.send(None)
        got = yield s.finish(timeout=5)
        channel.close()
        return delivered, got
    assert run_coro(main) == (1, [1, None, None])


def test_invalid_transform_is_ignored():
    def one_arg(msg):
        return msg
    channel = asyncoro.Channel('bad-tx', transform=one_arg)
    assert channel.set_transform(one_arg) == -1
    assert channel._transform is None
    channel.close()


def test_deliver_waits_for_n_subscribers_and_counts_hierarchy():
    def late_subscriber(channel, coro=None):
        yield coro.sleep(0.05)
        yield channel.subscribe(coro)
        return (yield coro.receive(timeout=5))

    def main(coro=None):
        top = asyncoro.Channel('top')
        sub = asyncoro.Channel('sub')
        a = asyncoro.Coro(collect, 1)
        b = asyncoro.Coro(collect, 1)
        yield sub.subscribe(a)
        yield sub.subscribe(b)
        yield top.subscribe(sub)                    # channels are hashable subscribers
        late = asyncoro.Coro(late_subscriber, top)
        count = yield top.deliver('hello', timeout=5, n=2)
        too_few = yield top.deliver('x', timeout=0.02, n=5)
        invalid = yield top.deliver('x', n=-1)
        values = [(yield a.finish(timeout=5)), (yield b.finish(timeout=5)),
                  (yield late.finish(timeout=5))]
        top.close()
        sub.close()
        return count, too_few, invalid, values
    count, too_few, invalid, values = run_coro(main)
    assert count == 3        # the late coroutine + both of the sub-channel's
    assert (too_few, invalid) == (0, -1)
    assert values == [['hello'], ['hello'], 'hello']


def test_unsubscribe_and_finished_subscribers_are_dropped():
    def quick(coro=None):
        yield

    def main(coro=None):
        channel = asyncoro.Channel('unsub')
        s = asyncoro.Coro(collect, 1)
        q = asyncoro.Coro(quick)
        yield channel.subscribe(s)
        yield channel.subscribe(q)
        yield q.finish()
        channel.send('one')                 # q has finished: dropped quietly
        first = yield channel.unsubscribe(s)
        second = yield channel.unsubscribe(s)
        got = yield s.finish(timeout=5)
        left = len(channel._subscribers)
        channel.close()
        return first, second, got, left
    assert run_coro(main) == (0, -1, ['one'], 0)


def test_locate_register_and_names():
    def main(coro=None):
        channel = asyncoro.Channel('!weird-name')      # leading symbol stripped
        assert channel.name == 'weird-name'
        found = yield asyncoro.Channel.locate('weird-name')
        assert channel.register() == 0
        dup = asyncoro.Channel('weird-name')           # not put in the table
        again = yield asyncoro.Channel.locate('weird-name')
        channel.close()
        dup.close()
        return found is channel, again is channel, repr(channel), channel.location
    found, again, text, location = run_coro(main)
    assert (found, again) == (True, True)
    assert text == ('~weird-name' if location is None else '~weird-name@%s' % location)


def test_send_from_the_main_thread():
    channel = asyncoro.Channel('from-main')
    s = asyncoro.Coro(collect, 3)
    assert channel.subscribe(s) == 0
    for x in 'abc':
        assert channel.send(x) == 0
    assert s.value(timeout=5) == ['a', 'b', 'c']
    channel.close()


def test_categorize_messages():
    def kind(msg):
        return msg[0] if isinstance(msg, tuple) else None

    def main(coro=None):
        cm = asyncoro.CategorizeMessages(coro)
        assert cm.add(kind) == 0
        assert cm.add(lambda a, b: a) == -1           # not a one-argument function
        for msg in [('b', 1), 'plain', ('a', 2), ('b', 3), 'other']:
            coro.send(msg)
        got = [(yield cm.receive('a')), (yield cm.receive('b')), (yield cm.receive(None)),
               (yield cm.receive('b')), (yield cm.receive(None))]
        timed_out = yield cm.receive('a', timeout=0.02, alarm_value='none')
        assert cm.remove(kind) == 0 and cm.remove(kind) == -1
        return got, timed_out
    got, timed_out = run_coro(main)
    assert got == [('a', 2), ('b', 1), 'plain', ('b', 3), 'other']
    assert timed_out == 'none'
