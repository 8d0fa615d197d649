# RCI (remote coroutine invocation), server side: publishes the generator
# function 'rci_1' so that other programs can start coroutines of it here.
# Start this first, then rci_monitor_client.py (in another terminal, or on
# another machine of the network); enter 'quit' (or end the input) to stop.
#
#     python rci_monitor_server.py

import asyncoro.disasyncoro as asyncoro


# a coroutine started by a client: it waits for one message, then "works"
# for a while; with an even 'b' its value is the message, with an odd 'b'
# it fails (the client's monitor gets the exception)
def rci_1(a, b=1, coro=None):
    print('running %s with %s, %s' % (coro, a, b))
    msg = yield coro.receive()
    yield coro.sleep(b * 0.2)
    if b % 2 == 0:
        raise StopIteration(msg)
    raise Exception('invalid invocation: %s' % b)


if __name__ == '__main__':
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    # the client finds this runtime by its name; both use the same secret
    asyncoro.AsynCoro(name='server', secret='test')
    rci1 = asyncoro.RCI(rci_1)
    rci1.register()
    print('RCI %s registered at %s; enter "quit" to stop' % (rci1.name, rci1.location))
    while True:
        try:
            cmd = input().strip().lower()
        except EOFError:
            break
        if cmd in ('quit', 'exit'):
            break
    rci1.unregister()
