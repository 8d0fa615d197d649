"""asyncoro.httpd: the web monitor of a discoro computation, and the httpd.py program.

What it owns: `HTTPServer`, the bottle application that serves
the pages in `data/` and the JSON they render from the monitor's state
(asyncoro.monitor), and `main()`, the standalone httpd.py program that
attaches to a running discoro.py scheduler.

How it works:

- The monitor is fed by a coroutine (`HTTPServer.status_coro`) that the
  computation's status messages go to: the constructor makes it the
  computation's `status_coro`, and when the program had set its own, every
  message is passed on to that one too, after the monitor took it.
- gevent's WSGI server runs in the runtime's hub thread, the same thread as
  that coroutine, so the state has one owner and needs no lock. bottle keeps
  the request of the moment in thread-locals that every greenlet of a thread
  shares, so requests are served one at a time (`_serialized`); a request
  only ever waits for a terminate() being sent.
- Every reader gets the full state: the pages poll `/api/...` endpoints that
  answer with everything they show. The original's endpoints (`/cluster_status`,
  `/cluster_updates`, `/node_info`, `/server_info`, `/terminate_coros`,
  `/update`) stay; `/cluster_updates` keeps one cursor per reader (a `since`
  parameter or a cookie) instead of one for everybody.
- The standalone program (`python -m asyncoro.httpd`, scripts/httpd.py) asks
  the scheduler's `discoro_scheduler` service to `watch`: the answer is a
  snapshot of the current computation, after which the scheduler copies every
  status message to the monitor's coroutine; asking again every poll
  interval tells whether it is still there and who waits in its queue.
"""

import html
import json
import logging
import os
import ssl
import string
import sys
import time

import bottle
import gevent
import gevent.lock
import gevent.pywsgi
import gevent.ssl

from asyncoro import disasyncoro
from asyncoro.core import _get_ident
from asyncoro.disasyncoro import Coro, Location, SysCoro
from asyncoro.failure import Failure, spawn, spawn_later
from asyncoro.monitor import POLL_MIN, BadRequest, Monitor, Snapshot, split_location
from asyncoro.programs import (Parser, check_tls, existing_file, host, host_port, in_background,
                               port, port_or_any, seconds)
from asyncoro.service import UNWATCH, WATCH, Service

__all__ = ['HTTPServer']

log = logging.getLogger(__name__)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
DEFAULT_PORT = 8181
MAX_BODY = 1 << 20      # bytes of a request body


# ---------------------------------------------------------------- the web application

_ASSETS = ('.css', '.js', '.svg', '.png', '.ico', '.woff2')
_JSON_PATHS = ('/api/', '/cluster_status', '/cluster_updates', '/node_info', '/server_info',
               '/terminate_coros', '/update')


class _Pages:
    """The HTML templates of DocumentRoot: `$name` fields, values escaped."""

    def __init__(self, root):
        self.root = root
        self._cache = {}

    def render(self, page, **fields):
        template = self._cache.get(page)
        if template is None:
            with open(os.path.join(self.root, page), encoding='utf-8') as f:
                template = self._cache[page] = string.Template(f.read())
        return template.safe_substitute({key: html.escape(str(value), quote=True)
                                         for key, value in fields.items()})


