"""asyncoro.webapp: the web monitor's WSGI application (bottle).

What it owns: `make_app(monitor, root, ...)`, the application that serves
the pages in `root` (asyncoro/data) and the JSON they render from an
asyncoro.monitor.Monitor, the original's endpoints, `/metrics`
(asyncoro.metrics) and the guard of its write actions; asyncoro.httpd runs
it in gevent's WSGI server.

How it works:

- Every reader gets the full state: the pages poll `/api/...` endpoints that
  answer with everything they show (the Node page only the load samples it
  does not have yet). The original's endpoints (`/cluster_status`,
  `/cluster_updates`, `/node_info`, `/server_info`, `/terminate_coros`,
  `/update`) keep the original's field names and shapes (fields are only
  added); `/cluster_updates` keeps one cursor per reader (a `since`
  parameter or a cookie) instead of one for everybody.
- Write actions (terminate, settings) refuse a request that a browser made
  for another origin (its Origin or Sec-Fetch-Site header says so), and the
  page endpoints (`/api/terminate`, `/api/settings`) also want the token
  that only the pages this application served carry (a header no other
  origin may send without asking first, and nobody answers that asking).
  Without a password, they also want the monitor reached by an address or
  a name of this machine, so a name that resolves here by a trick (DNS
  rebinding) cannot borrow the pages' token.
- With a password, every path wants it (HTTP basic authentication, any user
  name): pages, assets, JSON and /metrics.
- bottle keeps the request of the moment in thread-locals that every
  greenlet of a thread shares, so requests are served one at a time
  (`_serialized`); a request only ever waits for a terminate() being sent.
"""

import base64
import hmac
import html
import ipaddress
import json
import os
import secrets
import socket
import string

import bottle
import gevent.lock

from asyncoro import metrics
from asyncoro.monitor import BadRequest, split_location

__all__ = []

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
MAX_BODY = 1 << 20      # bytes of a request body
MAX_JOBS = 100          # jobs in one answer of /api/jobs (about 350 bytes each)
TOKEN_HEADER = 'X-Asyncoro-Token'
REALM = 'asyncoro monitor'

_ASSETS = ('.css', '.js', '.svg', '.png', '.ico', '.woff2')
_JSON_PATHS = ('/api/', '/cluster_status', '/cluster_updates', '/node_info', '/server_info',
               '/terminate_coros', '/update', '/set_poll_sec')
_PAGE_HEADERS = (('X-Content-Type-Options', 'nosniff'), ('Referrer-Policy', 'same-origin'),
                 ('X-Frame-Options', 'DENY'),   # no page of another site may frame the buttons
                 ('Content-Security-Policy', "default-src 'self'; img-src 'self' data:; "
                  "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"))


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


class _Guard:
    """Who may write (and, with a password, read): see the module docstring."""

    def __init__(self, password, host):
        self.password = password or None
        self.token = secrets.token_urlsafe(24)
        names = {'localhost', socket.gethostname().lower()}
        if host:
            names.add(host.lower())
        self.names = names

    def authorized(self, environ):
        """True when no password is set or the request gives it."""
        if self.password is None:
            return True
        header = environ.get('HTTP_AUTHORIZATION', '')
        scheme, _, encoded = header.partition(' ')
        if scheme.lower() != 'basic':
            return False
        try:
            _user, _, given = base64.b64decode(encoded.strip()).decode('utf-8').partition(':')
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode('utf-8'), self.password.encode('utf-8'))

    def trusted_host(self, host):
        """Is `host` (a Host header) an address or a name of this machine?"""
        name = host.strip().lower()
        if name.startswith('['):
            name = name[1:].partition(']')[0]
        elif name.count(':') == 1:
            name = name.partition(':')[0]
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names or name.endswith('.localhost')

    def refusal(self, request, needs_token):
        """Why a write request is refused (a 403's message), or None."""
        # the Host header itself, not bottle's urlparts: those follow X-Forwarded-*
        # headers, which a page's own script may set
        environ = request.environ
        host = environ.get('HTTP_HOST') or '%s:%s' % (environ.get('SERVER_NAME', ''),
                                                     environ.get('SERVER_PORT', ''))
        own = _origin('%s://%s' % (environ.get('wsgi.url_scheme', 'http'), host))
        origin = request.get_header('Origin')
        if origin is not None and _origin(origin) != own:
            return ('a page of another origin (%s) may not change this monitor; use the '
                    'monitor\'s own pages at %s/' % (origin, own))
        site = request.get_header('Sec-Fetch-Site')
        if site is not None and site not in ('same-origin', 'none'):
            return 'a %s request may not change this monitor' % site
        if self.password is None and not self.trusted_host(host):
            return ('this monitor has no password, so it takes changes only when reached by '
                    'an address or a name of its own machine, not %s' % host)
        if needs_token:
            given = request.get_header(TOKEN_HEADER) or ''
            if not hmac.compare_digest(given.encode('utf-8', 'replace'),
                                       self.token.encode('ascii')):
                return ('this action needs the token of a page this monitor served (header %s);'
                        ' reload the page' % TOKEN_HEADER)
        return None


