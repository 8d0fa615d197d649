# Coroutines (in one program): 10 coroutines sleep for random times. A
# sleeping coroutine lets the others run, so they all sleep at once and the
# program takes as long as the longest sleep, not the sum of them.
#
#     python tut_coros.py

import random
import time

import asyncoro


def coro_proc(n, coro=None):
    s = random.uniform(0.2, 1.5)
    print('%d: %s sleeping for %.3f seconds' % (n, coro, s))
    start = time.time()
    yield coro.sleep(s)
    print('%d: woke up after %.3f seconds' % (n, time.time() - start))


for i in range(10):
    asyncoro.Coro(coro_proc, i)
