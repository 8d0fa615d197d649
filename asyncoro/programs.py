"""asyncoro.programs: what the package's programs share.

What it owns: the option types of discoronode.py, discoro.py and httpd.py
(each bad value is one line naming the option and the value, and exit
status 2, through argparse), the runtime options the node and the scheduler
share, the check of TLS files at start, starting a runtime with a one-line
error, the console loop and the wait for the end, and the folder each
discoro process keeps for itself.

How it works: option types raise argparse.ArgumentTypeError with a message
that names the value; argparse adds the option's name and exits with 2.
Checks that need several options (the TLS pair) call `parser.error`. A
folder is claimed with an exclusive lock on a file beside it (`<folder>.lock`,
flock): the first free `<role>-<n>` under the parent is this process's, for
its life, so no two programs on one machine ever share one, and a program
started again gets the same one back (and finds what its last run left).
"""

import argparse
import errno
import itertools
import logging
import os
import signal
import ssl
import sys

from asyncoro import disasyncoro
from asyncoro.disasyncoro import Location
from asyncoro.netio import DEFAULT_MAX_FRAME_SIZE

try:
    import fcntl
except ImportError:         # no flock here: folders are told apart by process id
    fcntl = None

__all__ = []

log = logging.getLogger(__name__)

SMALLEST_FRAME_SIZE = 1024 * 1024       # --max_frame_size: below this, replies may not fit


# ---------------------------------------------------------------- option types

class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit status 2):
    `<program>: error: <what is wrong, naming the option and the value>`."""

    def error(self, message):
        self.exit(2, '%s: error: %s (see %s --help)\n' % (self.prog, message, self.prog))


def _bad(text, what):
    return argparse.ArgumentTypeError('%r is not %s' % (text, what))


def port(text):
    """An option type: a TCP or UDP port, 1-65535 (`port_or_any` allows 0).

    :returns: the port number.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    try:
        value = int(text)
    except ValueError:
        raise _bad(text, 'a port number (1-65535)') from None
    if not 0 < value < 65536:
        raise _bad(text, 'a port number (1-65535)')
    return value


