"""asyncoro.strict: the hub's rule, checked while it runs (tests switch it on).

What it owns: `ON` (whether strict mode is on: ``$ASYNCORO_STRICT=1``),
`timed(what, func, *args)`, which runs one step of the hub greenlet (a
frame's handler, an inline operation) and checks it, and the record of the
slowest steps, written at exit to ``$ASYNCORO_STRICT_LOG`` when that is set.

How it works: a step of the hub greenlet must neither block nor run long
(DESIGN: the hub's rule), or every peer of the process waits. In strict
mode each step is measured with the thread's own scheduler counters
(``/proc/thread-self/schedstat``: time on a CPU and time waiting for one),
so that a step the machine merely did not run (a busy test machine) is not
taken for one that blocked. One ERROR line, beginning ``strict mode:``,
names a step that ran more than LIMIT seconds on the CPU or was blocked
(neither running nor waiting to) more than LIMIT; and every
BlockingSwitchOutError (gevent's word for a wait in the hub greenlet) is
logged so too, where it is made, even if the code that meets it swallows
it. The test fixtures fail a test whose programs log either. Imports nothing
of the package.
"""

import atexit
import collections
import json
import logging
import os
import sys
import time
import traceback

import gevent.exceptions
import gevent.monkey

# the OS thread's id, even where a program has monkey-patched _thread
_thread_id = gevent.monkey.get_original('_thread', 'get_ident')

__all__ = []

log = logging.getLogger(__name__)

ON = os.environ.get('ASYNCORO_STRICT') == '1'
LIMIT = 0.020                   # seconds a step may take, on the CPU or blocked
_SLOWEST = 12                   # steps kept in the record written at exit

_steps = collections.defaultdict(lambda: [0, 0.0, 0.0])     # what -> [count, most wall, most cpu]
_counters = {}                  # thread id -> fd of its schedstat (None where there is none)
_said = [False]                 # a step running now (or one within it) was reported


def _schedstat():
    """(ns on a CPU, ns waiting for one) of this thread; None if unknown."""
    tid = _thread_id()
    fd = _counters.get(tid, -1)
    if fd == -1:
        try:
            fd = os.open('/proc/thread-self/schedstat', os.O_RDONLY)
        except OSError:         # not Linux: the CPU time alone is measured
            fd = None
        _counters[tid] = fd
    if fd is None:
        return None
    ran, waited = os.pread(fd, 64, 0).split()[:2]
    return int(ran), int(waited)


def timed(what, func, *args):
    """Run ``func(*args)``, one step of the hub greenlet named `what`; in
    strict mode, check it (see the module docstring). Returns what it
    returns; raises what it raises."""
    if not ON:
        return func(*args)
    before, wall = _schedstat(), time.perf_counter()
    cpu = time.thread_time()
    outer = _said[0]
    _said[0] = False
    try:
        return func(*args)
    finally:
        inner, _said[0] = _said[0], outer or _said[0]
        wall = time.perf_counter() - wall
        cpu = time.thread_time() - cpu
        after = _schedstat() if before is not None else None
        waited = (after[1] - before[1]) / 1e9 if after is not None else 0.0
        blocked = max(wall - cpu - waited, 0.0) if after is not None else 0.0
        entry = _steps[what]
        entry[0] += 1
        entry[1] = max(entry[1], wall)
        entry[2] = max(entry[2], cpu)
        if inner:           # a step within it (an operation within its frame) said it
            pass
        elif cpu > LIMIT:
            _said[0] = True
            log.error('strict mode: %s ran %.1f ms in the hub greenlet (its rule: %d ms at '
                      'most)', what, cpu * 1000, LIMIT * 1000)
        elif blocked > LIMIT:
            _said[0] = True
            log.error('strict mode: %s blocked the hub greenlet %.1f ms (%.1f ms in all, %.1f '
                      'ms waiting for a CPU)', what, blocked * 1000, wall * 1000, waited * 1000)


def _noted_block(self, *args):
    """BlockingSwitchOutError's __init__ in strict mode: a wait in the hub
    greenlet, logged where it happens (whoever catches it later)."""
    log.error('strict mode: a wait in the hub greenlet (%s), at:\n%s',
              args[0] if args else 'BlockingSwitchOutError',
              ''.join(traceback.format_stack(limit=12)[:-1]))
    _blocking_init(self, *args)


def _write_record():
    """At exit: the slowest steps of this process, one JSON line appended to
    $ASYNCORO_STRICT_LOG."""
    path = os.environ.get('ASYNCORO_STRICT_LOG')
    if not path or not _steps:
        return
    slowest = sorted(_steps.items(), key=lambda item: -item[1][1])[:_SLOWEST]
    line = json.dumps({'program': os.path.basename(sys.argv[0] if sys.argv else '?'),
                       'pid': os.getpid(),
                       'steps': [[what, n, round(wall * 1000, 3), round(cpu * 1000, 3)]
                                 for what, (n, wall, cpu) in slowest]})
    try:
        with open(path, 'a') as f:
            f.write(line + '\n')
    except OSError as exc:      # the record is for the tests' report: say so, go on
        log.warning('strict mode: could not write its record to %s: %s', path, exc)


_blocking_init = gevent.exceptions.BlockingSwitchOutError.__init__
if ON:
    gevent.exceptions.BlockingSwitchOutError.__init__ = _noted_block
    atexit.register(_write_record)
