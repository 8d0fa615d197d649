"""asyncoro.httpd: the web monitor of a discoro computation, and the httpd.py program.

What it owns: `HTTPServer`, which serves the monitor's web application
(asyncoro.webapp: pages, JSON, /metrics) of a computation's state
(asyncoro.monitor), and `main()`, the standalone httpd.py program that
attaches to a running discoro.py scheduler.

How it works:

- The monitor is fed by a coroutine (`HTTPServer.status_coro`) that the
  computation's status messages go to: the constructor makes it the
  computation's `status_coro`, and when the program had set its own, every
  message is passed on to that one too, after the monitor took it.
- gevent's WSGI server runs in the runtime's hub thread, the same thread as
  that coroutine, so the state has one owner and needs no lock.
- It binds the loopback address unless told otherwise ($ASYNCORO_NODE or
  `host`); bound to another address without a password it says once, as a
  WARNING, that anyone who reaches it can read the jobs' arguments and
  terminate them.
- The standalone program (`python -m asyncoro.httpd`, scripts/httpd.py) asks
  the scheduler's `discoro_scheduler` service to `watch`: the answer is a
  snapshot of the current computation, after which the scheduler copies every
  status message to the monitor's coroutine; asking again every poll
  interval tells whether it is still there and who waits in its queue.
"""

import ipaddress
import logging
import os
import socket
import ssl
import sys
import time

import gevent
import gevent.pywsgi
import gevent.ssl

from asyncoro import disasyncoro
from asyncoro.client import wants_details
from asyncoro.core import _get_ident
from asyncoro.disasyncoro import Coro, Location, SysCoro
from asyncoro.failure import Failure, spawn, spawn_later
from asyncoro.monitor import FAILURES, POLL_MIN, Monitor, Snapshot
from asyncoro.programs import (Parser, check_tls, existing_file, host, host_port, in_background,
                               port, port_or_any, seconds)
from asyncoro.records import JobsWaiting, StatusDetail
from asyncoro.service import UNWATCH, WATCH, Service
from asyncoro.webapp import DATA_DIR, make_app

__all__ = ['HTTPServer']

log = logging.getLogger(__name__)

DEFAULT_PORT = 8181
DEFAULT_HOST = '127.0.0.1'      # without $ASYNCORO_NODE or a host: this machine only
PASSWORD_ENV = 'ASYNCORO_MONITOR_PASSWORD'


def _exposed(addr, password):
    """Is a monitor bound to `addr` ('' or '0.0.0.0': every interface)
    without a password reachable from other machines?"""
    if password:
        return False
    addr = addr or '0.0.0.0'
    try:
        return not ipaddress.ip_address(addr.split('%')[0]).is_loopback
    except ValueError:          # a name: it is not known to be loopback
        return addr.lower() != 'localhost'


class _WSGIServer(gevent.pywsgi.WSGIServer):
    """pywsgi's server, with a TLS handshake that cannot hang or fail loudly,
    and answers sent at once."""

    def handle(self, sock, address):
        # pywsgi sends an answer's headers and its body in two writes: with
        # Nagle's algorithm the body waits for the headers' ACK, which a
        # client on a kept-alive connection (a page that polls) delays by up
        # to 40 ms, for every answer
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:      # a connection reset already: its handler finds out
            log.debug('HTTP client %s: TCP_NODELAY not set: %s', address, exc)
        return super().handle(sock, address)

    def wrap_socket_and_handle(self, client_socket, address):
        try:
            with gevent.Timeout(10):
                tls = self.wrap_socket(client_socket, **self.ssl_args)
        except (OSError, gevent.Timeout) as exc:     # ssl.SSLError is an OSError
            log.warning('HTTPS client %s:%s: TLS handshake failed: %s', address[0], address[1],
                        exc or 'timed out')
            client_socket.close()
            return None
        with tls:
            return self.handle(tls, address)


# ---------------------------------------------------------------- HTTPServer

# what the monitor's status coroutine takes beside asyncoro 4.5's messages
_FOR_MONITORS = (Snapshot, StatusDetail, JobsWaiting)


