"""Local messaging, creation and memory figures, side by side with raw gevent.

Run by hand: `python bench/local_messages.py [--messages N] [--coros N]`.
It prints, from one run on this machine:

- messages/s between two coroutines (Coro.send -> receive), greenlet style and
  yield style, next to a raw gevent.queue.Queue between two greenlets;
- coroutines created (and run to their end) per second, next to raw
  greenlet create+start;
- resident memory per idle coroutine (blocked in receive), yield style and
  greenlet style, next to a raw greenlet blocked in the hub.

Targets (issue 2): >= 1.5M messages/s and >= 1/4 of the raw queue figure;
>= 100k coroutines/s; <= 4 KiB per idle coroutine.
"""

import argparse
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gevent             # noqa: E402
import gevent.queue       # noqa: E402
import greenlet           # noqa: E402
import psutil             # noqa: E402

import asyncoro           # noqa: E402
from asyncoro import core  # noqa: E402


def best(runs, func, *args):
    """The best rate (count/seconds) of `runs` runs of func(*args) -> (count, seconds)."""
    rates = []
    for _ in range(runs):
        count, seconds = func(*args)
        rates.append(count / seconds)
    return max(rates)


# ----------------------------------------------------------- messages

def raw_queue(n):
    queue = gevent.queue.Queue()

    def produce():
        for i in range(n):
            queue.put(i)

    def consume():
        for _ in range(n):
            queue.get()
    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)])
    return n, time.perf_counter() - t0


def coro_messages_greenlet(n):
    def consume(coro=None):
        receive = coro.receive
        for _ in range(n):
            receive()

    def produce(consumer):
        send = consumer.send
        for i in range(n):
            send(i)

    def main(coro=None):
        t0 = time.perf_counter()
        consumer = asyncoro.Coro(consume)
        asyncoro.Coro(produce, consumer)
        consumer.finish()
        return n, time.perf_counter() - t0
    return asyncoro.Coro(main).value()


def coro_messages_yield(n):
    def consume(coro=None):
        for _ in range(n):
            yield coro.receive()

    def produce(consumer, coro=None):
        send = consumer.send
        for i in range(n):
            send(i)
        yield

    def main(coro=None):
        t0 = time.perf_counter()
        consumer = asyncoro.Coro(consume)
        asyncoro.Coro(produce, consumer)
        yield consumer.finish()
        return n, time.perf_counter() - t0
    return asyncoro.Coro(main).value()


def coro_messages_yield_pingpong(n):
    """Each message waits for the receiver to be scheduled (worst case)."""
    def echo(coro=None):
        while True:
            msg = yield coro.receive()
            if msg is None:
                break
            msg.send(msg)

    def main(coro=None):
        e = asyncoro.Coro(echo)
        t0 = time.perf_counter()
        for _ in range(n):
            e.send(coro)
            yield coro.receive()
        e.send(None)
        return n, time.perf_counter() - t0
    return asyncoro.Coro(main).value()


# ----------------------------------------------------------- creation

def raw_greenlet_create(n):
    def body():
        pass

    def main():
        hub = gevent.get_hub()
        t0 = time.perf_counter()
        for _ in range(n):
            g = greenlet.greenlet(body, parent=hub)
            hub.loop.run_callback(g.switch)
        gevent.sleep(0)
        return n, time.perf_counter() - t0
    return gevent.spawn(main).get()


def coro_create(n, style):
    if style == 'yield':
        def body(coro=None):
            yield
    else:
        def body(coro=None):
            pass

    def main(coro=None):
        t0 = time.perf_counter()
        coros = [asyncoro.Coro(body) for _ in range(n)]
        for c in coros:
            c.finish()
        return n, time.perf_counter() - t0
    return asyncoro.Coro(main).value()


# ----------------------------------------------------------- memory

def rss():
    gc.collect()
    return psutil.Process().memory_info().rss


def idle_memory(n, style):
    """Bytes of RSS per coroutine blocked in receive()."""
    if style == 'yield':
        def idle(coro=None):
            yield coro.receive()
    else:
        def idle(coro=None):
            coro.receive()

    def start(coro=None):
        return [asyncoro.Coro(idle) for _ in range(n)]

    def settle(coros, coro=None):
        # every coroutine has run up to its receive() once this one runs
        while any(c._state != core._WAITING for c in coros):
            coro.sleep(0.01)

    before = rss()
    coros = asyncoro.Coro(start).value()
    asyncoro.Coro(settle, coros).value()
    per = (rss() - before) / n
    for c in coros:
        c.send(None)
    for c in coros:
        c.value()
    return per


def raw_idle_memory(n):
    hub = gevent.get_hub()

    def body():
        hub.switch()
    before = rss()
    keep = []
    for _ in range(n):
        g = greenlet.greenlet(body, parent=hub)
        hub.loop.run_callback(g.switch)
        keep.append(g)
    gevent.sleep(0)
    per = (rss() - before) / n
    for g in keep:
        g.parent = greenlet.getcurrent()
        g.throw(greenlet.GreenletExit)
    return per


MEMORY_PROBES = {'raw': raw_idle_memory,
                 'yield': lambda k: idle_memory(k, 'yield'),
                 'greenlet': lambda k: idle_memory(k, 'greenlet')}


def memory_in_fresh_process(kind, k):
    """Bytes per idle coroutine, measured in a new interpreter so that memory
    freed by earlier measurements cannot be reused and hide the cost."""
    out = subprocess.check_output([sys.executable, os.path.abspath(__file__),
                                   '--memory-probe', kind, '--coros', str(k)], timeout=600)
    return float(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--messages', type=int, default=1000000)
    parser.add_argument('--coros', type=int, default=100000)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--memory-probe', choices=sorted(MEMORY_PROBES),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, m, runs = args.messages, args.coros, args.runs
    if args.memory_probe:
        print(MEMORY_PROBES[args.memory_probe](m))
        return 0

    raw = best(runs, raw_queue, n)
    greenlet_rate = best(runs, coro_messages_greenlet, n)
    yield_rate = best(runs, coro_messages_yield, n)
    pingpong = best(runs, coro_messages_yield_pingpong, n // 10)
    print('messages/s (%d messages, best of %d)' % (n, runs))
    print('  raw gevent.queue.Queue          %12.0f' % raw)
    print('  Coro send/receive, greenlet     %12.0f  (%.2f of raw)' % (greenlet_rate, greenlet_rate / raw))
    print('  Coro send/receive, yield        %12.0f  (%.2f of raw)' % (yield_rate, yield_rate / raw))
    print('  Coro ping-pong round trips, yield %10.0f' % pingpong)

    raw_create = best(runs, raw_greenlet_create, m)
    create_yield = best(runs, coro_create, m, 'yield')
    create_greenlet = best(runs, coro_create, m, 'greenlet')
    print('coroutines created and run to the end per second (%d)' % m)
    print('  raw greenlet create+start       %12.0f' % raw_create)
    print('  Coro, yield style               %12.0f' % create_yield)
    print('  Coro, greenlet style            %12.0f' % create_greenlet)

    k = min(m, 50000)
    print('resident memory per idle coroutine (%d blocked in receive, each in a fresh process)' % k)
    print('  raw greenlet blocked in hub     %9.0f B' % memory_in_fresh_process('raw', k))
    print('  Coro, yield style               %9.0f B' % memory_in_fresh_process('yield', k))
    print('  Coro, greenlet style            %9.0f B' % memory_in_fresh_process('greenlet', k))
    return 0


if __name__ == '__main__':
    sys.exit(main())
