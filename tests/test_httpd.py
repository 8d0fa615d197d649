"""The web monitor (docs/guide/monitor.rst): its JSON endpoints and bad input through the
WSGI application in-process; HTTPServer in real client programs with a real
node (status chaining, terminate, HTTPS, shutdown); the pages once in a real
headless Chromium.
"""

import io
import json
import os
import re
import shutil
import socket
import ssl
import time
import urllib.parse

import gevent
import gevent.pywsgi
import gevent.socket
import gevent.ssl
import psutil
import pytest

from conftest import HERE, LOG_LINE, ROOT, free_udp_port, read_line, wait_until

import asyncoro.httpd as httpd
import asyncoro.monitor as monitor_module
import asyncoro.webapp as webapp
from asyncoro import MonitorException
from asyncoro.discoro import (DiscoroCoroInfo, DiscoroNodeAvailInfo, DiscoroNodeInfo,
                              DiscoroStatus, Scheduler)
from asyncoro.netio import Location

NODE = '127.0.0.5'
S1, S2 = Location(NODE, 9001), Location(NODE, 9002)


# ---------------------------------------------------------------- the WSGI app in-process

class FakeCoro:
    """What the monitor needs of a remote coroutine: str, name, location, terminate."""

    def __init__(self, name, coro_id, location, answer=0):
        self.name, self.id, self.location, self.answer = name, coro_id, location, answer
        self.terminated = 0

    def __str__(self):
        return '~%s/%s@%s' % (self.name, self.id, self.location)

    def terminate(self):
        self.terminated += 1
        return self.answer


class Unprintable:
    def __str__(self):
        raise RuntimeError('no text for you')


def call(app, method, path, body=None, content_type=None, cookie=None, headers=None,
         raw=False):
    """(status code, headers dict, body text) of one request to a WSGI app;
    `headers` {name: value} are added to the request's; with `raw`, the body
    as bytes."""
    path, _, query = path.partition('?')
    data = body.encode() if isinstance(body, str) else (body or b'')
    environ = {'REQUEST_METHOD': method, 'PATH_INFO': urllib.parse.unquote(path),
               'QUERY_STRING': query, 'SERVER_NAME': '127.0.0.1', 'SERVER_PORT': '80',
               'SERVER_PROTOCOL': 'HTTP/1.1', 'REMOTE_ADDR': '127.0.0.1',
               'wsgi.url_scheme': 'http', 'wsgi.input': io.BytesIO(data),
               'wsgi.errors': io.StringIO(), 'wsgi.version': (1, 0), 'wsgi.multithread': False,
               'wsgi.multiprocess': False, 'wsgi.run_once': False,
               'CONTENT_LENGTH': str(len(data))}
    if content_type:
        environ['CONTENT_TYPE'] = content_type
    if cookie:
        environ['HTTP_COOKIE'] = cookie
    for name, value in (headers or {}).items():
        environ['HTTP_' + name.upper().replace('-', '_')] = value
    started = []
    chunks = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    text = b''.join(chunks)
    if hasattr(chunks, 'close'):
        chunks.close()
    status, headers = started[0]
    return int(status.split()[0]), dict(headers), text if raw else text.decode()


def get_json(app, path):
    code, headers, text = call(app, 'GET', path)
    assert code == 200, text
    assert headers['Content-Type'].startswith('application/json')
    return json.loads(text)


def post(app, path, form=None, data=None, headers=None):
    """A POST as the monitor's own pages send it (with their token), unless
    `headers` says otherwise."""
    if headers is None:
        headers = {webapp.TOKEN_HEADER: app.guard.token}
    if data is not None:
        return call(app, 'POST', path, json.dumps(data), 'application/json', headers=headers)
    return call(app, 'POST', path, urllib.parse.urlencode(form or {}, doseq=True),
                'application/x-www-form-urlencoded', headers=headers)


@pytest.fixture
def cluster():
    """A monitor fed the messages of one node with two servers and three jobs
    (one of them finished), and its WSGI application."""
    monitor = monitor_module.Monitor(poll_sec=5)
    avail = DiscoroNodeAvailInfo(Location(NODE, 9000), 75.0, 8 << 30, 100 << 30, 90.0)
    monitor.update(DiscoroStatus(Scheduler.NodeDiscovered,
                                 DiscoroNodeInfo('box', NODE, 2, 'linux-x86_64', avail)))
    monitor.update(DiscoroStatus(Scheduler.ServerDiscovered, S1))
    monitor.update(DiscoroStatus(Scheduler.NodeInitialized,
                                 DiscoroNodeInfo('box', NODE, 2, 'linux-x86_64', avail)))
    for server in (S1, S2):
        monitor.update(DiscoroStatus(Scheduler.ServerInitialized, server))
    coros = [FakeCoro('compute', 11, S1), FakeCoro('compute', 12, S1), FakeCoro('other', 21, S2)]
    for i, coro in enumerate(coros):
        monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(
            coro, (i, 'text', Unprintable()), {'scale': 2}, 1000.0 + i)))
    monitor.update(MonitorException(coros[0], (StopIteration, 42)))
    monitor.update(DiscoroNodeAvailInfo(Location(NODE, 9000), 25.0, 7 << 30, 99 << 30, 80.0))
    monitor.update('a stray message')       # logged at debug level and dropped
    return monitor, webapp.make_app(monitor, webapp.DATA_DIR), coros


def test_cluster_status_node_and_server_info_follow_the_status_messages(cluster):
    monitor, app, coros = cluster
    nodes = get_json(app, '/cluster_status')
    assert len(nodes) == 1
    node = nodes[0]
    assert {k: node[k] for k in ('addr', 'name', 'status', 'servers', 'coros_submitted',
                                 'coros_done', 'coros_running', 'state')} == {
        'addr': NODE, 'name': 'box', 'status': 'Initialized', 'servers': 2,
        'coros_submitted': 3, 'coros_done': 1, 'coros_running': 2, 'state': 'up'}
    assert node['avail_info'] == {'location': None, 'cpu': 25.0, 'memory': 7 << 30,
                                  'disk': 99 << 30, 'swap': 80.0}

    summary = get_json(app, '/api/cluster')
    assert (summary['coros_submitted'], summary['coros_done'], summary['coros_running'],
            summary['servers']) == (3, 1, 2, 2)
    assert summary['nodes'] == nodes
    assert (summary['poll_sec'], summary['show_coro_args']) == (5, True)

    code, _, text = post(app, '/node_info', {'host': NODE})
    info = json.loads(text)
    assert code == 200 and info['platform'] == 'linux-x86_64' and info['cpus'] == 2
    assert [(s['location'], s['coros_submitted'], s['coros_done'], s['coros_running'])
            for s in info['servers']] == [(str(S1), 2, 1, 1), (str(S2), 1, 0, 1)]
    assert info['history'] == []        # the original's /node_info has none
    again = get_json(app, '/api/node/' + NODE)
    # one sample a second at most: the later figures replaced the earlier ones
    assert [sample[1:] for sample in again['history']] == [[25.0, 7 << 30, 99 << 30, 80.0]]
    assert get_json(app, '/api/node/box')['addr'] == NODE      # by name too

    code, _, text = post(app, '/server_info', {'location': str(S1), 'limit': '0'})
    server = json.loads(text)
    assert (server['coros_submitted'], server['coros_done'], server['coros_running']) == (2, 1, 1)
    assert [(c['coro'], c['name'], c['start_time']) for c in server['coros']] == [
        (str(coros[1]), 'compute', 1001.0)]
    assert server['coros'][0]['args'] == "1, text, <Unprintable: str() failed: no text for you>"
    assert server['coros'][0]['kwargs'] == 'scale=2'
    assert 'recent' not in server       # the original's shape
    mine = get_json(app, '/api/server/%s' % S1)
    assert [(r['coro'], r['state']) for r in mine['recent']] == [(str(coros[0]), 'finished')]
    assert get_json(app, '/api/server/%s?limit=1' % S2)['coros'][0]['coro'] == str(coros[2])


