"""asyncoro.webapp: the web monitor's WSGI application (bottle).

What it owns: `App` (made by `make_app(monitor, root, ...)`), the
application that serves the pages in `root` (asyncoro/data) and the JSON
they render from an asyncoro.monitor.Monitor (through its Views), the
original's endpoints, `/metrics` (asyncoro.metrics) and the guard of its
write actions; and `terminate`, the one action with effects elsewhere (it
asks coroutines of other processes to end). asyncoro.httpd runs it in
gevent's WSGI server.

How it works:

- Every reader gets the full state: the pages poll `/api/...` endpoints that
  answer with everything they show (the Node page only the load samples it
  does not have yet; the Cluster page the cluster's totals and the page of
  nodes it shows: `/api/cluster?q=&sort=&order=&offset=&limit=`, so that
  no answer grows with the cluster). The original's endpoints (`/cluster_status`,
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
- Routes are tables (`ROUTES`, and `original_routes()` for the original's
  endpoints): a method, a path, a handler ``handler(app, **path fields)``
  and who may use it (`Access`). A handler reads the request through the
  App's helpers (`params`), answers with `reply` (JSON), `page` or
  `error_page`, and raises BadRequest for a 400 that says why.
- bottle keeps the request of the moment in thread-locals that every
  greenlet of a thread shares, so requests are served one at a time
  (`App.__call__`); a request only ever waits for a terminate() being sent,
  or for the hub's turn between the slices of a long answer.
- Requests are served in the hub's thread, where the state lives. An
  answer made of many records (every node for the original's endpoints,
  /metrics, a search of thousands of jobs) is made in slices (`_step`):
  each is checked as a step of the hub in strict mode, and the hub runs
  (frames, the status coroutine) between them. /metrics is gzipped for a
  client that asks (Prometheus does): it cannot be paged.
"""

import base64
import collections
import enum
import functools
import hmac
import html
import ipaddress
import json
import os
import secrets
import socket
import string
import zlib

import bottle
import gevent
import gevent.lock

from asyncoro import metrics, strict
from asyncoro.monitor import PAGE, BadRequest, Views, split_location

__all__ = []

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
MAX_BODY = 1 << 20      # bytes of a request body
MAX_JOBS = 100          # jobs in one answer of /api/jobs (about 350 bytes each)
GZIP_SLICE = 1 << 18    # bytes of /metrics compressed in one step
JSON_SLICE = 256        # items of a long JSON list encoded in one step
TOKEN_HEADER = 'X-Asyncoro-Token'
REALM = 'asyncoro monitor'

_ASSETS = ('.css', '.js', '.svg', '.png', '.ico', '.woff2')
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


_compact = json.JSONEncoder(separators=(',', ':')).encode


def _step(what, func, *args):
    """One slice of a long answer, ``func(*args)``: run as a step of the
    hub's thread (checked in strict mode), then the hub's turn (frames,
    other greenlets) before the next slice. Returns what func returns."""
    value = strict.timed(what, func, *args)
    gevent.sleep(0)
    return value


def _encoded(data):
    """`data` as compact JSON; a long list JSON_SLICE items per step."""
    if not isinstance(data, list) or len(data) <= JSON_SLICE:
        return _step('JSON answer', _compact, data)
    return '[%s]' % ','.join(_step('JSON answer', _compact, data[start:start + JSON_SLICE])[1:-1]
                             for start in range(0, len(data), JSON_SLICE))


