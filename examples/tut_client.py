# The client half of the client/server tutorial: 10 coroutines each send 3
# messages to 'server_coro' of tut_server.py (start that first). Each
# message is '<message id>: <coroutine number> / <count>'; the ids come
# from one counter that all the coroutines share.
#
#     python tut_client.py

import random

import asyncoro.disasyncoro as asyncoro

msg_id = 0


def client_proc(server, n, coro=None):
    global msg_id
    for x in range(3):
        yield coro.suspend(random.uniform(0.1, 0.5))
        msg_id += 1
        server.send('%d: %d / %d' % (msg_id, n, x))


def main(coro=None):
    server = yield asyncoro.Coro.locate('server_coro', timeout=10)
    if server is None:
        print('server_coro not found; is tut_server.py running?')
        raise StopIteration(-1)
    print('server is at %s' % server.location)
    for n in range(10):
        asyncoro.Coro(client_proc, server, n)


asyncoro.AsynCoro(udp_port=0)
asyncoro.Coro(main)
