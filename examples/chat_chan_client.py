# A chat client for chat_chan_server.py (start that first). Type lines to
# send them to everyone; everyone's lines, your own included, show as
# '    <client number> says: <text>'. Lines in capitals only are dropped by
# the server's channel. 'quit' (or the end of the input) leaves the chat.
#
#     python chat_chan_client.py

import asyncoro.disasyncoro as asyncoro


# prints what comes through the channel
def recv_proc(coro=None):
    while True:
        kind, who, text = yield coro.receive()
        if kind == 'says':
            print('    %s says: %s' % (who, text))
        elif kind == 'joined':
            print('    %s joined :-)' % who)
        elif kind == 'left':
            print('    %s left :-(' % who)
        elif kind == 'quit':
            print('    the server quit; enter "quit" to leave')
        elif kind == 'end':
            break


def client_proc(thread_pool, coro=None):
    server = yield asyncoro.Coro.locate('chat_server', timeout=10)
    if server is None:
        print('chat_server not found; is chat_chan_server.py running?')
        raise StopIteration(-1)
    channel = yield asyncoro.Channel.locate('chat_channel', server.location, timeout=10)
    # subscribe first, so that this client sees everything after its 'joined'
    receiver = asyncoro.Coro(recv_proc)
    if (yield channel.subscribe(receiver)) != 0:
        raise Exception('could not subscribe to %s' % channel)
    print('  (type lines to send them to everyone; "quit" to leave)')
    server.send(('join', coro))
    client_id = yield coro.receive()

    while True:
        # input() blocks, so it runs in a thread of the pool; the coroutine
        # waits for its result without blocking anything else
        try:
            line = yield thread_pool.async_task(input)
        except EOFError:
            break
        line = line.strip()
        if line.lower() in ('quit', 'exit'):
            break
        if line:
            channel.send(('says', client_id, line))

    server.send(('leave', client_id))
    yield channel.unsubscribe(receiver)
    receiver.send(('end', None, None))


# asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
# one thread, to read the input
thread_pool = asyncoro.AsyncThreadPool(1)
asyncoro.Coro(client_proc, thread_pool)