def _gzip(data):
    """`data` (bytes) gzipped, GZIP_SLICE bytes per step; at level 1: at
    1,024 nodes of 8 servers /metrics (2 MB) becomes 147 KB instead of 124
    at level 6, for 5 ms of CPU instead of 20 to 35."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)     # wbits 16 + 15: the gzip format
    view = memoryview(data)
    parts = [_step('gzip', packer.compress, view[start:start + GZIP_SLICE])
             for start in range(0, len(data), GZIP_SLICE)]
    parts.append(packer.flush())
    return b''.join(parts)


def _accepts_gzip(header):
    """Does an Accept-Encoding header take gzip (listed, and not with q=0)?"""
    for part in (header or '').split(','):
        coding, _, params = part.partition(';')
        if coding.strip().lower() != 'gzip':
            continue
        name, _, weight = params.strip().partition('=')
        if name.strip().lower() != 'q':
            return True
        try:
            return float(weight) > 0
        except ValueError:      # a weight that is no number: as if none were given
            return True
    return False


class Access(enum.Enum):
    """Who may use a route (see the module docstring)."""
    READ = 'read'               # anybody who may read (with a password: who gives it)
    WRITE = 'write'             # not a browser's request for another origin
    PAGE_WRITE = 'page write'   # that, and only with the token of a page this monitor served


Route = collections.namedtuple('Route', 'method path handler access', defaults=(Access.READ,))
Route.__doc__ = """One entry of a route table: `handler(app, **the path's fields)`
answers `method path`, for those `access` lets in (by default, every reader)."""


_TITLES = {400: 'Bad request', 403: 'Forbidden', 404: 'Not found', 405: 'Method not allowed',
           413: 'Request too large', 500: 'Internal error'}


class App:
    """The WSGI application of `monitor` (an asyncoro.monitor.Monitor), with
    pages and assets from `root`: its routes are ROUTES and the original's
    (`original_routes`). `password` (optional) protects every path; `host`
    is the name the server was told to bind (a name under which writes are
    taken). `bottle` is the bottle application, `guard` the guard of writes
    and `views` what the JSON is made of."""

    def __init__(self, monitor, root=DATA_DIR, password=None, host=''):
        self.monitor = monitor
        self.views = Views(monitor, _step)
        self.root = root
        self.pages = _Pages(root)
        self.guard = _Guard(password, host)
        self.request, self.response = bottle.request, bottle.response
        self.bottle = bottle.Bottle()       # catchall: a failing handler gives our 500 page
        self._lock = gevent.lock.Semaphore()
        for code in _TITLES:
            self.bottle.error_handler[code] = self._on_error
        original = original_routes()
        self._json_paths = ('/api/',) + tuple(route.path for route in original)
        for route in ROUTES + original:
            self.bottle.route(route.path, route.method, self._callback(route))

    def __call__(self, environ, start_response):
        """Serve one request: it is asked for the password first when there is
        one, and served alone (bottle's thread-locals are shared by all
        greenlets of the hub thread)."""
        if not self.guard.authorized(environ):
            body = b'this monitor wants its password (HTTP basic authentication, any user)\n'
            start_response('401 Unauthorized', [
                ('Content-Type', 'text/plain; charset=utf-8'),
                ('Content-Length', str(len(body))),
                ('WWW-Authenticate', 'Basic realm="%s", charset="UTF-8"' % REALM),
                ('Cache-Control', 'no-store')])
            return [body]
        with self._lock:
            return self.bottle(environ, start_response)

    def _callback(self, route):
        """bottle's callback of `route`: the guard first for a write (a 403,
        nothing done), then the handler; BadRequest becomes a 400 that says why."""
        handler, access = route.handler, route.access

        def callback(**fields):
            if access is not Access.READ:
                why = self.guard.refusal(self.request, access is Access.PAGE_WRITE)
                if why is not None:
                    return self.error_page(403, 'Forbidden', why)
            try:
                return handler(self, **fields)
            except BadRequest as exc:
                return self.error_page(400, 'Bad request', str(exc))
        callback.__name__ = getattr(handler, '__name__', route.path)
        return callback

    # ---------------- answers

    def reply(self, data, status=200):
        """`data` as the JSON answer."""
        response = self.response
        response.status = status
        response.content_type = 'application/json'
        response.set_header('Cache-Control', 'no-store')
        return _encoded(data)

    def page(self, template, **fields):
        """The page `template` of `root`, with the token and `fields`."""
        response = self.response
        response.content_type = 'text/html; charset=utf-8'
        response.set_header('Cache-Control', 'no-store')
        for name, value in _PAGE_HEADERS:
            response.set_header(name, value)
        return self.pages.render(template, token=self.guard.token, **fields)

    def error_page(self, code, title, message):
        """An error: JSON for the JSON paths, else the error page."""
        response = self.response
        response.status = code
        if self.request.path.startswith(self._json_paths):
            response.content_type = 'application/json'
            return json.dumps({'error': message, 'status': code})
        response.content_type = 'text/html; charset=utf-8'
        for name, value in _PAGE_HEADERS:
            response.set_header(name, value)
        return self.pages.render('error.html', code=code, title=title, message=message)

    def unknown(self, kind, name):
        """The 404 for a node or server (`kind`) this monitor does not know."""
        return self.error_page(404, 'No such %s' % kind, 'no %s %s is known to this monitor'
                               % (kind, name))

    def _on_error(self, error):
        request = self.request
        code = error.status_code
        if code >= 500:
            message = 'the monitor failed to answer this request; its log says why'
        elif isinstance(error.body, str) and error.body and not error.body.startswith('<'):
            message = error.body
        else:
            message = '%s %s: %s' % (request.method, request.path, _TITLES.get(code, 'error'))
        if code == 404 and message.startswith('Not found'):
            message = 'there is no page at %s' % request.path
        return self.error_page(code, _TITLES.get(code, 'Error'), message)

    # ---------------- what a request gives

    def params(self):
        """The request's parameters: a JSON object body, or the form / query
        fields (values of repeated fields as lists)."""
        request = self.request
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


def _one(data, key, required=True):
    """The value of `key` in the parameters `data`, given at most once."""
    value = data.get(key)
    if isinstance(value, list):
        if len(value) != 1:
            raise BadRequest('give %s once' % key)
        value = value[0]
    if required and (value is None or value == ''):
        raise BadRequest('%s is missing' % key)
    return value


def _number(data, key, default=0, kind=int, what='a whole number'):
    value = _one(data, key, required=False)
    if value is None or value == '':
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadRequest('%s must be %s, not %r' % (key, what, value)) from None


def _coro_list(data):
    coros = data.get('coro', data.get('coros'))
    if isinstance(coros, str):
        coros = [coros]
    if not coros or not isinstance(coros, list) or \
            not all(isinstance(c, str) and c for c in coros):
        raise BadRequest('name the coroutines to terminate: one or more "coro" fields '
                         'in str(coro) form (~name/id@addr:port)')
    return coros


# ---------------------------------------------------------------- terminating jobs

def terminate(monitor, keys):
    """Terminate the running coroutines named (`str(coro)`) in `keys`:
    {'terminated', 'finished', 'unknown', 'failed', 'message'}. Their ends
    come later, as MonitorExceptions. Blocks while each terminate request
    is sent (a coroutine of another process)."""
    result = {'terminated': [], 'finished': [], 'unknown': [], 'failed': []}
    for key in keys:
        job = monitor.running.get(key)
        if job is not None:
            if key not in monitor.terminating:
                # marked first: its end may come while the request is on its way
                monitor.mark_terminating(key)
                if job.coro.terminate() != 0:
                    monitor.mark_terminating(key, False)
                    result['failed'].append(key)
                    continue
            result['terminated'].append(key)
            continue
        ended = monitor.end_of(key)
        if ended is None:
            result['unknown'].append(key)
        else:
            state, end_time = ended
            result['finished'].append({'coro': key, 'how': state.value, 'state': state.value,
                                       'end_time': end_time})
    result['message'] = _terminate_message(result)
    return result


def _terminate_message(result):
    parts = []
    if result['terminated']:
        n = len(result['terminated'])
        parts.append('terminating %d coroutine%s' % (n, '' if n == 1 else 's'))
    for entry in result['finished']:
        parts.append('%s already %s' % (entry['coro'], entry['state']))
    for key in result['failed']:
        parts.append('%s could not be reached to terminate it' % key)
    for key in result['unknown']:
        parts.append('%s is not a coroutine of this computation' % key)
    return '; '.join(parts)


# ---------------------------------------------------------------- pages and assets

def _cluster_page(app):
    return app.page('cluster.html')


def _jobs_page(app):
    return app.page('jobs.html')


def _node_page(app, host):
    node = app.views.find_node(host)
    if node is None:
        return app.unknown('node', host)
    return app.page('node.html', node=node.addr, name=node.name)


def _server_page(app, location):
    key = split_location(location)
    server = app.views.find_server(key) if key else None
    if server is None:
        return app.unknown('server', location)
    return app.page('server.html', server=server.location, node=server.node.addr)


def _old_page(app, page, param, example):
    """The original's <page>.html?<param>=... : a redirect to /<page>/<value>."""
    value = app.request.query.get(param)
    if not value:
        return app.error_page(400, 'Bad request', '%s.html needs ?%s=%s' % (page, param, example))
    bottle.redirect('/%s/%s' % (page, bottle.urlquote(value, safe='')))