def _origin(url):
    """scheme://host[:port] in one form: lower case, no default port, no '/'."""
    url = url.strip().rstrip('/').lower()
    for scheme, port in (('http://', ':80'), ('https://', ':443')):
        if url.startswith(scheme) and url.endswith(port):
            return url[:-len(port)]
    return url


def make_app(monitor, root=DATA_DIR, password=None, host=''):
    """The WSGI application of `monitor`, with pages and assets from `root`;
    `password` (optional) protects every path; `host` is the name the server
    was told to bind (a name under which writes are taken). The bottle app
    is its `bottle` attribute and the guard its `guard`."""
    app = bottle.Bottle()        # catchall: a failing handler gives our 500 page
    pages = _Pages(root)
    guard = _Guard(password, host)
    request, response = bottle.request, bottle.response

    def wants_json():
        return request.path.startswith(_JSON_PATHS)

    def error_page(code, title, message):
        response.status = code
        if wants_json():
            response.content_type = 'application/json'
            return json.dumps({'error': message, 'status': code})
        response.content_type = 'text/html; charset=utf-8'
        for name, value in _PAGE_HEADERS:
            response.set_header(name, value)
        return pages.render('error.html', code=code, title=title, message=message)

    def on_error(error):
        code = error.status_code
        titles = {400: 'Bad request', 403: 'Forbidden', 404: 'Not found',
                  405: 'Method not allowed', 413: 'Request too large', 500: 'Internal error'}
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

    def unknown(kind, name):
        """The 404 for a node or server (`kind`) this monitor does not know."""
        return error_page(404, 'No such %s' % kind, 'no %s %s is known to this monitor'
                          % (kind, name))

    def reply(data, status=200):
        response.status = status
        response.content_type = 'application/json'
        response.set_header('Cache-Control', 'no-store')
        return json.dumps(data, separators=(',', ':'))

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

    def number(data, key, default=0, kind=int, what='a whole number'):
        value = one(data, key, required=False)
        if value is None or value == '':
            return default
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise BadRequest('%s must be %s, not %r' % (key, what, value)) from None

    def endpoint(func):
        """A JSON endpoint: BadRequest becomes a 400 that says why."""
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except BadRequest as exc:
                return error_page(400, 'Bad request', str(exc))
        wrapper.__name__ = func.__name__
        return wrapper

    def writes(needs_token):
        """A write action: refused (403, nothing done) unless the guard lets it."""
        def wrap(func):
            def wrapper(*args, **kwargs):
                why = guard.refusal(request, needs_token)
                if why is not None:
                    return error_page(403, 'Forbidden', why)
                return func(*args, **kwargs)
            wrapper.__name__ = func.__name__
            return wrapper
        return wrap

    # ---------------- pages

    def page(template, **fields):
        response.content_type = 'text/html; charset=utf-8'
        response.set_header('Cache-Control', 'no-store')
        for name, value in _PAGE_HEADERS:
            response.set_header(name, value)
        return pages.render(template, token=guard.token, **fields)

    @app.get('/')
    @app.get('/index.html')
    @app.get('/cluster.html')
    @app.get('/cluster')
    def cluster_page():
        return page('cluster.html')

    @app.get('/jobs')
    def jobs_page():
        return page('jobs.html')

    @app.get('/node/<host:path>')
    def node_page(host):
        node = monitor.find_node(host)
        if node is None:
            return unknown('node', host)
        return page('node.html', node=node.addr, name=node.name)

    @app.get('/server/<location:path>')
    def server_page(location):
        key = split_location(location)
        server = monitor.servers.get(key) if key else None
        if server is None:
            return unknown('server', location)
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
        found.set_header('X-Content-Type-Options', 'nosniff')
        return found

    # ---------------- JSON for the pages

    @app.get('/api/cluster')
    def api_cluster():
        return reply(monitor.cluster())

    @app.get('/api/node/<host:path>')
    @endpoint
    def api_node(host):
        data = params()
        info = monitor.node_info(host, number(data, 'since', None, float, 'a time'),
                                 number(data, 'epoch', None))
        return unknown('node', host) if info is None else reply(info)

    @app.get('/api/server/<location:path>')
    @endpoint
    def api_server(location):
        key = split_location(location)
        info = monitor.server_info(key, number(params(), 'limit')) if key else None
        return unknown('server', location) if info is None else reply(info)

    @app.get('/api/jobs')
    @endpoint
    def api_jobs():
        states = request.query.getall('state')
        states = [state for text in states for state in text.split(',') if state]
        limit = min(number(request.query, 'limit', MAX_JOBS), MAX_JOBS)
        return reply(monitor.jobs(request.query.get('q', ''), states, limit))

    @app.get('/api/job')
    @endpoint
    def api_job():
        key = one(request.query, 'coro')
        info = monitor.job(key)
        if info is None:
            return error_page(404, 'No such job', 'job %s is not running and not among the '
                              'recent ones this monitor keeps' % key)
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
    @writes(needs_token=True)
    @endpoint
    def api_terminate():
        return reply(monitor.terminate(coro_list(params())))

    @app.post('/api/settings')
    @writes(needs_token=True)
    @endpoint
    def api_settings():
        data = params()
        return reply(monitor.set_settings(one(data, 'poll_sec', False),
                                          one(data, 'show_coro_args', False)))

    @app.get('/metrics')
    def prometheus():
        response.content_type = metrics.CONTENT_TYPE
        response.set_header('Cache-Control', 'no-store')
        return metrics.exposition(monitor)

    # ---------------- the original's endpoints (its field names; {} for what is not known)

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
        response.set_cookie('asyncoro_monitor_seq', str(monitor.seq), path='/',
                            httponly=True, samesite='strict')
        return reply(nodes)

    @app.post('/node_info')
    @endpoint
    def node_info():
        host = one(params(), 'host')
        return reply(monitor.node_info(str(host), history=False) or {})

    @app.post('/server_info')
    @endpoint
    def server_info():
        data = params()
        location = one(data, 'location')
        key = split_location(str(location))
        if key is None:
            raise BadRequest('location must be addr:port, not %r' % (location,))
        return reply(monitor.server_info(key, number(data, 'limit'), original=True) or {})

    @app.post('/terminate_coros')
    @writes(needs_token=False)
    @endpoint
    def terminate_coros():
        return reply(monitor.terminate(coro_list(params()))['terminated'])

    @app.post('/update')
    @app.post('/set_poll_sec')
    @writes(needs_token=False)
    @endpoint
    def update():
        data = params()
        return reply(monitor.set_settings(one(data, 'timeout', False),
                                          one(data, 'show_coro_args', False)))

    wsgi = _serialized(app, guard)
    wsgi.bottle = app
    wsgi.guard = guard
    return wsgi


def _serialized(app, guard):
    """`app` serving one request at a time (bottle's thread-locals are shared
    by all greenlets of the hub thread), each asked for the password first
    when there is one."""
    lock = gevent.lock.Semaphore()

    def wsgi(environ, start_response):
        if not guard.authorized(environ):
            body = b'this monitor wants its password (HTTP basic authentication, any user)\n'
            start_response('401 Unauthorized', [
                ('Content-Type', 'text/plain; charset=utf-8'),
                ('Content-Length', str(len(body))),
                ('WWW-Authenticate', 'Basic realm="%s", charset="UTF-8"' % REALM),
                ('Cache-Control', 'no-store')])
            return [body]
        with lock:
            return app(environ, start_response)
    return wsgi
