# The server half of the client/server tutorial: a coroutine registered as
# 'server_coro' prints the messages it gets. Start this first, then
# tut_client.py; enter 'quit' (or end the input) to stop.
#
#     python tut_server.py

import asyncoro.disasyncoro as asyncoro


def server_proc(coro=None):
    coro.set_daemon()
    coro.register('server_coro')
    print('server_coro is at %s; enter "quit" to stop' % coro.location)
    while True:
        msg = yield coro.receive()
        print('processing %s' % msg)


if __name__ == '__main__':
    # udp_port=0 means the default discovery port (51350, or $ASYNCORO_UDP_PORT)
    asyncoro.AsynCoro(udp_port=0)
    asyncoro.Coro(server_proc)
    while True:
        try:
            cmd = input().strip().lower()
        except EOFError:
            break
        if cmd in ('quit', 'exit'):
            break