def _static(app, path):
    if not path.endswith(_ASSETS):
        return app.error_page(404, 'Not found', 'there is no asset %s' % path)
    found = bottle.static_file(path, root=app.root)
    if found.status_code == 404:
        return app.error_page(404, 'Not found', 'there is no asset %s' % path)
    found.set_header('Cache-Control', 'no-cache')
    found.set_header('X-Content-Type-Options', 'nosniff')
    return found


# ---------------------------------------------------------------- JSON for the pages

def _api_cluster(app):
    data = app.params()
    return app.reply(app.views.cluster(
        q=_one(data, 'q', False) or '', sort=_one(data, 'sort', False) or None,
        order=_one(data, 'order', False) or 'asc', offset=_number(data, 'offset'),
        limit=_number(data, 'limit', PAGE)))


def _api_node(app, host):
    data = app.params()
    info = app.views.node_info(host, _number(data, 'since', None, float, 'a time'),
                               _number(data, 'epoch', None))
    return app.unknown('node', host) if info is None else app.reply(info)


def _api_server(app, location):
    key = split_location(location)
    info = app.views.server_info(key, _number(app.params(), 'limit')) if key else None
    return app.unknown('server', location) if info is None else app.reply(info)


def _api_jobs(app):
    query = app.request.query
    states = [state for text in query.getall('state') for state in text.split(',') if state]
    limit = min(_number(query, 'limit', MAX_JOBS), MAX_JOBS)
    return app.reply(app.views.jobs(query.get('q', ''), states, limit))