def test_settings_change_from_update_and_api_and_bad_values_change_nothing(cluster):
    monitor, app, coros = cluster
    code, _, text = post(app, '/update', {'timeout': '3', 'show_coro_args': 'false'})
    assert code == 200 and json.loads(text) == {'poll_sec': 3, 'show_coro_args': False}
    coro = get_json(app, '/api/server/%s' % S2)['coros'][0]
    assert (coro['args'], coro['kwargs']) == ('', '')
    code, _, text = post(app, '/api/settings', data={'poll_sec': 2.5, 'show_coro_args': True})
    assert json.loads(text) == {'poll_sec': 2.5, 'show_coro_args': True}
    assert get_json(app, '/api/server/%s' % S2)['coros'][0]['args'].startswith('2, text')
    for form, reason in (({'timeout': 'soon'}, "poll interval 'soon' is not a number"),
                         ({'timeout': '0'}, 'poll interval must be between 1 and 3600'),
                         ({'timeout': '5', 'show_coro_args': 'maybe'},
                          "show_coro_args must be true or false, not 'maybe'")):
        code, headers, text = post(app, '/update', form)
        assert code == 400 and reason in json.loads(text)['error'], text
    code, _, text = post(app, '/api/settings', data={'poll_sec': [1, 2]})
    assert code == 400 and 'give poll_sec once' in text
    assert monitor.settings.view() == {'poll_sec': 2.5, 'show_coro_args': True}


def test_cluster_updates_keep_a_cursor_per_reader(cluster):
    monitor, app, coros = cluster
    code, headers, text = call(app, 'GET', '/cluster_updates')
    assert code == 200 and [n['addr'] for n in json.loads(text)] == [NODE]   # new reader: all
    cookie = headers['Set-Cookie'].split(';')[0]
    seq = int(headers['X-Monitor-Seq'])
    assert json.loads(call(app, 'GET', '/cluster_updates', cookie=cookie)[2]) == []
    assert get_json(app, '/cluster_updates?since=%d' % seq) == []
    monitor.update(DiscoroStatus(Scheduler.NodeInitialized,
                                 DiscoroNodeInfo('two', '127.0.0.6', 1, 'linux', None)))
    # both readers see the change: one by its cookie, one by its `since`
    assert [n['addr'] for n in json.loads(call(app, 'GET', '/cluster_updates',
                                                  cookie=cookie)[2])] == ['127.0.0.6']
    assert [n['addr'] for n in get_json(app, '/cluster_updates?since=%d' % seq)] == \
        ['127.0.0.6']
    assert call(app, 'GET', '/cluster_updates?since=soon')[0] == 400


def test_terminate_running_finished_and_unknown_coroutines(cluster):
    monitor, app, coros = cluster
    code, _, text = post(app, '/api/terminate', data={'coro': [str(coros[1])]})
    result = json.loads(text)
    assert code == 200 and result['terminated'] == [str(coros[1])]
    assert result['message'] == 'terminating 1 coroutine'
    assert coros[1].terminated == 1
    # it is still running until its MonitorException comes
    assert get_json(app, '/api/cluster')['coros_running'] == 2
    monitor.update(MonitorException(coros[1], (StopIteration, None)))
    assert get_json(app, '/api/cluster')['coros_running'] == 1
    code, _, text = post(app, '/api/terminate', data={'coro': [str(coros[1]), '~x/1@1.2.3.4:5']})
    result = json.loads(text)
    assert result['terminated'] == [] and result['unknown'] == ['~x/1@1.2.3.4:5']
    assert [(f['coro'], f['how']) for f in result['finished']] == [(str(coros[1]), 'terminated')]
    assert result['message'] == ('%s already terminated; ~x/1@1.2.3.4:5 is not a coroutine of '
                                 'this computation' % coros[1])
    assert get_json(app, '/api/server/%s' % S1)['recent'][0]['state'] == 'terminated'
    assert coros[1].terminated == 1
    # the original's endpoint: form fields `coro`, the list of terminated ones back
    code, _, text = post(app, '/terminate_coros', {'coro': [str(coros[2]), str(coros[0])]})
    assert code == 200 and json.loads(text) == [str(coros[2])]
    failing = FakeCoro('stuck', 99, S2, answer=-1)
    monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(failing, (), {}, 1.0)))
    result = json.loads(post(app, '/api/terminate', data=[str(failing)])[2])
    assert result['failed'] == [str(failing)]
    assert result['message'] == '%s could not be reached to terminate it' % failing


def test_bad_input_gets_404_and_400_pages_never_a_traceback(cluster, monkeypatch):
    monitor, app, coros = cluster
    cases = [
        ('GET', '/node/10.1.2.3', None, None, 404, 'no node 10.1.2.3 is known to this monitor'),
        ('GET', '/server/%s:1' % NODE, None, None, 404,
         'no server %s:1 is known to this monitor' % NODE),
        ('GET', '/server/garbage', None, None, 404, 'no server garbage is known'),
        ('GET', '/no/such/page', None, None, 404, 'there is no page at /no/such/page'),
        ('GET', '/static/../httpd.py', None, None, 404, 'there is no asset'),
        ('GET', '/static/nothing.css', None, None, 404, 'there is no asset nothing.css'),
        ('GET', '/terminate_coros', None, None, 405, 'Method not allowed'),
        ('GET', '/api/node/10.1.2.3', None, None, 404, 'no node 10.1.2.3'),
        ('GET', '/api/server/x:y', None, None, 404, 'no server x:y'),
        ('GET', '/api/server/%s?limit=many' % S1, None, None, 400,
         "limit must be a whole number, not 'many'"),
        ('POST', '/node_info', '', 'application/x-www-form-urlencoded', 400, 'host is missing'),
        ('POST', '/server_info', 'location=nowhere', 'application/x-www-form-urlencoded', 400,
         "location must be addr:port, not 'nowhere'"),
        ('POST', '/server_info', 'location=%s&limit=x' % S1, 'application/x-www-form-urlencoded',
         400, "limit must be a whole number, not 'x'"),
        ('POST', '/api/terminate', '{"coro": [', 'application/json', 400,
         'request body is not valid JSON'),
        ('POST', '/api/terminate', '"~a/1@b:2"', 'application/json', 400,
         'request body must be a JSON object, not str'),
        ('POST', '/api/terminate', '{"coro": []}', 'application/json', 400,
         'name the coroutines to terminate'),
        ('POST', '/api/terminate', '{"coro": [3]}', 'application/json', 400,
         'name the coroutines to terminate'),
        ('POST', '/terminate_coros', '', 'application/x-www-form-urlencoded', 400,
         'name the coroutines to terminate'),
        ('POST', '/api/settings', b'\xff\xfe', 'application/json', 400,
         'request body is not valid JSON'),
        ('POST', '/api/terminate', 'x' * (webapp.MAX_BODY + 1), 'application/json', 413,
         'is over the limit of'),
    ]
    for method, path, body, ctype, status, message in cases:
        code, headers, text = call(app, method, path, body, ctype,
                                   headers={webapp.TOKEN_HEADER: app.guard.token})
        assert (code, message in html_unescape(text)) == (status, True), (path, code, text)
        assert 'Traceback' not in text and 'File "' not in text
        if path.startswith(('/node/', '/server/', '/no/')):
            assert headers['Content-Type'].startswith('text/html')
            assert '<h1>' in text and 'Back to the cluster' in text
    # a bug of ours: a 500 page that says where to look, without the traceback
    monkeypatch.setattr(app.views, 'cluster', lambda: 1 / 0)
    code, headers, text = call(app, 'GET', '/api/cluster')
    assert code == 500 and 'Traceback' not in text and 'ZeroDivisionError' not in text
    assert json.loads(text)['error'] == 'the monitor failed to answer this request; its log ' \
        'says why'