def _make_app(monitor, root):
    """The WSGI application of `monitor`, with pages and assets from `root`."""
    app = bottle.Bottle()        # catchall: a failing handler gives our 500 page
    pages = _Pages(root)
    request, response = bottle.request, bottle.response

    def wants_json():
        return request.path.startswith(_JSON_PATHS)

    def error_page(code, title, message):
        response.status = code
        if wants_json():
            response.content_type = 'application/json'
            return json.dumps({'error': message, 'status': code})
        response.content_type = 'text/html; charset=utf-8'
        return pages.render('error.html', code=code, title=title, message=message)

    def on_error(error):
        code = error.status_code
        titles = {400: 'Bad request', 404: 'Not found', 405: 'Method not allowed',
                  413: 'Request too large', 500: 'Internal error'}
        if code >= 500:
            message = 'the monitor failed to answer this request; its log says why'
        elif isinstance(error.body, str) and error.body and not error.body.startswith('<'):
            message = error.body
        else:
            message = '%s %s: %s' % (request.method, request.path, titles.get(code, 'error'))
        if code == 404 and message.startswith('Not found'):
            message = 'there is no page at %s' % request.path
        return error_page(code, titles.get(code, 'Error'), message)

    for code in (400, 403, 404, 405, 413, 500):
        app.error_handler[code] = on_error

    def reply(data, status=200):
        response.status = status
        response.content_type = 'application/json'
        response.set_header('Cache-Control', 'no-store')
        return json.dumps(data)

    def params():
        """The request's parameters: a JSON object body, or the form / query
        fields (values of repeated fields as lists)."""
        length = request.content_length
        if length > MAX_BODY:
            raise bottle.HTTPError(413, 'request body of %d bytes is over the limit of %d'
                                   % (length, MAX_BODY))
        if request.content_type.split(';')[0].strip() == 'application/json':
            try:
                data = json.loads(request.body.read().decode('utf-8') or 'null')
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest('request body is not valid JSON: %s' % exc) from None
            if isinstance(data, list):
                data = {'coro': data}
            if not isinstance(data, dict):
                raise BadRequest('request body must be a JSON object, not %s'
                                 % type(data).__name__)
            return data
        fields = {}
        for source in (request.query, request.forms):
            for key in source:
                values = source.getall(key)
                fields[key] = values if len(values) > 1 else values[0]
        return fields

    def one(data, key, required=True):
        value = data.get(key)
        if isinstance(value, list):
            if len(value) != 1:
                raise BadRequest('give %s once' % key)
            value = value[0]
        if required and (value is None or value == ''):
            raise BadRequest('%s is missing' % key)
        return value

    def number(data, key, default=0):
        value = one(data, key, required=False)
        if value is None or value == '':
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadRequest('%s must be a whole number, not %r' % (key, value)) from None

    def endpoint(func):
        """A JSON endpoint: BadRequest becomes a 400 that says why."""
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except BadRequest as exc:
                return error_page(400, 'Bad request', str(exc))
        wrapper.__name__ = func.__name__
        return wrapper

    # ---------------- pages

    def page(template, **fields):
        response.content_type = 'text/html; charset=utf-8'
        response.set_header('Cache-Control', 'no-store')
        return pages.render(template, **fields)

    @app.get('/')
    @app.get('/index.html')
    @app.get('/cluster.html')
    @app.get('/cluster')
    def cluster_page():
        return page('cluster.html')

    @app.get('/node/<host:path>')
    def node_page(host):
        node = monitor.find_node(host)
        if node is None:
            return error_page(404, 'No such node',
                              'no node %s is known to this monitor' % host)
        return page('node.html', node=node.addr, name=node.name)

    @app.get('/server/<location:path>')
    def server_page(location):
        key = split_location(location)
        server = monitor.servers.get(key) if key else None
        if server is None:
            return error_page(404, 'No such server',
                              'no server %s is known to this monitor' % location)
        return page('server.html', server=server.location, node=server.node.addr)

    def old_page(page_name, param, example):
        """The original's <page>.html?<param>=... : a redirect to /<page>/<value>."""
        def redirect():
            value = request.query.get(param)
            if not value:
                return error_page(400, 'Bad request', '%s.html needs ?%s=%s'
                                  % (page_name, param, example))
            bottle.redirect('/%s/%s' % (page_name, bottle.urlquote(value, safe='')))
        app.get('/%s.html' % page_name, callback=redirect)

    old_page('node', 'host', '<node address>')
    old_page('server', 'location', '<addr:port>')

    @app.get('/static/<path:path>')
    def static(path):
        if not path.endswith(_ASSETS):
            return error_page(404, 'Not found', 'there is no asset %s' % path)
        found = bottle.static_file(path, root=root)
        if found.status_code == 404:
            return error_page(404, 'Not found', 'there is no asset %s' % path)
        found.set_header('Cache-Control', 'no-cache')
        return found

    # ---------------- JSON for the pages

    @app.get('/api/cluster')
    def api_cluster():
        return reply(monitor.cluster())

    @app.get('/api/node/<host:path>')
    def api_node(host):
        info = monitor.node_info(host)
        if info is None:
            return error_page(404, 'No such node', 'no node %s is known to this monitor'
                              % host)
        return reply(info)

    @app.get('/api/server/<location:path>')
    @endpoint
    def api_server(location):
        key = split_location(location)
        info = monitor.server_info(key, number(params(), 'limit')) if key else None
        if info is None:
            return error_page(404, 'No such server', 'no server %s is known to this monitor'
                              % location)
        return reply(info)

    def coro_list(data):
        coros = data.get('coro', data.get('coros'))
        if isinstance(coros, str):
            coros = [coros]
        if not coros or not isinstance(coros, list) or \
                not all(isinstance(c, str) and c for c in coros):
            raise BadRequest('name the coroutines to terminate: one or more "coro" fields '
                             'in str(coro) form (~name/id@addr:port)')
        return coros

    @app.post('/api/terminate')
    @endpoint
    def api_terminate():
        return reply(monitor.terminate(coro_list(params())))

    @app.post('/api/settings')
    @endpoint
    def api_settings():
        data = params()
        return reply(monitor.set_settings(one(data, 'poll_sec', False),
                                          one(data, 'show_coro_args', False)))

    # ---------------- the original's endpoints

    @app.get('/cluster_status')
    def cluster_status():
        return reply(monitor.node_list())

    @app.get('/cluster_updates')
    @endpoint
    def cluster_updates():
        since = request.query.get('since')
        if since is None:
            since = request.get_cookie('asyncoro_monitor_seq')
            since = int(since) if since and since.isdigit() else None
        else:
            since = number(request.query, 'since')
        nodes = monitor.node_list(since)
        response.set_header('X-Monitor-Seq', str(monitor.seq))
        response.set_cookie('asyncoro_monitor_seq', str(monitor.seq), path='/')
        return reply(nodes)

    @app.post('/node_info')
    @endpoint
    def node_info():
        host = one(params(), 'host')
        info = monitor.node_info(str(host))
        if info is None:
            return error_page(404, 'No such node', 'no node %s is known to this monitor'
                              % host)
        return reply(info)

    @app.post('/server_info')
    @endpoint
    def server_info():
        data = params()
        location = one(data, 'location')
        key = split_location(str(location))
        if key is None:
            raise BadRequest('location must be addr:port, not %r' % (location,))
        info = monitor.server_info(key, number(data, 'limit'))
        if info is None:
            return error_page(404, 'No such server', 'no server %s is known to this monitor'
                              % location)
        return reply(info)

    @app.post('/terminate_coros')
    @endpoint
    def terminate_coros():
        return reply(monitor.terminate(coro_list(params()))['terminated'])

    @app.post('/update')
    @endpoint
    def update():
        data = params()
        return reply(monitor.set_settings(one(data, 'timeout', False),
                                          one(data, 'show_coro_args', False)))

    return _serialized(app)


