"""asyncoro.asyncfile: files, pipes and sockets read and written by descriptor
without blocking other coroutines (POSIX).

What it owns: `AsyncFile` (a descriptor in non-blocking mode with greenlet-
blocking read/write/readline), `AsyncPipe` (AsyncFiles over the pipes of one
`subprocess.Popen`, or of a chain of them, plus `communicate`) and `Popen` (a
plain `subprocess.Popen`, kept for programs that name it).

How it works: an operation tries `os.read` or `os.write`; when the descriptor is
not ready, the calling greenlet waits on a gevent io watcher made in the hub
of the calling thread (`netio.FdWaiter`), so an AsyncFile made in one thread
can be used by coroutines in another. Methods are ordinary blocking calls
that return their result; a generator coroutine writes
`line = yield afile.readline()`. `readline` reads ahead into a buffer that
later calls of `read` use first, so do not mix AsyncFile calls with direct reads of
the same descriptor. Regular disk files never report "not ready": reads and
writes on them simply run.
"""

import errno
import logging
import os
import ssl
import stat
import subprocess
import time

import gevent

from asyncoro.failure import spawn
from asyncoro.netio import AsyncSocket, FdWaiter, READ, WRITE

__all__ = ['AsyncFile', 'AsyncPipe', 'Popen']

log = logging.getLogger(__name__)

_CHUNK = 65536      # bytes per os.read when reading to EOF or reading ahead


def _timedout():
    return TimeoutError('timedout')     # an IOError, as asyncoro raised


def _deadline(timeout):
    return None if timeout is None else time.monotonic() + timeout