def html_unescape(text):
    import html
    return html.unescape(text)


def test_pages_and_assets_are_served_and_fetch_nothing_from_elsewhere(cluster):
    monitor, app, coros = cluster
    for path, marker in (('/', 'data-page="cluster"'), ('/index.html', 'data-page="cluster"'),
                         ('/cluster.html', 'data-page="cluster"'),
                         ('/node/' + NODE, 'data-node="%s"' % NODE),
                         ('/node/box', 'data-node="%s"' % NODE),
                         ('/server/%s' % S1, 'data-server="%s"' % S1)):
        code, headers, text = call(app, 'GET', path)
        assert code == 200 and marker in text, path
        assert headers['Content-Type'].startswith('text/html')
    code, headers, _ = call(app, 'GET', '/node.html?host=' + NODE)
    assert code in (302, 303) and headers['Location'].endswith('/node/' + NODE)
    for asset, kind in (('monitor.css', 'text/css'), ('monitor.js', 'javascript'),
                        ('favicon.svg', 'image/svg')):
        code, headers, text = call(app, 'GET', '/static/' + asset)
        assert code == 200 and kind in headers['Content-Type']
    # offline: every page and asset refers only to this server
    for name in sorted(os.listdir(webapp.DATA_DIR)):
        if name.endswith(('.html', '.css', '.js')):
            with open(os.path.join(webapp.DATA_DIR, name), encoding='utf-8') as f:
                text = f.read()
            assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text), name
            assert not re.search(r'url\(\s*["\']?(https?:)?//', text), name
            assert not re.search(r'fetch\(\s*["\'](https?:)?//', text), name


def test_ends_before_creation_and_a_job_told_twice(cluster):
    monitor, app, coros = cluster
    quick = FakeCoro('quick', 31, S2)
    monitor.update(MonitorException(quick, (ValueError, ValueError('bad n'))))  # before creation
    monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(quick, (), {}, 5.0)))
    server = get_json(app, '/api/server/%s' % S2)
    assert (server['coros_submitted'], server['coros_done'], server['coros_running']) == (2, 1, 1)
    assert (server['recent'][0]['state'], server['recent'][0]['error']) == \
        ('failed', 'ValueError: bad n')
    # told again (a snapshot and the news after it): still one job, still ended
    monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(quick, (), {}, 5.0)))
    monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(coros[1], (), {}, 5.0)))
    server = get_json(app, '/api/server/%s' % S2)
    assert (server['coros_submitted'], server['coros_running']) == (2, 1)
    assert get_json(app, '/api/server/%s' % S1)['coros_submitted'] == 2


def test_snapshot_from_the_scheduler_orders_messages_that_overtake_it():
    monitor = monitor_module.Monitor()
    monitor.mode = 'scheduler'
    monitor.held = []
    running = FakeCoro('compute', 1, S1)
    late = FakeCoro('compute', 2, S1)
    # these came after the snapshot was taken but before its answer was applied
    monitor.update(MonitorException(running, (StopIteration, 1)))
    monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(late, (), {}, 3.0)))
    app = webapp.make_app(monitor, webapp.DATA_DIR)
    assert get_json(app, '/api/cluster')['nodes'] == []
    answer = {'computation': 77, 'client': Location('127.0.0.9', 4000),
              'queue': [(77, Location('127.0.0.9', 4000)), (78, Location('127.0.0.8', 4001))],
              'nodes': [DiscoroNodeInfo('box', NODE, 2, 'linux', None)], 'servers': [S1, S2],
              'jobs': [(DiscoroCoroInfo(running, (1,), {}, 2.0), 'compute')]}
    monitor.update(monitor_module.Snapshot(answer, True))
    summary = get_json(app, '/api/cluster')
    assert summary['computation']['id'] == '77'        # a str: JavaScript numbers are 53-bit
    assert summary['queue'] == [{'id': '78', 'client': '127.0.0.8:4001'}]
    assert (summary['coros_submitted'], summary['coros_done'], summary['coros_running'],
            summary['servers']) == (2, 1, 1, 2)
    # the next computation starts: a clean slate
    monitor.update(DiscoroStatus(Scheduler.ComputationClosed, 77))
    assert get_json(app, '/api/cluster')['computation']['status'] == 'closed'
    monitor.update(DiscoroStatus(Scheduler.ComputationScheduled,
                                 (78, Location('127.0.0.8', 4001))))
    summary = get_json(app, '/api/cluster')
    assert summary['computation']['id'] == '78' and summary['nodes'] == []
    assert summary['queue'] == []


# ---------------------------------------------------------------- HTTP over a socket

def http(url, method='GET', body=None, content_type=None, context=None, timeout=10,
         headers=None):
    """(status, headers, body text) of one HTTP/1.0 request made with gevent's
    socket (so the test's watchdog can fire while it waits); `headers`
    {name: value} are sent too."""
    parts = urllib.parse.urlsplit(url)
    sock = gevent.socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        if parts.scheme == 'https':
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        data = body.encode() if isinstance(body, str) else (body or b'')
        head = ['%s %s HTTP/1.0' % (method, parts.path + ('?' + parts.query if parts.query
                                                           else '')),
                'Host: %s' % parts.netloc, 'Content-Length: %d' % len(data)]
        if content_type:
            head.append('Content-Type: ' + content_type)
        head += ['%s: %s' % item for item in (headers or {}).items()]
        sock.sendall(('\r\n'.join(head) + '\r\n\r\n').encode() + data)
        reply = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    head, _, payload = reply.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    headers = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
    return int(lines[0].split()[1]), headers, payload.decode()