def _serialized(app):
    """`app` serving one request at a time (bottle's thread-locals are shared
    by all greenlets of the hub thread)."""
    lock = gevent.lock.Semaphore()

    def wsgi(environ, start_response):
        with lock:
            return app(environ, start_response)
    wsgi.bottle = app
    return wsgi


class _WSGIServer(gevent.pywsgi.WSGIServer):
    """pywsgi's server, with a TLS handshake that cannot hang or fail loudly."""

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

class HTTPServer:
    """The web monitor of `computation` at http(s)://<host>:<port>/.

    Create it before `computation.schedule()`: it becomes the computation's
    status_coro (passing every message on to the status_coro the program set,
    if any). `host=''` binds $ASYNCORO_NODE if set, else every interface;
    `port=0` takes any free port (see `address`). `poll_sec` (at least 1) is
    how often the pages refresh; `keyfile`/`certfile` serve HTTPS;
    `show_coro_args` whether the Server page shows coroutines' arguments
    (str() of each). Both can be changed from the pages. `DocumentRoot` is
    where the pages are (the package's data/ by default).

    Raises OSError when the port cannot be bound, ValueError for a bad
    DocumentRoot."""

    def __init__(self, computation, host='', port=DEFAULT_PORT, poll_sec=10, DocumentRoot=None,
                 keyfile=None, certfile=None, show_coro_args=True):
        if not isinstance(poll_sec, (int, float)) or poll_sec < POLL_MIN:
            log.warning('poll_sec %r is too small; %s is used', poll_sec, POLL_MIN)
            poll_sec = POLL_MIN
        poll_sec = int(poll_sec) if poll_sec == int(poll_sec) else poll_sec
        root = os.path.abspath(DocumentRoot or DATA_DIR)
        if not os.path.isfile(os.path.join(root, 'cluster.html')):
            raise ValueError('DocumentRoot %s has no cluster.html (the monitor pages are in %s)'
                             % (root, DATA_DIR))
        self.computation = computation
        self._monitor = Monitor(poll_sec, show_coro_args)
        self._rt = disasyncoro.AsynCoro.instance()
        self._chain = None
        host = host or os.environ.get('ASYNCORO_NODE', '')
        # listening first: a port that cannot be bound leaves the computation as it was
        self._server = self._rt._run_here(self._start, host, port, self._monitor, root,
                                          keyfile, certfile)
        self.status_coro = Coro(self._status_proc)
        if computation is None:         # the httpd.py program: a scheduler's computations
            self._monitor.mode = 'scheduler'
        else:
            if getattr(computation, 'scheduler', None) is not None:
                log.warning('HTTPServer was created after computation.schedule(): the '
                            'scheduler does not know it, so the monitor stays empty')
            self._chain = computation.status_coro
            computation.status_coro = self.status_coro
            location = self._rt.location
            self._monitor.computation = {'id': str(getattr(computation, '_id', id(computation))),
                                         'client': str(location) if location else None,
                                         'status': 'running', 'since': time.time()}
        addr, bound = self._server.address[:2]
        self.address = (addr, bound)
        shown = '[%s]' % addr if ':' in addr else (addr or '0.0.0.0')
        self.url = '%s://%s:%s/' % ('https' if certfile else 'http', shown, bound)
        self._rt.atexit(0, self._stop)
        log.info('Started HTTP server at %s', self.url)

    @staticmethod
    def _start(host, port, monitor, root, keyfile, certfile):
        # in the hub thread: the server, its greenlets and its lock belong to that hub
        app = _make_app(monitor, root)
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
            if self._chain is not None and not isinstance(msg, Snapshot):
                self._chain.send(msg)

    def shutdown(self, wait=True):
        """Stop serving. With `wait`, first give the pages poll_sec + 0.5 s to
        fetch the last updates: called from a thread (the main program) it
        blocks that long; called from a coroutine it schedules the shutdown
        and returns at once."""
        if self._server is None:
            return
        delay = self._monitor.poll_sec + 0.5 if wait else 0
        if wait:
            log.info('HTTP server waiting for %s seconds for client updates before quitting',
                     self._monitor.poll_sec)
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
        self.stopped = False
        self.loop = spawn(self._run)

    def _run(self):
        monitor = self.httpd._monitor
        status_coro = self.httpd.status_coro
        while not self.stopped:
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
                    gevent.sleep(monitor.poll_sec)
                    continue
                self.scheduler = found
                monitor.scheduler = str(found.location)
                status_coro.send(Snapshot(answer, True))
                log.info('monitoring the scheduler at %s', found.location)
            gevent.sleep(monitor.poll_sec)
            if self.stopped:
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
        self.stopped = True
        if self.scheduler is not None:
            self.call(self.scheduler, UNWATCH, self.httpd.status_coro, timeout=self.timeout)
        self.loop.kill(block=False)
        super().stop(reason)


