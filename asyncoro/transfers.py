"""asyncoro.transfers: files copied between runtimes (send_file, del_file).

What it owns: `Transfers`, one per distributed runtime: the sending side (a
file read and sent in chunks, each acknowledged) and the receiving side (the
transfers open here: where each file goes, its partial file, how much has
arrived).

How it works: nothing here touches the disk in the hub greenlet, where
frames are read and every other peer is served. The frame handlers
(asyncoro.handlers) hand each request to `begin`, `chunk`, `end` or
`remove`, which never block: a transfer's frames are worked in the order
they came by a greenlet of that transfer's own (its queue), and every disk
operation (realpath, stat, makedirs, open, write, chmod, replace, remove,
rmdir) runs in gevent's thread pool. The sender reads its file in the
thread pool too. A transfer whose connection closes is dropped, its partial
file removed.
"""

import errno
import logging
import os

import gevent.queue

from asyncoro import netio
from asyncoro.failure import in_thread, spawn
from asyncoro.handlers import FILE_BEGIN, FILE_CHUNK, FILE_END

__all__ = []

log = logging.getLogger(__name__)

# the receiver's steps of one transfer, worked in order by its greenlet
_CHUNK, _END, _DROP = 'chunk', 'end', 'drop'


class _Incoming:
    """A file being received: its partial file, and the steps still to do."""

    __slots__ = ('transfer', 'conn', 'out', 'target', 'partial', 'meta', 'steps')

    def __init__(self, transfer, conn, out, target, partial, meta):
        self.transfer = transfer
        self.conn = conn            # the connection its frames come on
        self.out = out              # the partial file, open for writing
        self.target = target
        self.partial = partial
        self.meta = meta            # (size, mtime, atime, mode)
        self.steps = gevent.queue.Queue()


class Transfers:
    """The file transfers of runtime `rt` (see the module docstring). Its
    receiving methods are called in the hub greenlet and never block."""

    def __init__(self, rt):
        self.rt = rt
        self.incoming = {}          # transfer id -> _Incoming

    # ================================================================ sending

    def send(self, location, file, subdir, overwrite, timeout, request):
        """Copy `file` to the peer at `location` (into `subdir` of its
        dest_path), with `request(location, kind, fields, on_failure)`
        asking it: None once the file is there, else why not, in words (the
        peer's own reason when it refused it). Blocks the calling greenlet,
        never the hub: the file is read in the thread pool."""
        try:
            stat = in_thread(os.stat, file)
            readable = in_thread(_readable_file, file)
        except OSError as exc:
            return exc.strerror
        if not readable:
            return 'it is not a readable regular file'
        meta = (subdir or '', os.path.basename(file), stat.st_size, stat.st_mtime,
                stat.st_atime, stat.st_mode & 0o7777, bool(overwrite))
        unanswered = 'no answer from %s within %ss, or it went away' % (location, timeout)
        answer = request(location, FILE_BEGIN, meta, unanswered)
        if answer == 'same':
            return None
        if not isinstance(answer, tuple) or answer[0] != 'go':
            return answer if isinstance(answer, str) else 'refused (%r)' % (answer,)
        transfer = answer[1]
        try:
            source = in_thread(open, file, 'rb')
            try:
                while True:
                    chunk = in_thread(source.read, netio.FILE_CHUNK)
                    if not chunk:
                        break
                    if request(location, FILE_CHUNK, (transfer, chunk), -1) != 0:
                        return 'the transfer was cut off (%s)' % unanswered
            finally:
                in_thread(source.close)
        except OSError as exc:
            request(location, FILE_END, (transfer, False), -1)
            return 'reading it failed: %s' % exc
        if request(location, FILE_END, (transfer, True), -1) != 0:
            return 'the peer could not store it (its log says why)'
        return None

    # ================================================================ receiving

    def begin(self, conn, request_id, subdir, name, size, mtime, atime, mode, overwrite):
        """A peer offers a file: answered ('go', transfer id), 'same' (an
        identical copy is here), or why it is refused (a str, logged here
        too). Does not block."""
        spawn(self._begin, conn, request_id, subdir, name, size, mtime, atime, mode, overwrite)

    def _begin(self, conn, request_id, subdir, name, size, mtime, atime, mode, overwrite):
        rt = self.rt
        if rt.max_file_size and size > rt.max_file_size:
            self._refuse(conn, request_id, name, '%d bytes > max_file_size=%d'
                         % (size, rt.max_file_size))
            return
        try:
            opened = in_thread(_open_target, rt.dest_path, subdir, name, size, mtime, mode,
                           overwrite, request_id)
        except (ValueError, OSError) as exc:
            self._refuse(conn, request_id, name, str(exc))
            return
        if opened is None:
            rt.reply(conn, request_id, 'same')
            return
        out, target, partial = opened
        transfer = '%s/%s' % (conn.info, request_id)
        entry = self.incoming[transfer] = _Incoming(transfer, conn, out, target, partial,
                                                    (size, mtime, atime, mode))
        spawn(self._work, entry)
        rt.reply(conn, request_id, ('go', transfer))

    def _refuse(self, conn, request_id, name, why):
        log.warning('file %s from %s refused: %s', name, conn.info, why)
        self.rt.reply(conn, request_id, '%s refused it: %s' % (self.rt.location, why))

    def chunk(self, conn, request_id, transfer, data):
        """The next chunk of a transfer (answered 0, or -1). Does not block."""
        entry = self.incoming.get(transfer)
        if entry is None or entry.conn.info != conn.info:
            self.rt.reply(conn, request_id, -1)
        else:
            entry.steps.put((_CHUNK, request_id, data))

    def end(self, conn, request_id, transfer, complete):
        """The transfer is over (`complete`: every chunk was sent): the file
        goes in place (answered 0, or -1). Does not block."""
        entry = self.incoming.get(transfer)
        if entry is None:
            self.rt.reply(conn, request_id, -1)
        else:
            entry.steps.put((_END, request_id, complete))

    def cut(self, conn, reason):
        """`conn` closed (`reason`): its transfers are dropped."""
        for entry in [e for e in self.incoming.values() if e.conn is conn]:
            log.warning('file transfer %s from %s cut off (%s); partial file removed',
                        entry.transfer, conn.info, reason)
            entry.steps.put((_DROP, None, None))

    def _work(self, entry):
        """Work the steps of one transfer, in order, until it ends."""
        rt = self.rt
        size, mtime, atime, mode = entry.meta
        while True:
            kind, request_id, data = entry.steps.get()
            try:
                if kind == _CHUNK:
                    in_thread(_write, entry.out, data, size)
                    rt.reply(entry.conn, request_id, 0)
                    continue
                if kind == _END and data:
                    in_thread(_put_in_place, entry.out, entry.partial, entry.target, size, mode,
                          atime, mtime)
                    del self.incoming[entry.transfer]
                    rt.reply(entry.conn, request_id, 0)
                    return
            except OSError as exc:
                log.warning('file %s from %s: %s; dropped', entry.target, entry.conn.info, exc)
            self.incoming.pop(entry.transfer, None)
            in_thread(_discard, entry.out, entry.partial)
            if request_id is not None:
                rt.reply(entry.conn, request_id, -1)
            while not entry.steps.empty():     # what came after: refused, never unanswered
                _, request_id, _ = entry.steps.get()
                if request_id is not None:
                    rt.reply(entry.conn, request_id, -1)
            return

    def remove(self, conn, request_id, subdir, name):
        """A peer asks to delete a file it sent (answered 0, or -1). Does not
        block."""
        spawn(self._remove, conn, request_id, subdir, name)

    def _remove(self, conn, request_id, subdir, name):
        try:
            in_thread(_delete, self.rt.dest_path, subdir, name)
        except (ValueError, OSError) as exc:
            log.warning('del_file from %s: %s', conn.info, exc)
            self.rt.reply(conn, request_id, -1)
            return
        self.rt.reply(conn, request_id, 0)