TOKEN = re.compile(r'<meta name="asyncoro-token" content="([^"]+)">')


def page_post(base, path, data):
    """POST `data` (JSON) to the monitor at `base` as its pages do: with the
    token a page it served carries. (status, headers, body text)."""
    token = TOKEN.search(http(base + '/')[2]).group(1)
    return http(base + path, 'POST', json.dumps(data), 'application/json',
                headers={webapp.TOKEN_HEADER: token})


HEAD = r'''
import sys, json, time
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
import asyncoro.httpd
ports = json.loads(sys.argv[1])
Scheduler(udp_port=ports['scheduler'], discoronode_port=ports['node'])
'''

CLIENT = HEAD + r'''
def compute(n, note='', coro=None):
    if n < 0:
        raise ValueError('cannot sleep %s s' % n)
    yield coro.sleep(n)
    return n

def status(coro=None):
    # the program's own status coroutine: HTTPServer passes every message on
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, asyncoro.MonitorException):
            kind, value = msg.args[1]
            print('ended', msg.args[0], getattr(kind, '__name__', kind), value, flush=True)

def main(computation, coro=None):
    assert (yield computation.schedule()) == 0
    for n in json.loads(sys.argv[2]):
        rcoro = yield computation.run_async(compute, n, note='sleep %s s' % n)
        print('job', rcoro, n, flush=True)
    print('started', flush=True)
    yield coro.receive()
    yield computation.close()

computation = Computation([compute], pulse_interval=asyncoro.discoro.MinPulseInterval,
                          status_coro=asyncoro.Coro(status))
httpd = asyncoro.httpd.HTTPServer(computation, host='127.0.0.1', port=0, poll_sec=1)
client = asyncoro.Coro(main, computation)
sys.stdin.readline()
client.send('quit')
client.value()
started = time.monotonic()
httpd.shutdown()
print('bye after %.1f s' % (time.monotonic() - started), flush=True)
'''

URL = re.compile(r'Started HTTP server at (https?://\S+)/$')


def start_client(processes, discoronode, durations, cpus=2):
    """A client with a monitor on a free port, running jobs that sleep
    `durations`: (process, base url, {duration: [coro, ...]}). Returns once
    every job started and the short ones (< 1 s) have ended."""
    node, ports = discoronode(cpus=cpus)
    proc = processes(CLIENT, json.dumps(ports), json.dumps(durations), ready=False)
    proc.node = node
    base, jobs, ended = None, {}, []
    while True:
        line = read_line(proc, 30, 'the client starting its jobs')
        match = URL.search(line)
        if match:
            base = match.group(1)
        elif line.startswith('job '):
            assert len(line.split()) == 3, line
            _, coro, n = line.split()
            jobs.setdefault(float(n), []).append(coro)
        elif line.startswith('ended '):
            ended.append(line.split()[1])
        elif line == 'started':
            break
    short = [c for n, coros in jobs.items() if n < 1 for c in coros]
    while not set(short) <= set(ended):
        line = read_line(proc, 30, 'the short jobs ending')
        if line.startswith('ended '):
            ended.append(line.split()[1])
    return proc, base, jobs


def wait_for_line(proc, prefix, timeout=30):
    while True:
        line = read_line(proc, timeout, 'a line starting with %r' % prefix)
        if line.startswith(prefix):
            return line


@pytest.mark.deadline(90)
def test_monitor_of_a_real_client_json_terminate_chain_and_shutdown(processes, discoronode):
    proc, base, jobs = start_client(processes, discoronode, [0.1, 0.2, 60, 60])
    assert base.startswith('http://127.0.0.1:')

    def node():
        code, _, text = http(base + '/cluster_status')
        assert code == 200
        nodes = json.loads(text)
        return nodes[0] if nodes else None
    wait_until(lambda: ((node() or {}).get('coros_done'), node()['servers']) == (2, 2), 20,
               'the monitor seeing 2 jobs done on a node with 2 servers')
    assert isinstance(json.loads(http(base + '/api/cluster')[2])['computation']['id'], str)
    summary = node()
    assert (summary['addr'], summary['servers'], summary['coros_submitted'],
            summary['coros_running']) == ('127.0.0.1', 2, 4, 2)
    long_jobs = jobs[60.0]
    code, _, text = http(base + '/server_info', 'POST',
                         'location=' + long_jobs[0].split('@')[1],
                         'application/x-www-form-urlencoded')
    assert code == 200
    shown = {c['coro']: c for c in json.loads(text)['coros']}
    assert shown[long_jobs[0]]['args'] == '60' and shown[long_jobs[0]]['kwargs'] == \
        'note=sleep 60 s'

    # terminate one from the monitor: its end reaches the program's own status coroutine
    code, _, text = http(base + '/terminate_coros', 'POST',
                         urllib.parse.urlencode({'coro': long_jobs[0]}),
                         'application/x-www-form-urlencoded')
    assert (code, json.loads(text)) == (200, [long_jobs[0]])
    assert wait_for_line(proc, 'ended ' + long_jobs[0]) == \
        'ended %s StopIteration None' % long_jobs[0]
    wait_until(lambda: node()['coros_running'] == 1, 10, 'the monitor seeing the end')
    code, _, text = page_post(base, '/api/terminate', {'coro': long_jobs[0]})
    assert json.loads(text)['message'] == '%s already terminated' % long_jobs[0]
    code, _, text = page_post(base, '/api/terminate', {'coro': jobs[0.1][0]})
    assert json.loads(text)['message'] == '%s already finished' % jobs[0.1][0]

    # quit: close terminates the last job; shutdown() waits poll_sec + 0.5 s, then stops
    proc.stdin.write(b'quit\n')
    proc.stdin.flush()
    wait_for_line(proc, 'ended ' + long_jobs[1])
    line = ''
    while 'HTTP server waiting' not in line:
        line = read_line(proc, 30, 'the shutdown log line')
    assert line.endswith('HTTP server waiting for 1 seconds for client updates before quitting')
    bye = read_line(proc, 30, 'the end')
    assert bye.startswith('bye after ') and float(bye.split()[2]) >= 1.5   # poll_sec + 0.5
    assert proc.wait(30) == 0
    with pytest.raises(OSError):
        http(base + '/cluster_status')


PLAIN = r'''
import sys, json, time
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
import asyncoro.httpd
args = json.loads(sys.argv[1])
asyncoro.AsynCoro(udp_port=args['udp'])

def compute(coro=None):
    yield 0

computation = Computation([compute])
httpd = asyncoro.httpd.HTTPServer(computation, host='127.0.0.1', port=0, poll_sec=0.2,
                                  certfile=args.get('certfile'), keyfile=args.get('keyfile'))
try:
    asyncoro.httpd.HTTPServer(computation, host='127.0.0.1', port=httpd.address[1])
except OSError as exc:
    print('second:', exc, flush=True)
print('ready', httpd.url, flush=True)
sys.stdin.readline()

def stop(coro=None):
    started = time.monotonic()
    httpd.shutdown()          # from a coroutine: scheduled, returns at once
    print('returned after %.1f s' % (time.monotonic() - started), flush=True)
    yield coro.sleep(0)

asyncoro.Coro(stop).value()
sys.stdin.readline()
'''


