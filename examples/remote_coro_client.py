# Sends 10 messages to the coroutine 'server_coro' of remote_coro_server.py
# (start that first) and ends at once: messages still queued for a peer
# when a program ends are sent before it exits, and they arrive in order.
#
#     python remote_coro_client.py

import asyncoro.disasyncoro as asyncoro


def client_proc(coro=None):
    # finds the coroutine registered as 'server_coro' on any peer
    rcoro = yield asyncoro.Coro.locate('server_coro', timeout=10)
    if rcoro is None:
        print('server_coro not found; is remote_coro_server.py running?')
        raise StopIteration(-1)
    print('server is at %s' % rcoro.location)
    for x in range(10):
        rcoro.send('message %s' % x)


# asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
asyncoro.Coro(client_proc)