def _api_job(app):
    key = _one(app.request.query, 'coro')
    info = app.views.job(key)
    if info is None:
        return app.error_page(404, 'No such job', 'job %s is not running and not among the '
                              'recent ones this monitor keeps' % key)
    return app.reply(info)


def _api_terminate(app):
    return app.reply(terminate(app.monitor, _coro_list(app.params())))


def _api_settings(app):
    data = app.params()
    return app.reply(app.monitor.settings.change(_one(data, 'poll_sec', False),
                                                 _one(data, 'show_coro_args', False)))


def _prometheus(app):
    response = app.response
    response.content_type = metrics.CONTENT_TYPE
    response.set_header('Cache-Control', 'no-store')
    response.set_header('Vary', 'Accept-Encoding')
    body = metrics.exposition(app.monitor, step=_step).encode('utf-8')
    if _accepts_gzip(app.request.get_header('Accept-Encoding')):
        response.set_header('Content-Encoding', 'gzip')
        body = _gzip(body)
    return body


ROUTES = [Route('GET', path, _cluster_page)
          for path in ('/', '/index.html', '/cluster.html', '/cluster')] + [
    Route('GET', '/jobs', _jobs_page),
    Route('GET', '/node/<host:path>', _node_page),
    Route('GET', '/server/<location:path>', _server_page),
    Route('GET', '/node.html', functools.partial(_old_page, page='node', param='host',
                                                 example='<node address>')),
    Route('GET', '/server.html', functools.partial(_old_page, page='server', param='location',
                                                   example='<addr:port>')),
    Route('GET', '/static/<path:path>', _static),
    Route('GET', '/api/cluster', _api_cluster),
    Route('GET', '/api/node/<host:path>', _api_node),
    Route('GET', '/api/server/<location:path>', _api_server),
    Route('GET', '/api/jobs', _api_jobs),
    Route('GET', '/api/job', _api_job),
    Route('POST', '/api/terminate', _api_terminate, Access.PAGE_WRITE),
    Route('POST', '/api/settings', _api_settings, Access.PAGE_WRITE),
    Route('GET', '/metrics', _prometheus),
]


# ---------------------------------------------------------------- the original's endpoints

def original_routes():
    """The original's endpoints, with its field names and shapes (fields are
    only added; {} for what is not known): the nodes (`/cluster_status`),
    those changed since a reader's last look (`/cluster_updates`), one node
    (`/node_info`), one server (`/server_info`), terminating jobs
    (`/terminate_coros`) and the settings (`/update`, `/set_poll_sec`). Their
    writes are guarded, but want no page's token: scripts use them."""

    def cluster_status(app):
        return app.reply(app.views.node_list())

    def cluster_updates(app):
        request, monitor = app.request, app.monitor
        # the reader's next cursor is the state's seq before the list is made: a node
        # that changes while it is made (between slices) is in the next answer too
        seq = monitor.seq
        since = request.query.get('since')
        if since is None:       # a reader without a cursor of its own: its cookie's
            since = request.get_cookie('asyncoro_monitor_seq')
            since = int(since) if since and since.isdigit() else None
        else:
            since = _number(request.query, 'since')
        nodes = app.views.node_list(since)
        app.response.set_header('X-Monitor-Seq', str(seq))
        app.response.set_cookie('asyncoro_monitor_seq', str(seq), path='/',
                                httponly=True, samesite='strict')
        return app.reply(nodes)

    def node_info(app):
        host = _one(app.params(), 'host')
        return app.reply(app.views.node_info(str(host), history=False) or {})

    def server_info(app):
        data = app.params()
        location = _one(data, 'location')
        key = split_location(str(location))
        if key is None:
            raise BadRequest('location must be addr:port, not %r' % (location,))
        return app.reply(app.views.server_info(key, _number(data, 'limit'), original=True)
                         or {})

    def terminate_coros(app):
        return app.reply(terminate(app.monitor, _coro_list(app.params()))['terminated'])

    def update(app):
        data = app.params()
        return app.reply(app.monitor.settings.change(_one(data, 'timeout', False),
                                                     _one(data, 'show_coro_args', False)))

    return [Route('GET', '/cluster_status', cluster_status),
            Route('GET', '/cluster_updates', cluster_updates),
            Route('POST', '/node_info', node_info),
            Route('POST', '/server_info', server_info),
            Route('POST', '/terminate_coros', terminate_coros, Access.WRITE),
            Route('POST', '/update', update, Access.WRITE),
            Route('POST', '/set_poll_sec', update, Access.WRITE)]


def make_app(monitor, root=DATA_DIR, password=None, host=''):
    """The WSGI application of `monitor` (see App)."""
    return App(monitor, root, password, host)