@pytest.mark.deadline(60)
def test_https_poll_sec_floor_busy_port_and_shutdown_from_a_coroutine(processes, certs):
    certfile, keyfile = certs['good']
    proc, url = processes(PLAIN, json.dumps({'udp': free_udp_port(), 'certfile': certfile,
                                             'keyfile': keyfile}))
    assert url.startswith('https://127.0.0.1:')
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certfile)
    context.check_hostname = False          # the test certificate names 127.0.0.1 only in its CN
    code, headers, text = http(url + 'api/cluster', context=context)
    assert code == 200 and json.loads(text)['poll_sec'] == 1       # 0.2 was raised to 1
    # a client that does not speak TLS is dropped with a warning; the server goes on
    code_or_error = None
    try:
        code_or_error = http(url.replace('https', 'http') + 'api/cluster', timeout=5)[0]
    except OSError as exc:
        code_or_error = exc
    assert code_or_error != 200
    code, _, text = http(url + 'cluster_status', context=context)
    assert code == 200 and json.loads(text) == []
    proc.stdin.write(b'\n')
    proc.stdin.flush()
    line = read_line(proc, 10, 'the shutdown')
    while not line.startswith('returned'):
        line = read_line(proc, 10, 'the shutdown')
    assert float(line.split()[2]) < 1       # at once, where the shutdown itself takes 1.5 s
    wait_until(lambda: _refused(url, context), 10, 'the server stopping 1.5 s later')
    proc.stdin.close()
    assert proc.wait(30) == 0
    err = proc.stderr.read().decode()
    assert 'Traceback' not in err, err


def _refused(url, context):
    try:
        http(url + 'cluster_status', context=context, timeout=2)
    except OSError:
        return True
    return False


def test_busy_port_and_poll_sec_warning_are_logged(processes):
    proc = processes(PLAIN, json.dumps({'udp': free_udp_port()}), ready=False)
    lines = []
    while True:
        line = read_line(proc, 30, 'the ready line')
        lines.append(line)
        if line.startswith('ready'):
            break
    text = '\n'.join(lines)
    assert 'poll_sec 0.2 is too small; 1 is used' in text
    assert re.search(r'second: \[Errno 98\] HTTP server cannot listen on 127\.0\.0\.1:\d+: '
                     r'Address already in use', text), text
    assert re.search(r'Started HTTP server at http://127\.0\.0\.1:\d+/', text)
    proc.stdin.close()


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
BROWSER_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update',
                '--disable-sync', '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1']


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('playwright is not installed (pip install playwright); the browser test '
                    'needs it to drive Chromium')
    if CHROMIUM is None:
        pytest.skip('no chromium executable on PATH (apt-get install chromium); the browser '
                    'test drives the system Chromium and never downloads one')
    return sync_playwright


def _shot(page, tmp_path, name):
    """A screenshot of what the viewport shows; the README's (monitor-*)
    are copied to $ASYNCORO_MONITOR_SHOTS when set (docs/images)."""
    path = tmp_path / ('%s.png' % name)
    page.screenshot(path=str(path))
    copies = os.environ.get('ASYNCORO_MONITOR_SHOTS')
    if copies and name.startswith('monitor-'):
        os.makedirs(copies, exist_ok=True)
        shutil.copy(str(path), os.path.join(copies, path.name))
    return path


def _page_until(page, read, ok, timeout):
    """read() until ok(its value), waiting in the page (so playwright keeps
    serving the browser); the value, or AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError('the page still shows %r after %ss' % (value, timeout))
        page.wait_for_timeout(100)


def _fits(page, selectors):
    """At a phone's width: the page does not scroll sideways, and the first
    element of each selector is inside the viewport's width."""
    width = page.evaluate('window.innerWidth')
    assert page.evaluate('document.documentElement.scrollWidth') <= width, page.url
    for selector in selectors:
        box = page.locator(selector).first.bounding_box()
        assert box is not None, (page.url, selector)
        assert box['x'] >= 0 and box['x'] + box['width'] <= width + 0.5, (page.url, selector, box)