def _options(argv):
    parser = Parser(
        prog='httpd.py', description='Web monitor of the computation a discoro.py scheduler '
        'is running (and of the ones waiting in its queue).')
    parser.add_argument('--host', default='',
                        help='address the HTTP server binds (default: $ASYNCORO_NODE, else all)')
    parser.add_argument('-p', '--port', type=port_or_any, default=DEFAULT_PORT,
                        help='HTTP port (default %(default)s; 0 = any free port)')
    parser.add_argument('--poll_sec', type=seconds, default=10,
                        help='seconds between page updates (default %(default)s)')
    parser.add_argument('--hide_coro_args', action='store_true',
                        help='do not show coroutine arguments (they can be large)')
    parser.add_argument('--DocumentRoot', default=None, help='directory of the pages')
    parser.add_argument('--http_certfile', type=existing_file, default=None,
                        help='certificate for HTTPS')
    parser.add_argument('--http_keyfile', type=existing_file, default=None,
                        help='key for HTTPS')
    parser.add_argument('--scheduler', type=host_port, default=None, metavar='HOST:PORT',
                        help='where the scheduler runs (its TCP port); default: discover it')
    parser.add_argument('-i', '--ip_addr', type=host, default=None,
                        help='address of this program\'s asyncoro runtime')
    parser.add_argument('-t', '--tcp_port', type=port_or_any, default=0)
    parser.add_argument('-u', '--udp_port', type=port, default=0,
                        help='discovery port: the scheduler\'s (default $ASYNCORO_UDP_PORT, else '
                        '51350)')
    parser.add_argument('-s', '--secret', default='', help='the scheduler\'s secret')
    parser.add_argument('--certfile', type=existing_file, default=None,
                        help='certificate for asyncoro peers')
    parser.add_argument('--keyfile', type=existing_file, default=None,
                        help='key for asyncoro peers')
    parser.add_argument('--timeout', type=seconds, default=10,
                        help='seconds to wait for the scheduler at each try')
    parser.add_argument('--daemon', action='store_true', help='do not read stdin')
    parser.add_argument('-d', '--debug', action='store_true', help='debug logging')
    options = parser.parse_args(argv)
    if options.poll_sec < POLL_MIN:
        parser.error('--poll_sec must be at least %s' % POLL_MIN)
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
                           show_coro_args=not options.hide_coro_args)
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
