# ruff: noqa: F403, F405 -- the original style: names come from `from asyncoro.discoro import *`
# Run 'discoronode.py' with at least 2 servers first (see README), then:
#
#     python discoro_client6_channel.py [number of items] [random seed]
#
# discoro_client6.py with a channel: the client creates a channel and
# passes it to the two jobs, which subscribe to it; the client sends each
# data item once, to the channel, and the channel passes it on to both.
# 'deliver' with n=2 waits until both jobs have subscribed.

import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *


# on a server: a value more than 'threshold' standard deviations away from
# the mean of the 'window_size' values before it is a trend signal
def rcoro_avg_proc(channel, threshold, trend_coro, window_size, coro=None):
    import collections, math
    if (yield channel.subscribe(coro)) != 0:
        raise Exception('could not subscribe to %s' % channel)
    # the channel's first message is 'start': the client delivers it once
    # both jobs have subscribed
    assert (yield coro.receive()) == 'start'
    window = collections.deque(maxlen=window_size)
    count, in_order = 0, True
    while True:
        item = yield coro.receive()
        if item is None:
            break
        i, value = item
        in_order = in_order and i == count
        count += 1
        if len(window) == window_size:
            mean = sum(window) / window_size
            stdev = math.sqrt(sum((x - mean) ** 2 for x in window) / window_size)
            if value > mean + threshold * stdev:
                trend_coro.send((i, 'high', value))
            elif value < mean - threshold * stdev:
                trend_coro.send((i, 'low', value))
        window.append(value)
    yield channel.unsubscribe(coro)
    trend_coro.send(('end', count, in_order))
    raise StopIteration(0)


# on another server: saves the data, in its server's directory, and sends
# the file to the client at the end
def rcoro_save_proc(channel, client, coro=None):
    if (yield channel.subscribe(coro)) != 0:
        raise Exception('could not subscribe to %s' % channel)
    assert (yield coro.receive()) == 'start'
    count, in_order = 0, True
    with open('tickdata', 'w') as fd:
        while True:
            item = yield coro.receive()
            if item is None:
                break
            i, value = item
            in_order = in_order and i == count
            count += 1
            fd.write('%d: %s\n' % (i, value))
    yield channel.unsubscribe(coro)
    sent = yield asyncoro.AsynCoro().send_file(client.location, 'tickdata', overwrite=True,
                                               timeout=30)
    client.send((count, in_order, sent == 0))
    raise StopIteration(0)


# on the client: prints the trend signals as they come; its value is what
# the analysing job saw
def trend_proc(coro=None):
    while True:
        msg = yield coro.receive()
        if msg[0] == 'end':
            return msg[1:]
        print('    trend signal at %d: %s / %.2f' % msg)


def client_proc(computation, nitems, seed, coro=None):
    if (yield computation.schedule()):
        raise Exception('Could not schedule computation')

    data_channel = asyncoro.Channel('data_channel')
    trend_coro = asyncoro.Coro(trend_proc)
    avg_coro = yield computation.run(rcoro_avg_proc, data_channel, 2.0, trend_coro, 20)
    save_coro = yield computation.run(rcoro_save_proc, data_channel, coro)
    if not (isinstance(avg_coro, asyncoro.Coro) and isinstance(save_coro, asyncoro.Coro)):
        print('could not start the jobs: %s, %s' % (avg_coro, save_coro))
        trend_coro.terminate()
        yield computation.close()
        raise StopIteration(-1)

    for rcoro in (avg_coro, save_coro):
        yield asyncoro.AsynCoro.instance().peer(rcoro.location, stream_send=True)

    # wait (up to 30 seconds) until 2 subscribers have the message
    n = yield data_channel.deliver('start', n=2, timeout=30)
    print("  'start' delivered to %d subscribers" % n)
    if n != 2:
        avg_coro.terminate()
        save_coro.terminate()
        trend_coro.terminate()
        yield computation.close()
        raise StopIteration(-1)

    data = random.Random(seed)
    value = 100.0
    for i in range(nitems):
        value = round(value + data.gauss(0, 1), 2)
        data_channel.send((i, value))
        yield coro.sleep(0.01)
    data_channel.send(None)

    count, in_order = yield trend_coro.finish()
    print('  rcoro_avg_proc analysed %d items%s' % (count, '' if in_order else ' OUT OF ORDER'))
    count, in_order, sent = yield coro.receive()
    print('  rcoro_save_proc saved %d items%s' % (count, '' if in_order else ' OUT OF ORDER'))
    if sent:
        # the file came to this program's dest_path (which Scheduler() set)
        shutil.move(os.path.join(asyncoro.AsynCoro().dest_path, 'tickdata'), 'tickdata')
        print('  the data is in %s' % os.path.abspath('tickdata'))
    else:
        print('  the data file could not be sent back')
    data_channel.close()
    yield computation.close()


if __name__ == '__main__':
    import os, random, shutil, sys
    # 'tickdata' goes next to this program
    os.chdir(os.path.dirname(os.path.abspath(sys.argv[0])))
    nitems = 500 if len(sys.argv) < 2 else int(sys.argv[1])
    seed = None if len(sys.argv) < 3 else int(sys.argv[2])
    Scheduler()
    computation = Computation([])
    asyncoro.Coro(client_proc, computation, nitems, seed)