@pytest.mark.deadline(180)
@pytest.mark.expected_tracebacks(r'ValueError: cannot sleep -1 s')
def test_monitor_pages_in_headless_chromium(processes, discoronode, tmp_path):
    sync_playwright = _browser_or_skip()
    proc, base, jobs = start_client(processes, discoronode, [0.1, 0.2, -1, 60, 60, 60, 60])
    failed, = jobs[-1.0]
    long_jobs = jobs[60.0]
    # the server with the most long jobs: one of them is terminated from the page, one
    # ends (by a script) while it is selected, the others run on
    places = [coro.split('@')[1] for coro in long_jobs]
    target = max(places, key=places.count)
    victim, ending = [coro for coro in long_jobs if coro.endswith('@' + target)][:2]
    server_url = base + '/server/' + urllib.parse.quote(target, safe='')
    requests = []       # every (method, URL) the pages ask for: all must be the monitor's

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        desk = browser.new_context(viewport={'width': 1400, 'height': 900})
        errors = []
        desk.on('request', lambda request: requests.append((request.method, request.url)))
        page = desk.new_page()
        page.set_default_timeout(20000)
        page.on('pageerror', lambda exc: errors.append(str(exc)))
        console = []        # a refused Content-Security-Policy shows here, for one
        page.on('console', lambda msg: console.append(msg.text) if msg.type == 'error' else None)

        # Cluster: the node with its counts, the failure with its exception, throughput
        page.goto(base + '/')
        row = page.locator('#nodes-table tbody tr[data-node="127.0.0.1"]')
        row.wait_for()
        # state, servers, running, finished, failed, lost (the second server may be starting)
        cells = _page_until(page, lambda: row.locator('td').all_inner_texts(),
                            lambda cells: cells[1:7] == ['Up', '2', '4', '2', '1', '0'], 20)
        assert cells[0].startswith('127.0.0.1')
        cards = dict(zip(page.locator('#cards .card .label').all_inner_texts(),
                         page.locator('#cards .card .value').all_inner_texts()))
        assert (cards['RUNNING'], cards['FINISHED'], cards['FAILED'], cards['LOST'],
                cards['SUBMITTED']) == ('4', '2', '1', '0', '7')
        failure = page.locator('#failures li[data-coro="%s"]' % failed)
        assert failure.locator('.error-text').inner_text() == 'ValueError: cannot sleep -1 s'
        assert page.locator('#throughput svg rect.bar').count() >= 1
        # one node, one page: no search, no pager, as before there were pages
        assert page.locator('#node-search').is_hidden() and \
            page.locator('#nodes-pager').is_hidden()
        _shot(page, tmp_path, 'monitor-cluster')

        # Jobs: the failures view, then a search by a piece of an argument
        page.locator('#failures-link').click()
        page.wait_for_url(base + '/jobs?state=failed,lost')
        failed_row = page.locator('#jobs-table tbody tr[data-coro="%s"]' % failed)
        failed_row.wait_for()
        assert page.locator('#jobs-table tbody tr').count() == 1
        assert failed_row.locator('.error-text').inner_text() == 'ValueError: cannot sleep -1 s'
        assert failed_row.locator('td.args .oneline').inner_text() == '-1, note=sleep -1 s'
        page.locator('#states .chip[data-state="all"]').click()
        page.locator('#search').fill('sleep 0.2')
        _page_until(page, lambda: page.locator('#jobs-table tbody tr').evaluate_all(
            'rows => rows.map(r => r.dataset.coro)'), lambda found: found == jobs[0.2], 10)
        assert page.locator('#jobs-table tbody tr td.outcome').inner_text() == 'Finished'
        page.locator('#search').fill('sleep 60')
        _page_until(page, lambda: page.locator('#jobs-table tbody tr').count(),
                    lambda n: n == 4, 10)
        _shot(page, tmp_path, 'monitor-jobs')

        # Node: its two servers with their processes' figures; load charts with time axes
        page.goto(base + '/node/127.0.0.1')
        servers = page.locator('#servers-table tbody tr')
        servers.nth(1).wait_for()
        assert servers.count() == 2
        assert page.locator('#charts .chart .label').all_inner_texts() == [
            'CPU IDLE', 'MEMORY FREE', 'DISK FREE', 'SWAP FREE']
        # the node's next pulse (every 10 s) carries its server processes' CPU and memory
        rss = _page_until(page, lambda: servers.locator('td:nth-child(7)').all_inner_texts(),
                          lambda texts: all(t.endswith('MiB') for t in texts), 30)
        assert len(rss) == 2
        chart = page.locator('#charts .chart').first
        chart.locator('svg .axis').first.wait_for()
        chart.locator('svg').hover()
        tip = chart.locator('.tip')
        tip.wait_for()
        assert re.fullmatch(r'\d\d:\d\d:\d\d\n[\d.]+%', tip.inner_text()), tip.inner_text()
        _shot(page, tmp_path, 'monitor-node')

        # Server: terminate one job from the page
        page.goto(server_url)
        coro_row = page.locator('#coros-table tbody tr[data-coro="%s"]' % victim)
        coro_row.wait_for()
        assert coro_row.locator('td.args').inner_text() == '60, note=sleep 60 s'
        coro_row.locator('input[type=checkbox]').check()
        assert page.locator('#terminate').inner_text() == 'Terminate 1 selected'
        page.locator('#terminate').click()
        page.locator('#result:not([hidden])').wait_for()
        assert page.locator('#result').inner_text() == 'Terminating 1 coroutine.'
        assert wait_for_line(proc, 'ended ' + victim) == \
            'ended %s StopIteration None' % victim
        ended_row = page.locator('#recent-table tbody tr[data-coro="%s"]' % victim)
        ended_row.wait_for()
        assert ended_row.locator('td.outcome').inner_text() == 'Terminated'
        assert coro_row.count() == 0
        _shot(page, tmp_path, 'monitor-server')

        # the arguments switch, from the page, for every reader
        with page.expect_response(base + '/api/settings') as answer:
            page.locator('#show-args').uncheck()
        assert answer.value.json() == {'poll_sec': 1, 'show_coro_args': False}
        _page_until(page, lambda: page.locator('#coros-table tbody td.args').all_inner_texts(),
                    lambda texts: texts and set(texts) == {'hidden'}, 10)
        with page.expect_response(base + '/api/settings') as answer:
            page.locator('#show-args').check()
        assert answer.value.json() == {'poll_sec': 1, 'show_coro_args': True}

        # a selected job that ends before Terminate is clicked is dropped, not sent
        assert json.loads(page_post(base, '/api/settings', {'poll_sec': 3600})[2])[
            'poll_sec'] == 3600         # no poll of the page's own in between
        page.goto(server_url)
        ending_row = page.locator('#coros-table tbody tr[data-coro="%s"]' % ending)
        ending_row.locator('input[type=checkbox]').check()
        code, _, text = http(base + '/terminate_coros', 'POST',
                             urllib.parse.urlencode({'coro': ending}),
                             'application/x-www-form-urlencoded')     # a script ends it
        assert (code, json.loads(text)) == (200, [ending])
        assert wait_for_line(proc, 'ended ' + ending).startswith('ended %s ' % ending)
        _page_until(page, lambda: json.loads(http(base + '/api/server/' + target)[2])['coros'],
                    lambda coros: ending not in [c['coro'] for c in coros], 10)
        asked = len(requests)
        page.locator('#terminate').click()
        page.locator('#result:not([hidden])').wait_for()
        assert page.locator('#result').inner_text() == (
            '1 of the selected jobs has ended meanwhile and was unselected: %s; nothing was '
            'terminated.' % ending)
        assert ('POST', base + '/api/terminate') not in requests[asked:]
        assert ending_row.count() == 0 and page.locator('#terminate').is_disabled()

        # the refresh interval from the page; a bad one keeps its error until corrected
        box = page.locator('#poll-sec')
        box.fill('1')
        with page.expect_response(base + '/api/settings') as answer:
            box.dispatch_event('change')
        assert answer.value.json() == {'poll_sec': 1, 'show_coro_args': True}
        box.fill('0')
        box.dispatch_event('change')
        note = page.locator('#poll-error')
        assert note.inner_text().startswith('The refresh interval must be between 1 and 3600 '
                                            'seconds, not \u201c0\u201d')
        with page.expect_response(lambda r: r.url.startswith(base + '/api/server/')):
            pass                # the next poll comes and goes
        assert note.is_visible() and box.input_value() == '0'
        box.press('Escape')
        assert note.is_hidden() and box.input_value() == '1'

        # a phone, in another browser context (a reader of its own): every page fits
        phone = browser.new_context(viewport={'width': 390, 'height': 844}, is_mobile=True,
                                    has_touch=True, device_scale_factor=2)
        phone.on('request', lambda request: requests.append((request.method, request.url)))
        small = phone.new_page()
        small.set_default_timeout(20000)
        small.on('pageerror', lambda exc: errors.append(str(exc)))
        small.goto(base + '/')
        small_row = small.locator('#nodes-table tbody tr[data-node="127.0.0.1"]')
        small_row.wait_for()
        assert small_row.locator('td').all_inner_texts()[1:4] == ['Up', '2', '2']
        _fits(small, ['#cards .card[data-card="running"]', '#cards .card[data-card="failed"]',
                      '#nodes-table tbody tr td:nth-child(2) .pill',
                      '#nodes-table tbody tr td:nth-child(4)',
                      '#nodes-table tbody tr td:nth-child(6)', '#failures .error-text',
                      '#throughput svg', '#poll-sec', '#tab-jobs'])
        _shot(small, tmp_path, 'phone-cluster')
        small.goto(base + '/jobs?state=failed')
        small.locator('#jobs-table tbody tr[data-coro="%s"]' % failed).wait_for()
        _fits(small, ['#search', '#jobs-table tbody tr td.lead', '#jobs-table .error-text',
                      '#jobs-table td.args'])
        small.goto(base + '/node/127.0.0.1')
        small.locator('#servers-table tbody tr').nth(1).wait_for()
        _fits(small, ['#servers-table tbody tr td.lead', '#servers-table td:nth-child(7)',
                      '#charts .chart svg'])
        _shot(small, tmp_path, 'phone-node')
        running = [c for c in long_jobs if c not in (victim, ending)]
        small.goto(base + '/server/' + urllib.parse.quote(running[0].split('@')[1], safe=''))
        first_row = small.locator('#coros-table tbody tr').first
        first_row.wait_for()
        _fits(small, ['#coros-table tbody tr td.lead', '#coros-table tbody tr td.check input',
                      '#coros-table tbody tr td:nth-child(3)', '#coros-table td.args',
                      '#coros-table tbody tr td:nth-child(5)', '#terminate'])
        box = first_row.locator('td.check input').bounding_box()
        assert box['width'] >= 24 and box['height'] >= 24      # a finger can hit it
        assert small.evaluate('document.querySelector(".topbar").offsetHeight') < 150
        _shot(small, tmp_path, 'monitor-phone-server')
        phone.close()

        assert console == []
        # the client ends: the page keeps the final state, says so, and backs off
        page.goto(base + '/')
        row.wait_for()
        proc.stdin.write(b'quit\n')
        proc.stdin.flush()
        _page_until(page, lambda: row.locator('td').nth(1).inner_text(),
                    lambda state: state == 'Closed', 30)
        assert 'Closed' in page.locator('#computation').inner_text()
        page.locator('#live[data-retry="30"]').wait_for(timeout=30000)
        banner = page.locator('#gone')
        assert banner.inner_text().startswith('The monitor does not answer since ')
        assert 'this is its final state. Checking again every 30 s.' in banner.inner_text()
        assert row.locator('td').nth(1).inner_text() == 'Closed'    # still on screen
        cards = dict(zip(page.locator('#cards .card .label').all_inner_texts(),
                         page.locator('#cards .card .value').all_inner_texts()))
        # the two left running end (as finished: a terminate looks so) when it closes
        assert (cards['FINISHED'], cards['FAILED'], cards['TERMINATED']) == ('4', '1', '2')
        asked = len(requests)
        page.wait_for_timeout(2500)     # a window of 2.5 poll intervals: no try in it
        assert requests[asked:] == []
        _shot(page, tmp_path, 'monitor-final')
        browser.close()
    assert errors == []
    assert requests and all(url.startswith(base) for _, url in requests), requests
    assert wait_for_line(proc, 'bye', 60).startswith('bye after ')
    assert proc.wait(30) == 0


