# A chat server: a channel 'chat_channel' that chat_chan_client.py programs
# subscribe to, and a coroutine 'chat_server' that gives each client its
# number and tells everyone who joins and who leaves. The channel's
# transform drops lines written in capitals only (shouting). Start this
# first, then as many chat_chan_client.py as you like (in other terminals,
# or on other machines of the network); enter 'quit' (or end the input) to
# stop.
#
#     python chat_chan_server.py

import asyncoro.disasyncoro as asyncoro


# applied by the channel to every message; what it returns is sent instead
# of the message, and None drops it
def txfm_msgs(name, msg):
    kind, who, text = msg
    if kind == 'says' and text.isupper():
        return None
    return msg


def server_proc(coro=None):
    channel = asyncoro.Channel('chat_channel', transform=txfm_msgs)
    channel.register()
    coro.register('chat_server')
    print('chat server is at %s; enter "quit" to stop' % coro.location)
    client_id = 0
    while True:
        msg = yield coro.receive()
        if msg == 'quit':
            break
        kind, who = msg
        if kind == 'join':
            # 'who' is the client's coroutine: it gets its number
            client_id += 1
            who.send(client_id)
            channel.send(('joined', client_id, None))
        elif kind == 'leave':
            channel.send(('left', who, None))
    channel.send(('quit', 0, None))
    coro.unregister('chat_server')
    channel.unregister()
    raise StopIteration(client_id)


if __name__ == '__main__':
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    # a client that vanishes is given up after 3 failed connections
    asyncoro.MaxConnectionErrors = 3
    server = asyncoro.Coro(server_proc)
    while True:
        try:
            cmd = input().strip().lower()
        except EOFError:
            break
        if cmd in ('quit', 'exit'):
            break
    server.send('quit')
    print('%s clients joined' % server.value())
