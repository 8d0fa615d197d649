"""asyncoro.peers: the other runtimes this one knows, and the connections to them.

What it owns: `Peers`, one per distributed runtime (asyncoro.disasyncoro):
the peer table (a `Peer` for each other runtime: its connections, what is
queued for it, its requests not answered yet, whether it is online), every
live connection, the requests waiting for their answers, and the coroutines
told of peers that come and go (`peer_status`).

How it works:

- Frames from this runtime to a peer always go through the one connection
  this runtime opened to it (opened on demand by `reach`, kept open), so
  everything sent from one process to another arrives in order; a
  connection the peer opened carries only its frames to us. What is sent
  while ours opens is queued, and dropped with a WARNING naming it if the
  peer cannot be reached.
- A request carries an id; its answer comes back as a REPLY frame on the
  peer's connection to us (`answer_came`) and goes to what waits for it: an
  AsyncResult (`request`, which blocks the caller) or a callback
  (`request_then`, which does not). When our connection to a peer closes,
  what the peer's own connections still hold is read first, then the
  requests it has not answered fail.
- A peer is online once the introductions are done both ways (INFO, then
  INFO_ACK); it is offline when every connection with it is gone, or after
  MaxConnectionErrors failures to connect. The coroutines that asked
  (`status_to`) get PeerStatus messages; the runtime is told too (the
  callbacks it gave: locate asks new peers, channels drop the gone one's
  subscribers).
- Everything here runs in the runtime's hub thread; `send_frame` and
  `request` hand themselves over from another thread.
"""

import itertools
import logging
import time

import gevent
import gevent.event

import asyncoro
from asyncoro import netio
from asyncoro.core import Coro, MonitorException, _get_ident, _msg_timeout
from asyncoro.failure import run_guarded, spawn
from asyncoro.handlers import BYE, FAILED, INFO, INFO_ACK, REPLY
from asyncoro.remote import PeerStatus

__all__ = []

log = logging.getLogger(__name__)

MaxConnectionErrors = 10    # failures to connect, in a row, before an online peer is offline


class Peer:
    """What this runtime knows of another one."""

    __slots__ = ('location', 'name', 'out', 'incoming', 'pending', 'connecting', 'errors',
                 'online', 'requests', 'stream_send', 'ready', 'gone')

    def __init__(self, location):
        self.location = location
        self.name = None
        self.out = None             # our Connection to it: everything we send goes here
        # Connections it opened to us (a list: an empty set is 216 bytes, and a
        # scheduler has a peer for every server)
        self.incoming = []
        self.pending = []           # (frame, what, quiet) queued while `out` is being opened
        self.connecting = None      # the greenlet opening `out`
        self.errors = 0             # consecutive failures to connect
        self.online = False
        self.requests = None        # set of the ids of our requests it has not answered
        self.stream_send = False
        self.ready = None           # gevent Event, made by whoever waits for it to be online
        self.gone = False                       # removed from the peer table


class _Then:
    """Where a request_then's answer is set (as an AsyncResult's is): the
    callback runs at once, in the hub greenlet that read the reply; a
    failure (the peer went) is called back a loop turn later, not from
    inside the closing of a connection."""

    __slots__ = ('peers', 'then', 'on_failure', 'request_id', 'peer', 'done')

    def __init__(self, peers, then, on_failure):
        self.peers = peers
        self.then = then
        self.on_failure = on_failure
        self.request_id = self.peer = None
        self.done = False

    def ready(self):
        return self.done

    def set(self, answer):
        if self.done:
            return
        self.done = True
        if self.request_id is not None:
            self.peers.end_request(self.request_id, self.peer)
        if answer is FAILED:
            gevent.get_hub().loop.run_callback(run_guarded, self.then, self.on_failure)
        else:
            run_guarded(self.then, answer)