# a monitor fed, through its status coroutine, what a scheduler sends of a big cluster
FLEET = '''
import sys
sys.path.insert(0, %r)
import monitor_fleet
sys.exit(monitor_fleet.main(sys.argv[1:]))
''' % HERE


@pytest.mark.deadline(180)
def test_cluster_page_of_1024_nodes_in_headless_chromium(processes, tmp_path):
    """1,024 nodes of 8 servers, a job on each server: the page loads one page of
    nodes, finds a node by address and by name (the server filters), pages,
    sorts on the server, and polls only the page it shows. Its load time is
    printed (bench/monitor.py has the figures); the bound here is generous."""
    sync_playwright = _browser_or_skip()
    proc, base = processes(FLEET, '--nodes', 1024, '--servers', 8, '--poll_sec', 1)
    base = base.rstrip('/')
    polls = []          # (query, bytes) of every /api/cluster the page asked for

    def answered(response):
        parts = urllib.parse.urlsplit(response.url)
        if parts.path == '/api/cluster':
            polls.append((urllib.parse.parse_qs(parts.query),
                          int(response.headers.get('content-length', -1))))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        desk = browser.new_context(viewport={'width': 1400, 'height': 900})
        page = desk.new_page()
        page.set_default_timeout(20000)
        errors = []
        page.on('pageerror', lambda exc: errors.append(str(exc)))
        page.on('console', lambda msg: errors.append(msg.text) if msg.type == 'error' else None)
        page.on('response', answered)
        rows = page.locator('#nodes-table tbody tr')

        def shown():
            return rows.evaluate_all('rows => rows.map(r => r.dataset.node)')

        started = time.monotonic()
        page.goto(base + '/')
        page.wait_for_function('document.querySelectorAll("#nodes-table tbody tr").length '
                               '=== 100', polling='raf')
        loaded = time.monotonic() - started
        in_page = page.evaluate('performance.now()') / 1000
        print('\nCluster page of 1,024 nodes x 8 servers: 100 rows after %.2f s (%.2f s by '
              'the page\'s clock); its poll answers %d bytes' % (loaded, in_page, polls[0][1]))
        assert loaded < 10, 'the page took %.1f s to show its nodes' % loaded
        assert shown()[:3] == ['127.1.0.1', '127.1.0.2', '127.1.0.3']
        cards = dict(zip(page.locator('#cards .card .label').all_inner_texts(),
                         page.locator('#cards .card .value').all_inner_texts()))
        assert (cards['NODES'], cards['SERVERS']) == ('1,024', '8,192')
        assert page.locator('#nodes-range').inner_text() == 'Nodes 1\u2013100 of 1,024'

        # a node found by a piece of its address, then of its name (in another case)
        search = page.locator('#node-search')
        search.fill('127.1.3.28')
        _page_until(page, shown, lambda nodes: nodes == ['127.1.3.28'], 10)
        assert page.locator('#nodes-range').inner_text() == \
            'Nodes 1\u20131 of 1 matching \u201c127.1.3.28\u201d (of 1,024)'
        search.fill('NODE0777')
        _page_until(page, lambda: polls[-1][0].get('q'), lambda q: q == ['NODE0777'], 10)
        _page_until(page, shown, lambda nodes: nodes == ['127.1.3.28'], 10)
        assert rows.locator('.name').inner_text() == 'rack24-node0777'
        search.fill('nowhere')
        _page_until(page, lambda: page.locator('#nodes-range').inner_text(),
                    lambda text: text == 'No node of 1,024 matches \u201cnowhere\u201d', 10)
        assert rows.count() == 0 and page.locator('#nodes-empty').inner_text() == \
            'No node\u2019s name or address contains \u201cnowhere\u201d.'
        search.fill('rack1')        # racks 10 to 19: more than a page
        _page_until(page, lambda: page.locator('#nodes-range').inner_text(),
                    lambda text: text == 'Nodes 1\u2013100 of 320 matching \u201crack1\u201d '
                                         '(of 1,024)', 10)
        search.fill('')
        _page_until(page, shown, lambda nodes: len(nodes) == 100 and nodes[0] == '127.1.0.1',
                    10)

        # the next page, and only it is polled from then on
        page.locator('#nodes-next').click()
        _page_until(page, shown, lambda nodes: nodes[:1] == ['127.1.0.101'], 10)
        assert page.locator('#nodes-range').inner_text() == 'Nodes 101\u2013200 of 1,024'
        assert page.url == base + '/?page=2'
        _shot(page, tmp_path, 'cluster-1024')
        asked = len(polls)
        _page_until(page, lambda: len(polls), lambda n: n >= asked + 2, 10)   # two polls
        assert [(query['offset'], query['limit']) for query, _ in polls[asked:]] == \
            [(['100'], ['100'])] * (len(polls) - asked)
        # sorted by the server: the most running jobs first, from the first page
        page.locator('#nodes-table th[data-key="coros_running"]').click()
        _page_until(page, lambda: polls[-1][0].get('sort'), lambda sort: sort == ['coros_running'],
                    10)
        assert (polls[-1][0]['order'], polls[-1][0]['offset']) == (['desc'], ['0'])
        assert all('limit' in query and size < 200000 for query, size in polls), polls

        # a phone: the search and the pager fit its width
        phone = browser.new_context(viewport={'width': 390, 'height': 844}, is_mobile=True,
                                    has_touch=True, device_scale_factor=2)
        small = phone.new_page()
        small.set_default_timeout(20000)
        small.on('pageerror', lambda exc: errors.append(str(exc)))
        small.goto(base + '/?q=rack01&page=1')
        small.locator('#nodes-table tbody tr').nth(31).wait_for()
        _fits(small, ['#node-search', '#nodes-pager', '#nodes-next', '#nodes-limit'])
        _shot(small, tmp_path, 'phone-cluster-1024')
        phone.close()
        browser.close()
    assert errors == []
    proc.stdin.write(b'quit\n')
    proc.stdin.flush()
    assert proc.wait(30) == 0


