# Message passing (in one program): a server coroutine prints the messages
# that 10 client coroutines send it, 3 each, at random moments. Each
# message is '<message id>: <client number> / <count>'.
#
#     python tut_client_server.py

import random

import asyncoro


def server_proc(coro=None):
    # a daemon: the program ends when the clients are done
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        print('processing %s' % msg)


msg_id = 0


def client_proc(server, n, coro=None):
    global msg_id
    for x in range(3):
        # suspend is another name for sleep
        yield coro.suspend(random.uniform(0.1, 0.5))
        msg_id += 1
        server.send('%d: %d / %d' % (msg_id, n, x))


server = asyncoro.Coro(server_proc)
for i in range(10):
    asyncoro.Coro(client_proc, server, i)