class Peers:
    """The peers of runtime `rt` (see the module docstring).

    :param rt: the runtime (its location, name, thread and hand-over hooks).
    :param key, certfile, keyfile: what connections authenticate with.
    :param max_frame_size: the largest frame sent or taken.
    :param on_frames: ``f(conn, payloads)``, each read of a connection.
    :param when_online, when_offline: ``f(location)``, a peer came or went.
    :param when_closed: ``f(conn, reason)``, a connection closed.
    """

    def __init__(self, rt, key, certfile, keyfile, max_frame_size, on_frames, when_online,
                 when_offline, when_closed):
        self.rt = rt
        self.table = {}                 # Location -> Peer
        self.connections = set()        # every live Connection (the guard reads them)
        self.changes = 0                # how often `connections` changed (the guard's cue)
        self.replies = {}               # request id -> AsyncResult or _Then of its answer
        self.auth_failures = {}         # address -> why a peer there failed authentication
        self.receivers = []             # coroutines told of peers (peer_status)
        self.max_frame_size = max_frame_size
        self._key, self._certfile, self._keyfile = key, certfile, keyfile
        self._on_frames = on_frames
        self._when_online, self._when_offline = when_online, when_offline
        self._when_closed = when_closed
        self._request_ids = itertools.count(1)

    # ================================================================ the table

    def get(self, location):
        """The Peer at `location`, or None."""
        return self.table.get(location)

    def peer(self, location):
        """The Peer at `location`, made if it is not known."""
        peer = self.table.get(location)
        if peer is None:
            peer = self.table[location] = Peer(location)
        return peer

    def intern(self, location):
        """The Location object the table uses for `location` (so that
        lookups by it hit on identity), or `location` itself."""
        peer = self.table.get(location)
        return peer.location if peer is not None else location

    def online(self):
        """The Locations of the peers online now."""
        return [loc for loc, peer in self.table.items() if peer.online]

    # ================================================================ connections

    def open(self, sock, label, location):
        """A Connection on `sock` (authenticated), served from now on;
        `location`: the peer's, when we opened it (None: it introduces
        itself)."""
        rt = self.rt
        conn = netio.Connection(sock, label, self.max_frame_size, self._on_frames,
                                self.connection_closed, rt._run_after)
        conn.info = location
        self.connections.add(conn)
        self.changes += 1
        conn.start()
        return conn

    def reach(self, location):
        """Open our connection to the peer at `location`, unless it is open
        or opening: the Peer."""
        peer = self.peer(location)
        if peer.out is None and peer.connecting is None:
            peer.connecting = spawn(self._connect, peer)
        return peer

    def _connect(self, peer):
        """Open our connection to `peer`, introduce ourselves, send what was
        queued meanwhile."""
        location, rt = peer.location, self.rt
        try:
            sock = netio.connect((location.addr, location.port), self._key, _msg_timeout(),
                                 self._certfile, self._keyfile)
        except (OSError, netio.PeerError) as exc:
            self._unreachable(peer, exc)
            return
        conn = self.open(sock, str(location), location)
        try:
            conn.send(netio.dumps((INFO, rt.location, rt.name, asyncoro.__version__)))
            for payload, _, _ in peer.pending:
                conn.send(payload)
        except netio.PeerError:         # it closed at once (conn.closed says why)
            pass
        if conn.closed:     # the peer went away as it took the connection
            self._unreachable(peer, netio.PeerGone('the connection closed at once: %s'
                                                   % conn.closed))
            return
        peer.pending = []
        peer.out = conn
        peer.connecting = None
        peer.errors = 0          # online when its INFO_ACK tells us its name

    def _unreachable(self, peer, exc):
        """A connection to `peer` could not be made (`exc` says why): what was
        queued for it is dropped (messages with a WARNING naming them,
        requests fail to their callers)."""
        location = peer.location
        peer.connecting = None
        peer.errors += 1
        if isinstance(exc, netio.AuthError):
            self.auth_failures[location.addr] = str(exc)
        # messages that nobody waits for, and a peer with another secret, are
        # worth a warning (a peer that just went away is not)
        lost = [what for _, what, quiet in peer.pending if not quiet]
        peer.pending = []
        log.log(logging.WARNING if lost or isinstance(exc, netio.AuthError) else logging.DEBUG,
                'cannot reach peer %s (%s)%s', location, exc,
                '; %d queued message(s) dropped: %s' % (
                    len(lost), ', '.join(str(what_of(what)) for what in lost[:3]) +
                    (', ...' if len(lost) > 3 else '')) if lost else '')
        self._fail_requests(peer)
        if peer.online and peer.errors >= MaxConnectionErrors:
            self.offline(peer)
        elif not peer.online and not peer.incoming:
            self._forget(peer)

    def connection_closed(self, conn, reason):
        """`conn` closed (`reason`): the peer is offline when it was the last."""
        self.connections.discard(conn)
        self.changes += 1
        location = conn.info
        peer = self.table.get(location) if location is not None else None
        if peer is None:
            return
        if peer.out is conn:
            peer.out = None
            # the answers come on the peer's own connection: what it sent
            # before it went (its connections close together) is read first
            for other in list(peer.incoming):
                other.read_now()
            self._fail_requests(peer)
        if conn in peer.incoming:
            peer.incoming.remove(conn)
        self._when_closed(conn, reason)
        log.debug('connection %s closed: %s', conn, reason)
        if peer.out is None and not peer.incoming and peer.connecting is None:
            self.offline(peer)

    # ================================================================ frames out

    def send_frame(self, location, request, what='request', quiet=False):
        """Queue `request` for the peer at `location`, connecting on demand.

        The path of every remote send.

        :param request: the frame: a tuple whose first item is its kind.
        :param what: names the request in log messages (a remote coroutine
            stands for 'message for' it).
        :param quiet: dropping it for a peer that cannot be reached is no
            news: a request (its caller gets the failure) or a reply (its
            asker has gone away).
        :returns: 0; -1, with a WARNING, if it cannot be pickled, is larger
            than max_frame_size, or is for this runtime itself.

        Does not wait for the connection; may be called from any thread.
        """
        rt = self.rt
        if _get_ident() != rt._tid:
            return rt._run_here(self.send_frame, location, request, what, quiet)
        peer = self.table.get(location)
        if peer is None and location == rt.location:
            log.warning('%s for this runtime itself (%s) dropped: the coroutine or channel is '
                        'gone', what_of(what), location)
            return -1
        try:
            payload = netio.dumps(request)
        except Exception as exc:      # whatever pickling raises: the caller's data is at fault
            if isinstance(request[-1], MonitorException):
                return self.send_frame(location, request[:-1] + (_picklable_monitor(request[-1]),),
                                       what, quiet)
            log.warning('%s to %s cannot be pickled: %s: %s', what_of(what), location,
                        type(exc).__name__, exc)
            return -1
        if len(payload) > self.max_frame_size:
            log.warning('%s to %s is %d bytes, more than max_frame_size=%d; not sent',
                        what_of(what), location, len(payload), self.max_frame_size)
            return -1
        if peer is None:
            peer = self.peer(location)
        if peer.out is not None:
            peer.out.send(payload)
        else:
            peer.pending.append((payload, what, quiet))
            if peer.connecting is None:
                peer.connecting = spawn(self._connect, peer)
        return 0

    def reply(self, conn, request_id, value, push=False):
        """Answer the request `request_id` that came on `conn`: on our own
        connection to that peer, like all we send it.

        :param push: write it before this greenlet goes on.
        :returns: 0; -1 if it could not be sent (the log says why).
        """
        sent = self.send_frame(conn.info, (REPLY, request_id, value), what='reply', quiet=True)
        if push and sent == 0:
            peer = self.table.get(conn.info)
            if peer is not None and peer.out is not None:
                peer.out.push()
        return sent

    # ================================================================ requests

    def request(self, location, kind, fields, timeout, on_timeout, on_failure):
        """Send a request that wants an answer and wait for it.

        :param kind: the request's kind (a handler's name).
        :param fields: a tuple: the rest of the request.
        :param timeout: seconds to wait for the answer; None: no limit.
        :returns: the answer; `on_timeout` when `timeout` passes;
            `on_failure` if the request cannot be sent or the peer goes away
            first.

        Blocks the calling greenlet; may be called from any thread.
        """
        rt = self.rt
        if _get_ident() != rt._tid:
            return rt._run_here(self.request, location, kind, fields, timeout, on_timeout,
                                on_failure)
        sent = self._send_request(location, kind, fields)
        if sent is None:
            return on_failure
        request_id, waiter, peer = sent
        try:
            answer = waiter.get(timeout=timeout)
        except gevent.Timeout:
            return on_timeout
        finally:
            self.end_request(request_id, peer)
        return on_failure if answer is FAILED else answer

    def request_then(self, location, kind, fields, then, on_failure):
        """Send a request that wants an answer, and call ``then(answer)``
        when it comes (``then(on_failure)`` if the request cannot be sent or
        the peer goes away first), in the hub greenlet, under spawn's
        catch-all: `then` must not block.

        A caller that waits for many answers at once (the scheduler, for its
        jobs' starts) needs no greenlet per answer. No timeout: what waits
        on `then` ends it when the peer is of no use.

        Does not block; call it in the hub thread.
        """
        waiter = _Then(self, then, on_failure)
        sent = self._send_request(location, kind, fields, waiter)
        if sent is None:        # called back later, never from inside this call
            gevent.get_hub().loop.run_callback(run_guarded, then, on_failure)
            return
        waiter.request_id, _, waiter.peer = sent

    def _send_request(self, location, kind, fields, waiter=None):
        """Send a request: (its id, what its answer is set on (an
        AsyncResult unless `waiter` is given), its peer), or None if it
        could not be sent."""
        request_id = next(self._request_ids)
        if waiter is None:
            waiter = gevent.event.AsyncResult()
        self.replies[request_id] = waiter
        peer = self.peer(location) if location != self.rt.location else None
        if peer is None or self.send_frame(location, (kind, request_id) + fields,
                                           what=kind, quiet=True) < 0:
            self.replies.pop(request_id, None)
            return None
        if peer.requests is None:
            peer.requests = set()
        peer.requests.add(request_id)
        return request_id, waiter, peer

    def end_request(self, request_id, peer):
        self.replies.pop(request_id, None)
        requests = peer.requests
        if requests is not None:
            requests.discard(request_id)
            if not requests:
                peer.requests = None

    def answer_came(self, request_id, value):
        """The answer to our request `request_id` (a REPLY frame)."""
        waiter = self.replies.get(request_id)
        if waiter is not None and not waiter.ready():
            waiter.set(value)

    def _fail_requests(self, peer):
        requests, peer.requests = peer.requests, None
        for request_id in requests or ():
            waiter = self.replies.get(request_id)
            if waiter is not None and not waiter.ready():
                waiter.set(FAILED)

    # ================================================================ introductions, status

    def introduced(self, conn, location, name):
        """A peer introduced itself on the connection it opened (INFO): it
        is told our name (INFO_ACK), and is online."""
        conn.info = location
        peer = self.peer(location)
        if conn not in peer.incoming:
            peer.incoming.append(conn)
        conn.send(netio.dumps((INFO_ACK, self.rt.name)))
        self._online(peer, name)

    def acknowledged(self, conn, name):
        """The peer answered our introduction (INFO_ACK): it is online."""
        peer = self.table.get(conn.info)
        if peer is not None and peer.out is conn:
            self._online(peer, name)

    def said_bye(self, conn):
        """The peer is closing its side deliberately (BYE)."""
        peer = self.table.get(conn.info)
        if peer is not None:
            self.offline(peer)

    def _online(self, peer, name):
        if name:
            peer.name = name
        if peer.online:
            return
        peer.online = True
        if peer.ready is not None:
            peer.ready.set()
        peer.errors = 0
        log.debug('peer %s (%s) online', peer.location, peer.name)
        self._announce(peer, PeerStatus.Online)
        self._when_online(peer.location)

    def _forget(self, peer):
        peer.gone = True
        if self.table.get(peer.location) is peer:
            del self.table[peer.location]

    def offline(self, peer):
        """`peer` is gone: its connections close, its requests fail."""
        self._forget(peer)
        for conn in [peer.out] + list(peer.incoming):
            if conn is not None:
                conn.close('peer offline')
        self._fail_requests(peer)
        if peer.online:
            peer.online = False
            log.debug('peer %s (%s) offline', peer.location, peer.name)
            self._announce(peer, PeerStatus.Offline)
            self._when_offline(peer.location)

    def _announce(self, peer, status):
        for receiver in list(self.receivers):
            if receiver.send(PeerStatus(peer.location, peer.name, status)) < 0:
                self.receivers.remove(receiver)

    def status_to(self, coro):
        """Send `coro` PeerStatus messages as peers come and go (None: to
        none any more); at once an Online for each peer online now.

        :returns: 0; -1 if `coro` is neither a coroutine nor None.
        """
        if coro is None:
            self.receivers = []
            return 0
        if not isinstance(coro, Coro):
            return -1
        if coro not in self.receivers:
            self.receivers.append(coro)
        for peer in list(self.table.values()):
            if peer.online:
                coro.send(PeerStatus(peer.location, peer.name, PeerStatus.Online))
        return 0

    def forget_receiver(self, coro):
        """A receiver of peer status has finished: no longer told (nor kept)."""
        for index, receiver in enumerate(self.receivers):
            if receiver is coro:
                del self.receivers[index]
                return

    # ================================================================ pairing and closing

    def pair(self, location, stream_send):
        """Connect to the peer at `location` and wait until it is online:
        0, or -1 (unreachable, or this runtime). Blocks the greenlet."""
        if location == self.rt.location:
            return -1
        peer = self.peer(location)
        peer.stream_send = peer.stream_send or stream_send
        if peer.out is not None:
            return 0
        self.reach(location).connecting.join(timeout=_msg_timeout() * 2)
        if peer.out is not None and not peer.online:
            if peer.ready is None or peer.ready.is_set():
                peer.ready = gevent.event.Event()
            peer.ready.wait(_msg_timeout())
        return 0 if peer.out is not None and peer.online else -1

    def close(self, location, timeout):
        """Send what is queued for the peer, tell it we go, forget it: 0;
        -1 if it is not known. Blocks the greenlet."""
        peer = self.table.get(location)
        if peer is None:
            return -1
        if peer.connecting is not None:
            peer.connecting.join(timeout)
        self._goodbye(peer, timeout)
        self.offline(peer)
        return 0

    def close_all(self, timeout):
        """The runtime ends: connections still opening are waited for, every
        peer is told goodbye after what is queued for it (in `timeout`
        seconds in all), and every connection closes."""
        deadline = time.monotonic() + timeout
        for peer in list(self.table.values()):
            if peer.connecting is not None:
                peer.connecting.join(max(deadline - time.monotonic(), 0))
        for peer in list(self.table.values()):
            self._goodbye(peer, max(deadline - time.monotonic(), 0))

    def _goodbye(self, peer, timeout):
        out = peer.out      # (closing, it sets peer.out to None under us)
        if out is not None:
            try:
                out.send(netio.dumps((BYE,)))
                out.flush(timeout)
            except netio.PeerError:     # it closed meanwhile: no one to say goodbye to
                pass

    def close_connections(self, reason):
        for peer in list(self.table.values()):
            for conn in [peer.out] + list(peer.incoming):
                if conn is not None:
                    conn.close(reason)


def what_of(what):
    """How a frame is named in the log: 'message for <coro>', or its kind."""
    return 'message for %s' % what if isinstance(what, Coro) else what


def _picklable_monitor(exc):
    """A MonitorException whose value could not be pickled: send its type."""
    coro, (kind, value) = exc.args
    return MonitorException(coro, (kind, type(value)))
