# Channels (in one program): two coroutines subscribe to a channel; every
# number sent to the channel reaches both; one adds them up, the other
# multiplies them. None tells them that there are no more numbers.
#
#     python tut_channel.py

import random

import asyncoro


def seqsum(coro=None):
    result = 0
    while True:
        msg = yield coro.receive()
        if msg is None:
            break
        result += msg
    print('sum: %s' % result)


def seqprod(coro=None):
    result = 1
    while True:
        msg = yield coro.receive()
        if msg is None:
            break
        result *= msg
    print('prod: %s' % result)


channel = asyncoro.Channel('sum_prod')
# the coroutines subscribe (and get the numbers) before they even start
sum_coro = asyncoro.Coro(seqsum)
prod_coro = asyncoro.Coro(seqprod)
channel.subscribe(sum_coro)
channel.subscribe(prod_coro)
for _ in range(4):
    n = random.uniform(0.5, 3)
    channel.send(n)
    print('sent %s' % n)
channel.send(None)
# unsubscribing now does not take back what was sent
channel.unsubscribe(sum_coro)
channel.unsubscribe(prod_coro)