def test_the_web_server_sends_answers_without_waiting_for_acks(monkeypatch):
    """TCP_NODELAY on every connection: pywsgi writes headers and body apart,
    and a kept-alive client would otherwise wait up to 40 ms for each body."""
    seen = []
    monkeypatch.setattr(gevent.pywsgi.WSGIServer, 'handle', lambda server, sock, address:
                        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    server = httpd._WSGIServer(('127.0.0.1', 0), None, log=None)
    server.start()
    try:
        client = gevent.socket.create_connection(('127.0.0.1', server.server_port), timeout=10)
        wait_until(lambda: seen, 10, 'the server taking a connection')
        client.close()
    finally:
        server.stop()
    assert seen[0] != 0


def test_setup_declares_the_browser_dependency():
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        text = f.read()
    assert re.search(r"'playwright[<>=]", text)
    assert 'scripts/httpd.py' in text


def test_httpd_all_is_api_md_7():
    assert httpd.__all__ == ['HTTPServer']
    assert monitor_module.__all__ == []


@pytest.mark.deadline(90)
def test_a_server_and_then_its_node_killed_are_lost_with_their_jobs(processes, discoronode):
    """The real scheduler's messages: a server process killed with -9 is lost
    (its node stays up) and so is its job; then the node killed with -9 is
    lost with its servers and the jobs left."""
    proc, base, jobs = start_client(processes, discoronode, [60, 60])
    node = psutil.Process(proc.node.pid)
    long_jobs = jobs[60.0]
    victim_server = long_jobs[0].split('@')[1]
    on_victim = sorted(coro for coro in long_jobs if coro.endswith('@' + victim_server))
    port = int(victim_server.rsplit(':', 1)[1])
    server = next(child for child in node.children(recursive=True)
                  if any(conn.status == psutil.CONN_LISTEN and conn.laddr[1] == port
                         for conn in getattr(child, 'net_connections', child.connections)(
                             kind='tcp')))
    server.kill()

    def get(path):
        return json.loads(http(base + path)[2])
    wait_until(lambda: get('/api/server/' + victim_server)['state'] == 'lost', 20,
               'the monitor seeing the killed server lost')
    info = get('/api/server/' + victim_server)
    # the node saw the process die, or the scheduler its connection drop: either says so
    assert 'died' in info['cause'] and info['status'] == 'Disconnected'
    lost = get('/api/jobs?state=lost')['jobs']
    assert sorted((j['coro'], j['error']) for j in lost) == [(c, info['cause'])
                                                             for c in on_victim]
    assert get('/api/node/127.0.0.1')['state'] == 'up'
    left = node.children(recursive=True)     # the node's zygote and processes outlive it
    try:
        proc.node.kill()
        # (its servers' ends and its own come in no fixed order)
        wait_until(lambda: get('/api/node/127.0.0.1')['state'] == 'lost' and
                   get('/api/cluster')['jobs']['running'] == 0, 30,
                   'the monitor seeing the killed node lost, and no job running')
        summary = get('/api/node/127.0.0.1')
        assert summary['status'] == 'Disconnected' and summary['cause']
        ended = {j['coro']: j['state'] for j in get('/api/jobs')['jobs']}
        assert sorted(ended) == sorted(long_jobs)
        assert [ended[coro] for coro in on_victim] == ['lost'] * len(on_victim)
        # a server that sees its node gone terminates its jobs before it quits, and a
        # terminated job ends like a finished one: if it came first, the job shows so
        assert set(ended.values()) <= {'lost', 'finished'}
        assert [s['state'] for s in summary['servers']] == ['lost', 'lost']
        proc.stdin.write(b'quit\n')
        proc.stdin.flush()
        assert wait_for_line(proc, 'bye', 60).startswith('bye after ')
    finally:
        for child in left:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    assert proc.wait(30) == 0


WATCHER = r'''
import json, sys, time
import asyncoro.disasyncoro as asyncoro
import asyncoro.httpd as httpd
from asyncoro import service
args = json.loads(sys.argv[1])
rt = asyncoro.AsynCoro(udp_port=args['udp'])
where = asyncoro.Location(*args['scheduler'].rsplit(':', 1))
rt.peer(where)
monitor = httpd.HTTPServer(None, host='127.0.0.1', port=0, poll_sec=1)
watcher = rt._run_here(httpd._Watcher, monitor, where, 10)
deadline = time.monotonic() + 20
while monitor._monitor.scheduler is None:
    if time.monotonic() > deadline:
        sys.exit('the watcher did not attach to the scheduler at %s within 20 s' % where)
    time.sleep(0.01)
print('attached', monitor._monitor.scheduler, flush=True)
rt._run_here(watcher.stop)
print('registered', watcher.coro._id in service._SERVICES, flush=True)
watcher.coro.value(timeout=10)
print('running', watcher.coro.is_alive(), flush=True)
print('loop', watcher.loop.dead, flush=True)
monitor.shutdown(wait=False)
'''


@pytest.mark.deadline(60)
def test_a_stopped_watcher_leaves_its_scheduler_and_ends(processes, scheduler_program):
    """httpd.py's link to a shared scheduler, stopped: it is no longer a
    service of its process and its coroutine ends (it used to stay both)."""
    ports = {'scheduler': free_udp_port(), 'node': free_udp_port()}
    scheduler = scheduler_program(ports)
    proc = processes(WATCHER, json.dumps({'udp': free_udp_port(),
                                          'scheduler': scheduler.location}), ready=False)
    lines = []
    while len(lines) < 4:
        line = read_line(proc, 30, 'the watcher\'s transcript (so far %r)' % lines)
        if not LOG_LINE.match(line):
            lines.append(line)
    assert lines == ['attached ' + scheduler.location, 'registered False', 'running False',
                     'loop True']
    assert proc.wait(30) == 0
