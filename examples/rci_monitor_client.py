# RCI, client side: finds the RCI 'rci_1' that rci_monitor_server.py
# published, starts 5 coroutines of it there, sends each a message, and
# monitors them: a monitor coroutine gets a MonitorException when each one
# ends, with its value or its exception. Start rci_monitor_server.py first.
#
#     python rci_monitor_client.py
#
# The results are debug log lines of asyncoro's logger.

import asyncoro.disasyncoro as asyncoro


# gets a MonitorException for each remote coroutine that ends
def monitor_proc(n, coro=None):
    done = 0
    while done < n:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            rcoro = msg.args[0]
            value_type, value = msg.args[1]
            if value_type == StopIteration:
                asyncoro.logger.debug('RCI %s finished with: %s' % (rcoro, value))
            else:
                asyncoro.logger.debug('RCI %s failed with: %s' % (rcoro, value.args[0]))
            done += 1
        else:
            asyncoro.logger.warning('ignoring invalid message')


def rci_test(coro=None):
    # find the RCI at whichever peer has it (waiting for the server, if it
    # has not been discovered yet) ...
    rci1 = yield asyncoro.RCI.locate('rci_1', timeout=10)
    if rci1 is None:
        print('RCI rci_1 not found; is rci_monitor_server.py running?')
        raise StopIteration(-1)
    print('RCI is at %s' % rci1.location)
    # ... or find the peer by its name first, then the RCI there
    location = yield asyncoro.AsynCoro().locate('server', timeout=10)
    rci1 = yield asyncoro.RCI.locate('rci_1', location)
    print('RCI is at %s' % rci1.location)

    n = 5
    monitor = asyncoro.Coro(monitor_proc, n)
    for x in range(n):
        # starts rci_1('test<x>', b=x) at the server; returns the remote coroutine
        rcoro = yield rci1('test%s' % x, b=x)
        asyncoro.logger.debug('RCI %s created' % rcoro)
        # 'monitor' becomes a monitor of rcoro
        yield monitor.monitor(rcoro)
        rcoro.send('msg:%s' % x)
    yield monitor.finish()


asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
asyncoro.AsynCoro(name='client', secret='test')
asyncoro.Coro(rci_test)