class HTTPServer:
    """The web monitor of `computation`, at ``http(s)://<host>:<port>/``.

    Create it before ``computation.schedule()``: it becomes the
    computation's status_coro, passing every message on to the status_coro
    the program set, if any.

    :param computation: the Computation to show; None: as the httpd.py
        program makes it, to show a scheduler's computations.
    :param host: the address to bind; '': $ASYNCORO_NODE if set, else
        127.0.0.1 (this machine only; give an address, or '0.0.0.0' for
        every interface, to serve others).
    :param port: the port; 0: any free one (see the attributes `address`
        and `url`).
    :param poll_sec: how often the pages refresh, in seconds: at least 1
        (a smaller value is raised to 1, with a WARNING).
    :param DocumentRoot: the folder of the pages; None: the package's data.
    :param keyfile: the private key, if it is not in `certfile`.
    :param certfile: a certificate: serve HTTPS.
    :param show_coro_args: whether the pages show coroutines' arguments
        (str() of each). It and `poll_sec` can be changed from the pages.
    :param password: makes every page, JSON endpoint and /metrics ask for it
        (HTTP basic authentication, any user name); None:
        $ASYNCORO_MONITOR_PASSWORD, else none. Not in asyncoro 4.5.
    :param max_failures: how many failed and lost jobs the Jobs page keeps.
        Not in asyncoro 4.5.
    :raises OSError: when the port cannot be bound.
    :raises ValueError: for a DocumentRoot without the pages.

    Blocks until the server listens. Without a password, bound to an address
    other machines can reach, it logs a WARNING.
    """

    def __init__(self, computation, host='', port=DEFAULT_PORT, poll_sec=10, DocumentRoot=None,
                 keyfile=None, certfile=None, show_coro_args=True, password=None,
                 max_failures=FAILURES):
        if not isinstance(poll_sec, (int, float)) or poll_sec < POLL_MIN:
            log.warning('poll_sec %r is too small; %s is used', poll_sec, POLL_MIN)
            poll_sec = POLL_MIN
        poll_sec = int(poll_sec) if poll_sec == int(poll_sec) else poll_sec
        root = os.path.abspath(DocumentRoot or DATA_DIR)
        if not os.path.isfile(os.path.join(root, 'cluster.html')):
            raise ValueError('DocumentRoot %s has no cluster.html (the monitor pages are in %s)'
                             % (root, DATA_DIR))
        if password is None:
            password = os.environ.get(PASSWORD_ENV) or None
        self.computation = computation
        self._monitor = Monitor(poll_sec, show_coro_args, max_failures)
        self._rt = disasyncoro.AsynCoro.instance()
        self._chain = None
        host = host or os.environ.get('ASYNCORO_NODE') or DEFAULT_HOST
        # listening first: a port that cannot be bound leaves the computation as it was
        self._server = self._rt._run_here(self._start, host, port, self._monitor, root,
                                          keyfile, certfile, password)
        self.status_coro = Coro(self._status_proc)
        wants_details(self.status_coro)     # why nodes and servers went; jobs waiting
        if computation is None:         # the httpd.py program: a scheduler's computations
            self._monitor.mode = 'scheduler'
        else:
            if getattr(computation, 'scheduler', None) is not None:
                log.warning('HTTPServer was created after computation.schedule(): the '
                            'scheduler does not know it, so the monitor stays empty')
            self._chain = computation.status_coro
            computation.status_coro = self.status_coro
            location = self._rt.location
            self._monitor.begin(getattr(computation, '_id', id(computation)),
                                str(location) if location else None)
        addr, bound = self._server.address[:2]
        self.address = (addr, bound)
        shown = '[%s]' % addr if ':' in addr else (addr or '0.0.0.0')
        self.url = '%s://%s:%s/' % ('https' if certfile else 'http', shown, bound)
        self._rt.atexit(0, self._stop)
        log.info('Started HTTP server at %s', self.url)
        if _exposed(addr, password):
            log.warning('the monitor at %s has no password and is bound to %s: anyone who can '
                        'reach it can read the jobs and their arguments and terminate them; '
                        'give it a password (password=..., httpd.py --password or $%s) or '
                        'bind 127.0.0.1', self.url, addr or 'every interface', PASSWORD_ENV)

    @staticmethod
    def _start(host, port, monitor, root, keyfile, certfile, password):
        # in the hub thread: the server, its greenlets and its lock belong to that hub
        app = make_app(monitor, root, password, host)
        ssl_args = {}
        if certfile:
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            ssl_args['ssl_context'] = context
        try:
            server = _WSGIServer((host, port), app,
                                 log=gevent.pywsgi.LoggingLogAdapter(log, logging.DEBUG),
                                 error_log=gevent.pywsgi.LoggingLogAdapter(log, logging.ERROR),
                                 **ssl_args)
            server.start()
        except OSError as exc:
            raise OSError(exc.errno, 'HTTP server cannot listen on %s:%s: %s'
                          % (host or '*', port, exc.strerror or exc)) from exc
        return server

    def _status_proc(self, coro=None):
        coro.set_daemon()
        monitor = self._monitor
        while True:
            msg = yield coro.receive()
            try:
                monitor.update(msg)
            except Exception:       # our bug: keep monitoring, and keep the chain going
                log.error('monitor could not take %.200r', msg, exc_info=True)
            # the program's own status_coro gets asyncoro 4.5's messages only
            if self._chain is not None and not isinstance(msg, _FOR_MONITORS):
                self._chain.send(msg)

    def shutdown(self, wait=True):
        """Stop serving.

        :param wait: first give the pages `poll_sec` + 0.5 seconds to fetch
            the last updates.

        Called from a thread (the main program) it blocks that long, then
        stops the server; called from a coroutine it schedules the stop and
        returns at once. Does nothing once the server has stopped.
        """
        if self._server is None:
            return
        delay = self._monitor.settings.poll_sec + 0.5 if wait else 0
        if wait:
            log.info('HTTP server waiting for %s seconds for client updates before quitting',
                     self._monitor.settings.poll_sec)
        rt = self._rt
        if _get_ident() == rt._tid:
            spawn_later(delay, self._stop)
            return
        if delay:
            time.sleep(delay)
        if rt._stopping:            # the runtime (and with it the server) is gone already
            self._server = None
            return
        rt._run_here(self._stop)

    def _stop(self):
        server, self._server = self._server, None
        if server is not None:
            server.stop(timeout=1)
            log.debug('HTTP server at %s stopped', self.url)


