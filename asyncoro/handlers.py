"""asyncoro.handlers: the wire's request kinds and its one dispatch table.

What it owns: the kinds of frame one runtime sends another (`SEND`,
`DELIVER`, `REPLY`, `LOCATE`, the file transfer kinds, ...; the first
element of every frame), `HANDLERS` (kind -> handler) with the `handler`
decorator that fills it, and the handlers of the distributed layer itself.
Other layers register their kinds here too (asyncoro.service). Nothing here
is public API.

How it works: the runtime (asyncoro.disasyncoro) unpickles each frame of an
authenticated connection and calls `HANDLERS[frame[0]](runtime, connection,
frame)` in the hub greenlet (from the connection's read callback), in the
order frames came; the guard thread, while the hub is stalled, calls the
same handlers through the hub (it answers `deliver` requests itself, see
asyncoro.guard). A handler must not block (the hub greenlet cannot wait;
gevent raises BlockingSwitchOutError; asyncoro.strict checks it in tests):
one that waits (channel deliver, a service call) spawns, and one that
touches the disk hands its work on (asyncoro.transfers). Handlers reach the
runtime only through its public interface and its peer table's
(`rt.peer_table`: asyncoro.peers). A request that wants an answer carries a
request id; the handler answers with `runtime.reply(connection, request_id,
value)`.
"""

import logging

import asyncoro
from asyncoro.core import Coro
from asyncoro.failure import spawn

__all__ = []

log = logging.getLogger(__name__)

INFO = 'info'               # first frame on a connection: who is connecting
INFO_ACK = 'info-ack'       # the answer on that connection: who was reached
SEND = 'send'               # message to a coroutine
DELIVER = 'deliver'         # message to a coroutine, acknowledged
REPLY = 'reply'             # the answer to a request that carried a request id
TERMINATE = 'terminate'
MONITOR = 'monitor'
LOCATE = 'locate'
CHANNEL_SUBSCRIBE = 'ch-sub'
CHANNEL_UNSUBSCRIBE = 'ch-unsub'
CHANNEL_SEND = 'ch-send'
CHANNEL_DELIVER = 'ch-deliver'
RCI_CALL = 'rci'
FILE_BEGIN = 'file-begin'
FILE_CHUNK = 'file-chunk'
FILE_END = 'file-end'
DEL_FILE = 'del-file'
BYE = 'bye'                 # the peer is closing its side deliberately

HANDLERS = {}       # kind -> handler(runtime, connection, request)


def handler(kind):
    """Decorator: the function handles frames of `kind`."""
    def register(func):
        HANDLERS[kind] = func
        return func
    return register


FAILED = object()           # a request whose peer went away: the caller gets its failure value


@handler(INFO)
def _handle_info(rt, conn, request):
    _, location, name, version = request
    if conn.info is not None:
        log.warning('second INFO from %s; connection closed', conn.peer)
        conn.close('protocol error')
        return
    if version != asyncoro.__version__:
        log.warning('peer %s runs version %s, this runtime %s', location, version,
                    asyncoro.__version__)
    rt.peer_table.introduced(conn, location, name)


@handler(INFO_ACK)
def _handle_info_ack(rt, conn, request):
    rt.peer_table.acknowledged(conn, request[1])


@handler(BYE)
def _handle_bye(rt, conn, request):
    rt.peer_table.said_bye(conn)


@handler(SEND)
def _handle_send(rt, conn, request):       # the path of every remote message: keep it lean
    _, coro_id, name, message = request
    coro = rt.local_coro(coro_id, name)
    if coro is not None:
        coro.send(message)
    else:
        log.warning('message from %s for %s/%s dropped: no such coroutine here',
                    conn.info, name, coro_id)


@handler(DELIVER)
def _handle_deliver(rt, conn, request):
    _, request_id, coro_id, name, message = request
    coro = rt.local_coro(coro_id, name)
    rt.reply(conn, request_id, -1 if coro is None else coro.deliver(message))


@handler(REPLY)
def _handle_reply(rt, conn, request):
    rt.peer_table.answer_came(request[1], request[2])


@handler(TERMINATE)
def _handle_terminate(rt, conn, request):
    coro = rt.local_coro(request[1], request[2])
    if coro is not None:
        coro.terminate()


@handler(MONITOR)
def _handle_monitor(rt, conn, request):
    _, request_id, coro_id, name, monitor = request
    coro = rt.local_coro(coro_id, name)
    rt.reply(conn, request_id, -1 if coro is None else coro.notify(monitor))


@handler(LOCATE)
def _handle_locate(rt, conn, request):
    _, request_id, kind, name = request
    if kind == 'peer':
        found = rt.location if name == rt.name else None
    else:
        found = rt.registered(kind, name)
    rt.reply(conn, request_id, found)


def _local_channel(rt, name):
    return rt.channel(name)


@handler(CHANNEL_SUBSCRIBE)
def _handle_subscribe(rt, conn, request):
    _, request_id, name, subscriber = request
    channel = _local_channel(rt, name)
    rt.reply(conn, request_id, -1 if channel is None else channel.subscribe(subscriber))


@handler(CHANNEL_UNSUBSCRIBE)
def _handle_unsubscribe(rt, conn, request):
    _, request_id, name, subscriber = request
    channel = _local_channel(rt, name)
    rt.reply(conn, request_id, -1 if channel is None else channel.unsubscribe(subscriber))


@handler(CHANNEL_SEND)
def _handle_channel_send(rt, conn, request):
    channel = _local_channel(rt, request[1])
    if channel is None:
        log.warning('message from %s for channel %s dropped: no such channel', conn.info,
                    request[1])
    else:
        channel.send_from_peer(request[2])       # (its transform runs off the hub)


@handler(CHANNEL_DELIVER)
def _handle_channel_deliver(rt, conn, request):
    _, request_id, name, message, timeout, n = request
    channel = _local_channel(rt, name)
    if channel is None:
        rt.reply(conn, request_id, -1)
        return

    def deliver():     # it may wait for subscribers: not in the hub greenlet
        rt.reply(conn, request_id, channel.deliver(message, timeout, n))
    spawn(deliver)


@handler(RCI_CALL)
def _handle_rci(rt, conn, request):
    _, request_id, name, args, kwargs = request
    rci = rt.registered('rci', name)
    if rci is None:
        rt.reply(conn, request_id, (False, 'RCI %r is not registered at %s' % (name, rt.location)))
        return
    try:
        coro = Coro(rci.method, *args, **kwargs)
    except Exception as exc:     # bad arguments: the caller gets the message
        rt.reply(conn, request_id, (False, 'RCI %r at %s: %s: %s'
                                     % (name, rt.location, type(exc).__name__, exc)))
        return
    rt.reply(conn, request_id, (True, coro))


@handler(FILE_BEGIN)
def _handle_file_begin(rt, conn, request):
    _, request_id, subdir, name, size, mtime, atime, mode, overwrite = request
    rt.transfers.begin(conn, request_id, subdir, name, size, mtime, atime, mode, overwrite)


@handler(FILE_CHUNK)
def _handle_file_chunk(rt, conn, request):
    _, request_id, transfer, chunk = request
    rt.transfers.chunk(conn, request_id, transfer, chunk)


@handler(FILE_END)
def _handle_file_end(rt, conn, request):
    _, request_id, transfer, complete = request
    rt.transfers.end(conn, request_id, transfer, complete)


@handler(DEL_FILE)
def _handle_del_file(rt, conn, request):
    _, request_id, subdir, name = request
    rt.transfers.remove(conn, request_id, subdir, name)