# ---------------------------------------------------------------- on the disk (thread pool)

def _readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _open_target(dest_path, subdir, name, size, mtime, mode, overwrite, request_id):
    """The partial file of a transfer, opened: (file, target, partial path);
    None if an identical copy is there already. Raises ValueError or
    OSError saying why the file is refused."""
    target = netio.transfer_target(dest_path, subdir, name)
    if os.path.isfile(target):
        st = os.stat(target)
        if st.st_size == size and (st.st_mode & 0o7777) == mode and abs(st.st_mtime - mtime) <= 1:
            return None
        if not overwrite:
            raise ValueError('%s exists and differs (overwrite=False)' % target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = '%s.part-%s' % (target, request_id)
    return open(partial, 'wb'), target, partial


def _write(out, data, size):
    out.write(data)
    if out.tell() > size:
        raise OSError(errno.EFBIG, 'more data than announced (%d bytes)' % size)


def _put_in_place(out, partial, target, size, mode, atime, mtime):
    arrived = out.tell()
    out.close()
    if arrived != size:
        raise OSError(errno.EIO, '%d of %d bytes arrived' % (arrived, size))
    os.chmod(partial, mode)
    os.utime(partial, (atime, mtime))
    os.replace(partial, target)


def _discard(out, partial):
    out.close()
    try:
        os.remove(partial)
    except OSError:      # already gone: nothing left to clean
        pass


def _delete(dest_path, subdir, name):
    """Delete a received file, and the folders that leaves empty up to
    dest_path."""
    target = netio.transfer_target(dest_path, subdir, name)
    os.remove(target)
    root = os.path.realpath(dest_path)
    parent = os.path.dirname(target)
    while parent != root and parent.startswith(root + os.sep):
        try:
            os.rmdir(parent)
        except OSError:     # not empty: the clean-up stops here
            break
        parent = os.path.dirname(parent)