def port_or_any(text):
    """An option type: a port number, or 0 for any free port.

    :returns: the port number.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    if str(text).strip() == '0':
        return 0
    return port(text)


def port_ranges(text):
    """An option type (discoronode's --tcp_ports): `n`, `n1-n2`, or several
    of them separated by commas.

    :returns: the text, once it is known to be good.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    for part in str(text).split(','):
        low, dash, high = part.partition('-')
        numbers = [low, high] if dash else [low]
        for number in numbers:
            try:
                value = int(number)
            except ValueError:
                raise _bad(text, 'a port (n) or a range of ports (n1-n2), 1-65535') from None
            if not 0 < value < 65536:
                raise _bad(text, 'a port (n) or a range of ports (n1-n2), 1-65535')
        if dash and int(low) > int(high):
            raise _bad(text, 'a range of ports (n1-n2 with n1 <= n2)')
    return text


def size(text):
    """An option type: bytes, a number with an optional k, m, g or t
    (powers of 1024).

    :returns: the number of bytes.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    value = str(text).strip().lower()
    factor = 1
    if value and value[-1] in 'kmgt':
        factor = 1024 ** ('kmgt'.index(value[-1]) + 1)
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise _bad(text, 'a size (bytes, or with k, m, g or t: 10m)') from None
    if number < 0:
        raise _bad(text, 'a size (bytes, or with k, m, g or t: 10m)')
    return int(number * factor)


def seconds(text):
    """An option type: a number of seconds, not negative.

    :returns: the seconds, a float.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    try:
        value = float(text)
    except ValueError:
        raise _bad(text, 'a number of seconds') from None
    if value < 0 or value != value:
        raise _bad(text, 'a number of seconds (0 or more)')
    return value


def host(text):
    """An option type: a host name or address that resolves.

    :returns: its address.
    :raises argparse.ArgumentTypeError: naming the value and why.
    """
    try:
        return Location(text, 0).addr
    except (OSError, UnicodeError) as exc:
        raise argparse.ArgumentTypeError('%r is not a host here (%s)' % (text, exc)) from None


def host_port(text):
    """An option type: HOST:PORT, a peer's TCP listener.

    :returns: 'address:port' (``Location(*it.rsplit(':', 1))``).
    :raises argparse.ArgumentTypeError: naming the value.
    """
    name, colon, number = str(text).rpartition(':')
    if not colon or not name:
        raise _bad(text, 'HOST:PORT')
    try:
        return str(Location(host(name), port(number)))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError('%r is not HOST:PORT (%s)' % (text, exc)) from None


def existing_file(text):
    """An option type: a file that exists and can be read.

    :returns: its path, as given.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError('%r is not a file that can be read' % (text,))
    return text


def folder(text):
    """An option type: a folder that exists or can be made (it is made).

    :returns: its absolute path.
    :raises argparse.ArgumentTypeError: naming the value and why.
    """
    path = os.path.abspath(text)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError('%r: cannot make that folder (%s)'
                                         % (text, exc.strerror or exc)) from None
    if not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError('%r: that folder cannot be written' % (text,))
    return path


def new_file(text):
    """An option type: a file that can be written (its folder exists).

    :returns: its path, as given.
    :raises argparse.ArgumentTypeError: naming the value.
    """
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError('%r: folder %s does not exist or cannot be written'
                                         % (text, parent))
    return text


def add_runtime_options(add):
    """Add the AsynCoro options the node and scheduler programs share.

    :param add: the parser's ``add_argument``.
    """
    add('--dest_path', type=folder, default=None,
        help='the folder under which this program keeps the files sent to it (made if '
        'missing); default: asyncoro in the temporary folder')
    add('--max_file_size', type=size, default=0,
        help='the largest file a peer may send here: bytes, or with a k, m, g or t suffix '
        '(default 0: no limit)')
    add('--max_frame_size', type=size, default=DEFAULT_MAX_FRAME_SIZE,
        help='the largest message a peer may send here, or this program send, such as a '
        "job's arguments or result: bytes, or with a k, m, g or t suffix (default 64m)")
    add('-s', '--secret', default='',
        help="the shared secret: only peers with the same one are served (default: "
        "$ASYNCORO_SECRET, else '')")
    add('--certfile', type=existing_file, default=None,
        help='a TLS certificate (PEM): every connection is then TLS, and peers must have the '
        'same certificate or one signed by an authority it holds (default: no TLS)')
    add('--keyfile', type=existing_file, default=None,
        help="the certificate's private key, when --certfile does not hold it")


def check_frame_size(parser, value):
    """Check --max_frame_size; otherwise the program stops here (status 2)."""
    if value < SMALLEST_FRAME_SIZE:
        parser.error('--max_frame_size %d is too small: at least %d (1m)'
                     % (value, SMALLEST_FRAME_SIZE))


def check_tls(parser, certfile, keyfile, option='--certfile'):
    """Check that the TLS certificate and key load together; otherwise the
    program stops here (status 2), saying why.

    :param option: the certificate's option, for the message.
    """
    if keyfile and not certfile:
        parser.error('%s is needed with --keyfile' % option)
    if not certfile:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError, ValueError) as exc:
        parser.error('%s %s%s: not a certificate (and key) that can be used: %s'
                     % (option, certfile, ' with key %s' % keyfile if keyfile else '', exc))


def start_runtime(program, hint, **options):
    """Start the distributed runtime with `options`.

    :param program: the program's name, for the message.
    :param hint: what to do when its TCP port is in use.
    :returns: the runtime.
    :raises SystemExit: (status 1) after one line saying why it cannot
        start.
    """
    node = options.get('node')
    try:
        return disasyncoro.AsynCoro(**options)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = 'TCP port %s on %s is already in use: %s' % (options.get('tcp_port'), node,
                                                               hint)
        else:
            why = 'it cannot start on %s: %s' % (node, exc)
        print('%s: %s' % (program, why), file=sys.stderr)
        raise SystemExit(1) from None


# ---------------------------------------------------------------- consoles and ending

def in_background():
    """Whether this process was started in the background of a terminal
    (``&``), so that stdin is not its own.

    :returns: True or False.
    """
    try:
        return os.isatty(0) and os.tcgetpgrp(0) != os.getpgrp()
    except OSError:
        return False


def console(commands, menu, done, ending=('quit', 'exit', 'terminate')):
    """Read commands from stdin until `done` is set or the input ends. For a
    thread of its own.

    The end of the input is `quit` when stdin is a terminal (Ctrl-D). When
    it is not (``/dev/null``, a closed pipe, a container started without
    ``-i``) and no command in `ending` came before it, the program serves on
    as with --daemon, and one line says so: only a signal ends it then.

    :param commands: {command (lower case; '' for an empty line): function
        of no arguments}.
    :param menu: printed at the start and for anything else.
    :param done: a threading.Event.
    :param ending: the commands that end the program.
    """
    print(menu, flush=True)
    asked_to_end = False
    while not done.is_set():
        line = sys.stdin.readline() if _readable(sys.stdin) else ''
        at_end = not line
        if at_end and not _is_terminal(sys.stdin):
            if not asked_to_end:
                log.info('stdin is not a terminal and ended with no command: serving on as '
                         'with --daemon (stop with SIGTERM, e.g. docker stop, or SIGINT)')
            return
        command = 'quit' if at_end else line.strip().lower()     # Ctrl-D at a terminal
        action = commands.get(command)
        if action is None:
            print(menu, flush=True)
        else:
            asked_to_end = asked_to_end or command in ending
            action()
        if at_end:
            return


def _readable(stream):
    return stream is not None and not stream.closed


def _is_terminal(stream):
    try:
        return _readable(stream) and stream.isatty()
    except (OSError, ValueError):       # closed under us: not a terminal
        return False


def end_on_signals(done, signals=('SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT')):
    """Make these signals set `done` (a threading.Event) instead of
    killing the process."""
    for name in signals:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda *_: done.set())


def wait_for_end(done):
    """Block this (main) thread until `done`, a threading.Event, is set (by
    end_on_signals, a console or the runtime), waking for nothing else: an
    idle program costs no wake-ups. Where a lock's wait is not interrupted by
    signals (not POSIX) it looks once a second."""
    timeout = None if os.name == 'posix' else 1
    while not done.wait(timeout):
        pass


# ---------------------------------------------------------------- folders

_CLAIMS = []        # lock files held for the life of this process


def claim_folder(parent, role):
    """Claim a folder under `parent` for this process alone, for its life:
    `<role>-1`, or the first `<role>-<n>` no other live process holds.

    :returns: its path.
    """
    os.makedirs(parent, exist_ok=True)
    if fcntl is None:
        path = os.path.join(parent, '%s-pid%d' % (role, os.getpid()))
        os.makedirs(path, exist_ok=True)
        return path
    for number in itertools.count(1):
        path = os.path.join(parent, '%s-%d' % (role, number))
        fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:     # another process has it
            os.close(fd)
            continue
        os.makedirs(path, exist_ok=True)
        _CLAIMS.append(fd)
        return path


def release_claims_in_child():
    """In a forked child that must not keep its parent's folders (the
    node's zygote): close the inherited locks, so they end with the parent."""
    while _CLAIMS:
        os.close(_CLAIMS.pop())

