"""asyncoro.guard: the peers served while the hub is stuck.

What it owns: `StallGuard`, one per distributed runtime: a thread of its
own that watches the hub and, while the hub is stalled, serves the
connections itself.

How it works: a user coroutine that computes without yielding (or calls
time.sleep) holds the hub. The guard looks every STALL/2 seconds at the hub
loop's count of turns: a hub that has made no turn for STALL seconds while a
connection has bytes to read or to write is stalled. Then the guard reads
the connections itself, queues messages for their coroutines, acknowledges
`deliver` requests, writes what is queued, and hands every other request to
the hub for when it is back. A hub with no turn and no bytes is idle: it
waits in the poll, and so does the guard, for bytes (which wake both) or for
IDLE seconds at most (a timer may have woken the hub into a job that holds
it). An idle runtime so costs one wake-up of the guard a second, and none
of its hub. (With a loop that does not count its turns, libuv's, a timer of
the hub marks each turn instead, and the guard looks every BEAT seconds.)
The hub runs what was handed to it before the next frame it reads, so the
order of each connection's frames is kept. The guard touches hub objects
only through Connection.guard_* (under the connection's lock) and the
runtime's thread-safe hand-over.
"""

import logging
import select
import time

from asyncoro import core, netio
from asyncoro.handlers import DELIVER, HANDLERS, REPLY, SEND

__all__ = []

log = logging.getLogger(__name__)

BEAT = 0.05         # seconds: the hub marks its turns this often, where its loop counts none
STALL = 0.25        # seconds without a turn of a hub that has work: it is stalled
IDLE = 1.0          # seconds the guard of an idle hub waits for bytes before it looks again

# the real sleep, even where a program has monkey-patched time: this is a thread
_sleep = core._get_original('time', 'sleep')


class StallGuard:
    """The guard of runtime `rt`, whose peers are `peers` (asyncoro.peers):
    the hub reads frames with ``on_frames(conn, payloads)`` and handles one
    with ``dispatch(conn, request, kind)``."""

    def __init__(self, rt, peers, on_frames, dispatch):
        self.rt = rt
        self.peers = peers
        self.on_frames = on_frames
        self.dispatch = dispatch
        self.closing = False
        self._beat = time.monotonic()   # the hub's last turn (a loop that counts none)
        self._beat_timer = None

    def start(self):
        """Start the thread (and, for a loop that does not count its turns, the
        hub's timer that marks them). Call it in the hub thread."""
        loop = self.rt._loop
        if getattr(loop, 'iteration', -1) < 0:
            self._beat_timer = loop.timer(BEAT, BEAT)
            self._beat_timer.start(self._mark_beat)
        core._start_new_thread(self._main, ())

    def stop(self):
        self.closing = True
        if self._beat_timer is not None:
            self._beat_timer.close()

    def _mark_beat(self):
        self._beat = time.monotonic()

    def _main(self):
        """The thread: serve the connections while the hub is stalled."""
        loop = self.rt._loop
        counted = self._beat_timer is None      # the loop counts its turns
        turn, since = (loop.iteration if counted else None), time.monotonic()
        idle = False
        watched = _Watched(self.peers)
        try:
            while not self.closing:
                if idle:
                    # an idle hub waits for bytes, and so does the guard (or for IDLE
                    # seconds: a timer may have woken the hub into a job that stalls
                    # it); a hub woken by them has STALL to take them from now
                    if not watched.readable(IDLE) and loop.iteration == turn:
                        continue            # no bytes and no turn: idle still
                    since, idle = time.monotonic(), False
                else:
                    _sleep(STALL / 2 if counted else BEAT)
                now = time.monotonic()
                if counted:
                    if loop.iteration != turn:      # the hub went round: not stalled
                        turn, since = loop.iteration, now
                        continue
                    if now - since < STALL:
                        continue
                elif now - self._beat < STALL:
                    continue
                idle = counted and not self._serve(watched, 0 if counted else BEAT)
        finally:
            watched.close()

    def _serve(self, watched, wait):
        """The hub has made no turn for STALL: write what the connections have
        queued, read what they have come in. Returns whether there was either:
        with neither, the hub is not stalled but idle."""
        rt, busy = self.rt, False
        for conn in netio.Connection.with_outbox(watched.connections()):
            busy = True
            failed = conn.guard_flush()
            if failed:
                rt._call_threadsafe(conn.close, failed)
        readable = watched.readable(wait)
        for conn in readable:
            failed = conn.guard_read(self._on_frames)
            if failed:
                rt._call_threadsafe(conn.close, failed)
        return busy or bool(readable)

    def _on_frames(self, conn, payloads):
        for payload in payloads:
            self._on_frame(conn, payload)

    def _on_frame(self, conn, payload):
        """A frame read by the guard: messages are queued for their
        coroutines and `deliver`s acknowledged now; the rest waits for the hub."""
        rt = self.rt
        try:
            request = netio.loads(payload)
            kind = request[0]
        except Exception:      # malformed: the hub logs it and closes the connection
            rt._call_threadsafe(self.on_frames, conn, [payload])
            return
        if kind == SEND or kind == DELIVER:
            coro_id, name, message = request[-3:]
            coro = rt.local_coro(coro_id, name)
            alive = coro is not None and coro.is_alive()
            if alive:
                coro.send(message)          # (from this thread, it hands itself to the hub)
            elif kind == SEND:
                rt._call_threadsafe(HANDLERS[SEND], rt, conn, request)    # it logs the drop
            if kind == DELIVER:
                reply = netio.dumps((REPLY, request[1], 1 if alive else -1))
                peer = self.peers.get(conn.info)
                if peer is None or peer.out is None or not peer.out.guard_send(reply):
                    rt._call_threadsafe(self.peers.reply, conn, request[1], 1 if alive else -1)
            return
        rt._call_threadsafe(self.dispatch, conn, request, kind)