# ---------------------------------------------------------------- the httpd.py program

class _Watcher(Service):
    """The standalone program's link to a discoro.py scheduler: finds it,
    asks it to `watch` (messages go to the monitor's coroutine), and asks
    again every poll interval, which also tells whether it is still there
    and which computations wait in its queue."""

    def __init__(self, httpd, location, timeout):
        super().__init__()
        self.httpd = httpd
        self.location = location
        self.timeout = timeout
        self.scheduler = None
        # set by stop(); not Service's `stopped`, which stop() itself sets and checks
        self.leaving = False
        self.loop = spawn(self._run)

    def _run(self):
        monitor = self.httpd._monitor
        status_coro = self.httpd.status_coro
        while not self.leaving:
            if self.scheduler is None:
                found = SysCoro.locate('discoro_scheduler', self.location, self.timeout)
                if found is None:
                    log.warning('no discoro scheduler answered at %s within %ss (is discoro.py '
                                'running? same secret?); looking again',
                                self.location or 'any peer', self.timeout)
                    gevent.sleep(1)
                    continue
                monitor.held = []           # what comes before the snapshot waits for it
                answer = self.call(found, WATCH, status_coro, timeout=self.timeout)
                if isinstance(answer, Failure) or not isinstance(answer, dict):
                    log.warning('scheduler at %s did not take the monitor: %s', found.location,
                                answer)
                    status_coro.send(Snapshot({}, True))
                    gevent.sleep(monitor.settings.poll_sec)
                    continue
                self.scheduler = found
                monitor.scheduler = str(found.location)
                status_coro.send(Snapshot(answer, True))
                log.info('monitoring the scheduler at %s', found.location)
            gevent.sleep(monitor.settings.poll_sec)
            if self.leaving:
                break
            answer = self.call(self.scheduler, WATCH, status_coro, timeout=self.timeout)
            if isinstance(answer, dict):
                status_coro.send(Snapshot(answer, False))
            else:
                log.warning('scheduler at %s does not answer (%s); looking for it again',
                            self.scheduler.location, answer)
                self.scheduler = None
                monitor.scheduler = None

    def stop(self, reason='the monitor stops'):
        """Leave the scheduler (it sends nothing more) and end: the service
        is unregistered and its coroutine ends. Blocks at most `timeout`."""
        if self.leaving:
            return
        self.leaving = True
        self.loop.kill(block=False)     # it asks nothing more of the scheduler
        if self.scheduler is not None:
            self.call(self.scheduler, UNWATCH, self.httpd.status_coro, timeout=self.timeout)
        super().stop(reason)