class AsyncFile:
    """A descriptor read and written without blocking other coroutines. It
    is put in non-blocking mode. Usable as a context manager (exceptions
    pass through).

    :param fd: an int (which this object then owns and closes) or anything
        with ``fileno()``: a file object, a pipe end, a socket, or an
        AsyncSocket (whose socket it takes over).
    :raises ValueError: for a TLS socket, whose descriptor carries
        encrypted records.
    """

    def __init__(self, fd):
        # A TLS socket (plain, or inside an AsyncSocket, which passes
        # `context` through) carries encrypted records: reading its
        # descriptor would return ciphertext.
        if isinstance(getattr(fd, 'context', None), ssl.SSLContext):
            raise ValueError('AsyncFile cannot take over TLS socket %r: its descriptor '
                             'carries encrypted records; use AsyncSocket instead' % (fd,))
        if isinstance(fd, AsyncSocket):
            fd = fd.unwrap()    # the AsyncSocket is done; this object owns the socket now
        if isinstance(fd, int):
            self._owner = None
            self._fd = fd
        else:
            # Keep the object: its close() flushes/unregisters, and dropping
            # it would let the garbage collector close our descriptor.
            self._owner = fd
            self._fd = fd.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = bytearray()      # read ahead by readline, consumed first by read
        self._waiter = FdWaiter()

    def __repr__(self):
        return '<AsyncFile fd=%d%s>' % (self._fd, '' if self._owner is None else ' %r' % (self._owner,))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, tb):
        self.close()
        return False

    def fileno(self):
        """:returns: the descriptor (-1 once closed)."""
        return self._fd

    def close(self):
        """Close the descriptor and the wrapped object. Closing twice is
        harmless; greenlets still waiting on it get ``OSError(EBADF)``."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._waiter.cancel(OSError(errno.EBADF, 'AsyncFile closed while a greenlet waited on it'))
        if self._owner is None:
            os.close(fd)
        else:
            self._owner.close()
            self._owner = None

    def _check_open(self):
        if self._fd < 0:
            raise ValueError('I/O operation on a closed AsyncFile')

    def _read_once(self, size, deadline):
        """One os.read of up to `size` bytes, waiting until the descriptor is
        readable; b'' at EOF; TimeoutError('timedout') at the deadline."""
        while True:
            self._check_open()
            try:
                return os.read(self._fd, size)
            except BlockingIOError:
                self._waiter.wait(self._fd, READ, deadline, _timedout)

    def _take(self, size):
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size=0, full=False, timeout=None):
        """Read from the descriptor. Blocks the calling greenlet.

        :param size: <= 0: everything up to EOF; > 0: what is available, at
            most `size` bytes.
        :param full: with a `size`, read exactly `size` bytes unless EOF
            comes first.
        :param timeout: seconds to wait at most (<= 0: only what is ready
            now); None: no limit.
        :returns: bytes; b'' at EOF; when the timeout passes, the data read
            so far.
        :raises TimeoutError: (an ``IOError('timedout')``) when the timeout
            passes before any data.

        Call form: ``data = yield afile.read()``."""
        self._check_open()
        deadline = _deadline(timeout)
        if size > 0 and self._buffer and (not full or len(self._buffer) >= size):
            return self._take(size)
        data = bytearray(self._take(len(self._buffer)))
        try:
            while size <= 0 or len(data) < size:
                chunk = self._read_once(_CHUNK if size <= 0 else size - len(data), deadline)
                if not chunk:
                    break
                data += chunk
                if size > 0 and not full:
                    break
        except TimeoutError:
            if not data:
                raise
        return bytes(data)

    def readline(self, size=0, sizehint=100, timeout=None):
        """Read one line. Blocks the calling greenlet.

        :param size: > 0: at most this many bytes.
        :param sizehint: read ahead at least this many bytes at a time.
        :param timeout: seconds to wait at most; None: no limit.
        :returns: the line including ``b'\\n'``; at EOF the rest of the
            data, then b''.
        :raises TimeoutError: (an ``IOError('timedout')``) when the timeout
            passes before a whole line is in; the partial line is kept for
            the next call.

        Call form: ``line = yield afile.readline()``."""
        self._check_open()
        deadline = _deadline(timeout)
        scanned = 0
        while True:
            end = self._buffer.find(b'\n', scanned)
            if end >= 0:
                end += 1
                return self._take(end if size <= 0 else min(end, size))
            if 0 < size <= len(self._buffer):
                return self._take(size)
            scanned = len(self._buffer)
            chunk = self._read_once(max(sizehint, _CHUNK), deadline)
            if not chunk:
                return self._take(len(self._buffer))
            self._buffer += chunk

    def write(self, buf, full=False, timeout=None):
        """Write bytes. Blocks the calling greenlet.

        :param buf: a bytes-like object.
        :param full: write all of it (True), or once, as much as the
            descriptor takes when it is ready (False).
        :param timeout: seconds to wait at most; None: no limit.
        :returns: the number of bytes written (so far, when the timeout
            passes).
        :raises BrokenPipeError: when the reader has gone.

        Call form: ``n = yield afile.write(data, full=True)``."""
        self._check_open()
        deadline = _deadline(timeout)
        view = memoryview(buf).cast('B')
        written = 0
        while written < len(view):
            self._check_open()
            try:
                written += os.write(self._fd, view[written:])
            except BlockingIOError:
                try:
                    self._waiter.wait(self._fd, WRITE, deadline, _timedout)
                except TimeoutError:
                    break
                continue
            if not full:
                break
        return written


def _run_captured(func, *args):
    """Run func in a helper greenlet; the outcome is returned, never raised
    into the hub (which would print it a second time)."""
    try:
        return func(*args), None
    except Exception as exc:    # the edge of communicate's helper greenlets
        return None, exc


class AsyncPipe:
    """The pipes of one subprocess, or of a chain of them, as AsyncFiles.

    :param first: the subprocess.Popen that writes go to (its stdin).
    :param last: the subprocess.Popen that reads come from (its stdout and
        stderr); for a chain such as ``p2 = Popen(..., stdin=p1.stdout)``
        pass both. Default: `first`.

    The Popens are made with ``stdin``, ``stdout`` and ``stderr`` = PIPE as
    needed; the attributes `stdin`, `stdout` and `stderr` are AsyncFiles, or
    None. Other attributes (``returncode``, ``pid``, ``kill``, ...) are those
    of `last`; ``wait()`` is Popen's and blocks the OS thread: use it after
    stdout reached EOF, with a timeout.
    """

    def __init__(self, first, last=None):
        if last is None:
            last = first
        self._first = first
        self._last = last
        self.stdin = AsyncFile(first.stdin) if first.stdin is not None else None
        self.stdout = AsyncFile(last.stdout) if last.stdout is not None else None
        self.stderr = AsyncFile(last.stderr) if last.stderr is not None else None

    def __getattr__(self, name):
        if name.startswith('__') or name in ('_first', '_last'):
            raise AttributeError(name)
        return getattr(self._last, name)

    def __repr__(self):
        return '<AsyncPipe pids %s..%s>' % (self._first.pid, self._last.pid)

    def _pipe(self, name):
        afile = getattr(self, name)
        if afile is None:
            raise ValueError('%s has no %s pipe (create the Popen with %s=PIPE)'
                             % (self, name, name))
        return afile

    def write(self, buf, full=False, timeout=None):
        """Write to the first process's stdin; as :py:meth:`AsyncFile.write`."""
        return self._pipe('stdin').write(buf, full=full, timeout=timeout)

    def read(self, size=0, timeout=None):
        """Read from the last process's stdout; as :py:meth:`AsyncFile.read`."""
        return self._pipe('stdout').read(size, timeout=timeout)

    def readline(self, size=0, sizehint=100, timeout=None):
        """A line from the last process's stdout; as
        :py:meth:`AsyncFile.readline`."""
        return self._pipe('stdout').readline(size, sizehint=sizehint, timeout=timeout)

    def read_stderr(self, size=0, timeout=None):
        """Read from the last process's stderr; as :py:meth:`AsyncFile.read`."""
        return self._pipe('stderr').read(size, timeout=timeout)

    def readline_stderr(self, size=0, sizehint=100, timeout=None):
        """A line from the last process's stderr; as
        :py:meth:`AsyncFile.readline`."""
        return self._pipe('stderr').readline(size, sizehint=sizehint, timeout=timeout)

    def poll(self):
        """The exit status of the last process.

        :returns: its exit status, or None while it runs.
        """
        return self._last.poll()

    def close(self):
        """Close the pipes' AsyncFiles and drop them."""
        for name in ('stdin', 'stdout', 'stderr'):
            afile = getattr(self, name)
            if afile is not None:
                afile.close()
                setattr(self, name, None)

    def communicate(self, input=None, timeout=None):
        """Feed `input` to stdin while reading stdout and stderr to EOF, as
        ``Popen.communicate`` does. Blocks the calling greenlet; does not wait
        for the processes to exit.

        :param input: None, bytes, str (UTF-8 encoded), or an object with
            ``read()``: an AsyncFile, a file object (read by descriptor, so
            text mode is fine) or any other reader (``io.BytesIO``...). When
            it is exhausted, or the process stops reading, stdin is closed,
            and the input object too.
        :param timeout: seconds to wait at most (not in asyncoro 4.5); None:
            no limit.
        :returns: (stdout bytes or None, stderr bytes or None).
        :raises subprocess.TimeoutExpired: when the timeout passes.

        Call form: ``out, err = yield apipe.communicate(data)``."""
        if input is not None and self.stdin is None:
            raise ValueError('%s has no stdin pipe to send input to' % (self,))
        jobs = {}
        if self.stdin is not None:
            jobs['stdin'] = spawn(_run_captured, self._feed, input)
        for name in ('stdout', 'stderr'):
            afile = getattr(self, name)
            if afile is not None:
                jobs[name] = spawn(_run_captured, afile.read)
        try:
            done = gevent.joinall(list(jobs.values()), timeout=timeout)
            if len(done) < len(jobs):
                raise subprocess.TimeoutExpired(self._first.args, timeout)
        finally:
            gevent.killall(list(jobs.values()))
        for job in jobs.values():
            error = job.value[1]
            if error is not None:
                raise error
        return tuple(jobs[name].value[0] if name in jobs else None
                     for name in ('stdout', 'stderr'))

    def _feed(self, input):
        try:
            if input is None:
                return
            if isinstance(input, str):
                input = input.encode()
            if isinstance(input, (bytes, bytearray, memoryview)):
                self.stdin.write(input, full=True)
                return
            read_chunk, input = _chunk_reader(input)
            while True:
                chunk = read_chunk()
                if not chunk:
                    break
                self.stdin.write(chunk, full=True)
        except BrokenPipeError:
            # The process closed its stdin (it exited, or needs no more input):
            # the rest of the input is not wanted, as with Popen.communicate.
            log.debug('%s stopped reading its input', self)
        finally:
            self.stdin.close()
            close = getattr(input, 'close', None)
            if close is not None:
                close()


def _chunk_reader(source):
    """(function returning the next chunk of bytes, b'' at the end; the object
    to close afterwards) for an object with read()."""
    if isinstance(source, AsyncFile):
        return (lambda: source.read(_CHUNK)), source
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):    # no descriptor (io.BytesIO & co.)
        fd = None
    if fd is None:
        def read_chunk():
            chunk = source.read(_CHUNK)
            return chunk.encode() if isinstance(chunk, str) else chunk
        return read_chunk, source
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # A disk file is always ready: read by descriptor, bypassing the
        # object's buffering and (for text mode) its decoding.
        return (lambda: os.read(fd, _CHUNK)), source
    afile = AsyncFile(source)   # a pipe or socket: wait for it without blocking the hub
    return (lambda: afile.read(_CHUNK)), afile


class Popen(subprocess.Popen):
    """A plain ``subprocess.Popen``. asyncoro 4.5 needed its own only on
    Windows; programs that name ``asyncfile.Popen`` work unchanged."""