class _Watched:
    """The connections of `peers`, watched for bytes by an epoll (or poll)
    set of their descriptors, brought up to date when the peer table's
    connections change. (select() takes no descriptor over 1023, and a
    scheduler of a thousand nodes has ten thousand.) For the guard thread."""

    def __init__(self, peers):
        self.peers = peers
        self.seen = None            # peers.changes when last brought up to date
        self.watched = {}           # descriptor -> Connection
        if hasattr(select, 'epoll'):
            self.poller, self.scale = select.epoll(), 1         # seconds
        elif hasattr(select, 'poll'):
            self.poller, self.scale = select.poll(), 1000       # milliseconds
        else:
            self.poller = None      # select() then (Windows: no descriptor limit there)

    def close(self):
        if self.poller is not None and hasattr(self.poller, 'close'):
            self.poller.close()

    def connections(self):
        self._update()
        return list(self.watched.values())

    def readable(self, timeout):
        """The connections with bytes (or an end) to read within `timeout` seconds."""
        self._update()
        watched = self.watched
        if not watched:
            _sleep(timeout)
            return []
        if self.poller is None:
            try:
                return select.select(list(watched.values()), [], [], timeout)[0]
            except (OSError, ValueError):       # one closed under us: the next look
                return []
        events = self.poller.poll(timeout * self.scale)
        return [watched[fd] for fd, _ in events if fd in watched]

    def _update(self):
        changes = self.peers.changes
        if changes == self.seen:
            return
        self.seen = changes
        now = {}
        for conn in list(self.peers.connections):
            try:
                fd = -1 if conn.closed else conn.fileno()
            except (OSError, ValueError):       # closed under us
                continue
            if fd >= 0:
                now[fd] = conn
        watched = self.watched
        for fd in [fd for fd, conn in watched.items() if now.get(fd) is not conn]:
            del watched[fd]
            if self.poller is not None:
                try:
                    self.poller.unregister(fd)
                except (OSError, KeyError, ValueError):     # closed: the kernel dropped it
                    pass
        for fd, conn in now.items():
            if fd in watched:
                continue
            if self.poller is not None:
                try:
                    self.poller.register(fd, _READ_EVENTS)
                except FileExistsError:     # a descriptor closed and given again
                    self.poller.modify(fd, _READ_EVENTS)
                except (OSError, ValueError):   # closed meanwhile: the next change says
                    continue
            watched[fd] = conn


_READ_EVENTS = select.EPOLLIN if hasattr(select, 'epoll') else getattr(select, 'POLLIN', 1)