def _parser():
    parser = Parser(
        prog='httpd.py', description='Web monitor of the computation a discoro.py scheduler '
        'is running (and of the ones waiting in its queue).')
    add = parser.add_argument
    add('--host', default='',
        help='the address the web server listens on (default: $ASYNCORO_NODE, else '
        '127.0.0.1, this machine only; 0.0.0.0 for every interface, best with a password)')
    add('--password', default=None,
        help='a password every page asks for (HTTP basic authentication, any user name; '
        'default: $%s, else none). Prefer the variable: others can read a command line'
        % PASSWORD_ENV)
    add('--max_failures', type=int, default=FAILURES,
        help='how many failed and lost jobs the Jobs page keeps (default %(default)s)')
    add('-p', '--port', type=port_or_any, default=DEFAULT_PORT,
        help='the web server\'s TCP port (default %(default)s; 0: any free port, which the '
        'ready line names)')
    add('--poll_sec', type=seconds, default=10,
        help='seconds between the pages\' updates, and between questions to the scheduler '
        '(default %(default)g; at least 1; the pages can change it)')
    add('--hide_coro_args', action='store_true',
        help='do not show the jobs\' arguments (they may be large or private); the pages '
        'can change it')
    add('--DocumentRoot', default=None,
        help='a folder with pages of your own to serve instead of the package\'s (it must '
        'hold cluster.html)')
    add('--http_certfile', type=existing_file, default=None,
        help='a TLS certificate (PEM): serve HTTPS (default: HTTP)')
    add('--http_keyfile', type=existing_file, default=None,
        help='the private key of --http_certfile, when that file does not hold it')
    add('--scheduler', type=host_port, default=None, metavar='HOST:PORT',
        help='the TCP address of the discoro.py scheduler (its ready line names it; '
        'default: find it by discovery on -u)')
    add('-i', '--ip_addr', type=host, default=None,
        help='the address of this program\'s asyncoro runtime, which talks to the '
        'scheduler (default: $ASYNCORO_NODE, else the first interface with a broadcast '
        'address)')
    add('-t', '--tcp_port', type=port_or_any, default=0,
        help='the TCP port of that runtime (default 0: any free port)')
    add('-u', '--udp_port', type=port, default=0,
        help='the UDP port where it looks for the scheduler: the scheduler\'s -u (default '
        '$ASYNCORO_UDP_PORT, else 51350)')
    add('-s', '--secret', default='',
        help='the scheduler\'s secret (default: $ASYNCORO_SECRET, else \'\')')
    add('--certfile', type=existing_file, default=None,
        help='the TLS certificate the scheduler uses (-s, --certfile of discoro.py), for '
        'the connection to it (default: no TLS)')
    add('--keyfile', type=existing_file, default=None,
        help='the private key of --certfile, when that file does not hold it')
    add('--timeout', type=seconds, default=10,
        help='seconds to wait for the scheduler at each try (default %(default)g); it tries '
        'again until it is found')
    add('--daemon', action='store_true',
        help='do not read commands from standard input (implied when started in the '
        'background)')
    add('-d', '--debug', action='store_true', help='log at DEBUG level: every message')
    return parser


def _options(argv):
    parser = _parser()
    options = parser.parse_args(argv)
    if options.poll_sec < POLL_MIN:
        parser.error('--poll_sec must be at least %s' % POLL_MIN)
    if options.max_failures < 1:
        parser.error('--max_failures must be at least 1')
    check_tls(parser, options.certfile, options.keyfile)
    check_tls(parser, options.http_certfile, options.http_keyfile, '--http_certfile')
    return options


def main(argv=None):
    """The httpd.py program: serve the monitor of whatever computation the
    discoro.py scheduler runs. Reads `quit` (or end of input) from stdin
    unless --daemon. Returns the exit status."""
    options = _options(argv)
    disasyncoro.logger.setLevel(logging.DEBUG if options.debug else logging.INFO)
    try:
        rt = disasyncoro.AsynCoro(node=options.ip_addr, tcp_port=options.tcp_port,
                                  udp_port=options.udp_port, secret=options.secret,
                                  certfile=options.certfile, keyfile=options.keyfile,
                                  name='discoro_httpd')
    except OSError as exc:
        print('httpd.py: %s' % exc, file=sys.stderr)
        return 1
    location = None
    if options.scheduler:
        location = Location(*options.scheduler.rsplit(':', 1))
        rt.peer(location)
    try:
        httpd = HTTPServer(None, host=options.host, port=options.port,
                           poll_sec=options.poll_sec, DocumentRoot=options.DocumentRoot,
                           keyfile=options.http_keyfile, certfile=options.http_certfile,
                           show_coro_args=not options.hide_coro_args,
                           password=options.password, max_failures=options.max_failures)
    except (OSError, ValueError) as exc:
        print('httpd.py: %s' % exc, file=sys.stderr)
        rt.terminate()
        return 1
    watcher = rt._run_here(_Watcher, httpd, location, options.timeout)
    print('httpd ready %s pid=%d' % (httpd.url, os.getpid()), flush=True)
    try:
        _wait_for_quit(options.daemon)
    except KeyboardInterrupt:
        pass
    rt._run_here(watcher.stop)
    httpd.shutdown(wait=False)
    rt.terminate()
    return 0


def _wait_for_quit(daemon):
    """Until `quit`/`exit` or end of input on stdin (unless `daemon` or started
    in the background of a terminal), or SIGINT/SIGTERM/SIGHUP."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)     # KeyboardInterrupt, like SIGINT
    if daemon or in_background() or sys.stdin is None or sys.stdin.closed:
        while True:
            signal.pause()
    print('commands: quit or exit', flush=True)
    for line in sys.stdin:
        if line.strip().lower() in ('quit', 'exit'):
            return


if __name__ == '__main__':
    # run the package's module, not this copy (python -m asyncoro.httpd): one set of classes
    from asyncoro.httpd import main as _main
    sys.exit(_main())
