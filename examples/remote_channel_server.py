# A channel that other programs find by its name, subscribe to and send
# messages through. A coroutine of this program subscribes to it too, but
# only some seconds after the start (5 by default): a client's 'deliver'
# that waits for 2 subscribers waits until then. Start this first, then
# remote_channel_client.py; enter 'quit' (or end the input) to stop.
#
#     python remote_channel_server.py [seconds]

import asyncoro.disasyncoro as asyncoro


def receiver_proc(channel, delay, coro=None):
    coro.set_daemon()
    yield coro.sleep(delay)
    yield channel.subscribe(coro)
    print('receiver subscribed to %s' % channel.name)
    while True:
        msg = yield coro.receive()
        if msg is None:     # the client's "end of messages"; this one keeps going
            continue
        print('Received "%s" from %s at %s' % (msg['msg'], msg['sender'].name,
                                               msg['sender'].location))


if __name__ == '__main__':
    import sys
    # asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
    delay = 5 if len(sys.argv) < 2 else float(sys.argv[1])
    channel = asyncoro.Channel('2clients')
    # Channel.locate('2clients') in other programs finds it
    channel.register()
    asyncoro.Coro(receiver_proc, channel, delay)
    print('channel %s is at %s; enter "quit" to stop' % (channel.name, channel.location))
    while True:
        try:
            cmd = input().strip().lower()
        except EOFError:
            break
        if cmd in ('quit', 'exit'):
            break
    channel.unregister()
