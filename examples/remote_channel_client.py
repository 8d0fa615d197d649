# Finds the channel '2clients' of remote_channel_server.py (start that
# first), subscribes a coroutine of its own to it, and sends 10 messages
# through it with 'deliver', each time waiting until 2 subscribers (the
# server's and this program's) have the message. A message is a dict that
# carries the sending coroutine itself: a remote reference to it, at the
# server.
#
#     python remote_channel_client.py

import asyncoro.disasyncoro as asyncoro


def receiver_proc(coro=None):
    while True:
        msg = yield coro.receive()
        if msg is None:
            break
        print('Received "%s" from %s at %s' % (msg['msg'], msg['sender'].name,
                                               msg['sender'].location))


def sender_proc(rchannel, coro=None):
    for k in range(10):
        msg = {'msg': 'message %s' % k, 'sender': coro}
        # the first waits until the server's coroutine has subscribed
        n = yield rchannel.deliver(msg, n=2)
        print('delivered to: %s' % n)
        yield coro.sleep(0.1)


def client_proc(coro=None):
    rchannel = yield asyncoro.Channel.locate('2clients', timeout=10)
    if rchannel is None:
        print('channel 2clients not found; is remote_channel_server.py running?')
        raise StopIteration(-1)
    print('server is at %s' % rchannel.location)
    receiver = asyncoro.Coro(receiver_proc)
    if (yield rchannel.subscribe(receiver)) != 0:
        raise Exception('could not subscribe to %s' % rchannel)
    sender = asyncoro.Coro(sender_proc, rchannel)
    yield sender.finish()
    # None ends this program's receiver (the server's ignores it)
    rchannel.send(None)
    yield receiver.finish()
    yield rchannel.unsubscribe(receiver)


# asyncoro.logger.setLevel(asyncoro.Logger.DEBUG)
asyncoro.Coro(client_proc)
