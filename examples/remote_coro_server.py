# A coroutine that other programs find by its name and send messages to.
# Start this first, then remote_coro_client.py (in another terminal, or on
# another machine of the network); enter 'quit' (or end the input) to stop.
#
#     python remote_coro_server.py

import asyncoro.disasyncoro as asyncoro


def server_proc(coro=None):
    # the program does not wait for a daemon coroutine at exit
    coro.set_daemon()
    # Coro.locate('server_coro') in other programs finds it by this name
    coro.register('server_coro')
    print('server_coro is at %s; enter "quit" to stop' % coro.location)
    while True:
        msg = yield coro.receive()
        print('Received %s' % msg)


if __name__ == '__main__':
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    asyncoro.Coro(server_proc)
    # the main thread waits for input while the coroutine serves
    while True:
        try:
            cmd = input().strip().lower()
        except EOFError:
            break
        if cmd in ('quit', 'exit'):
            break
