"""The web monitor's application in-process (WSGI, no socket): the
original's endpoints keep the original's field names, /metrics in
Prometheus' text format, the guard of write actions and the password, the
Node page's incremental history, response sizes (at 1,024 nodes of 8
servers too), the Cluster page's pages of nodes, and the states a node, a
server and a job go through (asyncoro.monitor, asyncoro.webapp,
asyncoro.metrics).
"""

import base64
import gc
import gzip
import json
import logging
import time

import pytest

import monitor_fleet
from test_httpd import FakeCoro, call, get_json, post

import asyncoro.httpd as httpd
import asyncoro.monitor as monitor_module
import asyncoro.webapp as webapp
from asyncoro import MonitorException
from asyncoro.discoro import (DiscoroCoroInfo, DiscoroNodeAvailInfo, DiscoroNodeInfo,
                              DiscoroStatus, Scheduler)
from asyncoro.netio import Location
from asyncoro.records import DiscoroJobLost, JobsWaiting, StatusDetail

NODES = ('127.0.0.5', '127.0.0.6')
PROCESS_RSS = 48 << 20


def node_info(addr, avail=None):
    return DiscoroNodeInfo('box-' + addr[-1], addr, 2, 'linux-x86_64', avail)


def avail(addr, cpu=75.0, processes=None):
    return DiscoroNodeAvailInfo(Location(addr, 9000), cpu, 8 << 30, 100 << 30, 90.0, processes)


class Cluster:
    """A monitor fed the messages of two nodes with two servers each, and
    its application: `run(n, ...)` starts jobs, `end(...)` ends them."""

    def __init__(self, **options):
        self.monitor = monitor_module.Monitor(poll_sec=5, **options)
        self.monitor.computation = {'id': '1', 'client': '127.0.0.1:4000', 'status': 'running',
                                    'since': time.time(), 'closed': None}
        self.app = webapp.make_app(self.monitor, webapp.DATA_DIR)
        self.servers = []
        self.ids = iter(range(1, 10 ** 6))
        for addr in NODES:
            self.monitor.update(DiscoroStatus(Scheduler.NodeDiscovered,
                                              node_info(addr, avail(addr))))
            self.monitor.update(DiscoroStatus(Scheduler.NodeInitialized,
                                              node_info(addr, avail(addr))))
            for port in (9001, 9002):
                location = Location(addr, port)
                self.servers.append(location)
                self.monitor.update(DiscoroStatus(Scheduler.ServerDiscovered, location))
                self.monitor.update(DiscoroStatus(Scheduler.ServerInitialized, location))

    def run(self, count, name='compute', args=None, server=None):
        coros = []
        for i in range(count):
            location = server or self.servers[i % len(self.servers)]
            coro = FakeCoro(name, next(self.ids), location)
            self.monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(
                coro, args(i) if args else (i, 'part-%05d.csv' % i), {'retries': 3},
                time.time())))
            coros.append(coro)
        return coros

    def end(self, coro, kind=StopIteration, value=None):
        self.monitor.update(MonitorException(coro, (kind, value)))

    def went(self, status, subject, code, text):
        """What the scheduler sends when a node or server goes: the status,
        then for monitors why, as a code and a text."""
        self.monitor.update(DiscoroStatus(status, subject))
        self.monitor.update(StatusDetail(status, subject, code, text))

    def pulse(self, addr, when=None, processes=None):
        self.monitor.update(avail(addr, processes=processes))
        if when is not None:        # as if it had come at `when`
            node = self.monitor.nodes[addr]
            node.history[-1] = (when,) + node.history[-1][1:]
            node.last_report = when


# ---------------------------------------------------------------- the original's endpoints

ORIGINAL_NODE = {'name', 'addr', 'status', 'servers', 'update_time', 'coros_submitted',
                 'coros_done', 'avail_info'}


def test_original_endpoints_keep_the_original_field_names_and_shapes():
    cluster = Cluster()
    coros = cluster.run(4)
    cluster.end(coros[0], StopIteration, 1)
    for path in ('/cluster_status', '/cluster_updates'):
        nodes = get_json(cluster.app, path)
        assert [node['addr'] for node in nodes] == list(NODES)
        for node in nodes:
            assert ORIGINAL_NODE <= set(node) and 'ip_addr' not in node
            assert isinstance(node['servers'], int) and node['status'] == 'Initialized'
            assert set(node['avail_info']) == {'location', 'cpu', 'memory', 'disk', 'swap'}
    code, _, text = post(cluster.app, '/node_info', {'host': NODES[0]})
    info = json.loads(text)
    assert ORIGINAL_NODE <= set(info) and info['addr'] == NODES[0]
    assert [set(server) >= {'location', 'coros_submitted', 'coros_done', 'coros_running',
                            'update_time'} for server in info['servers']] == [True, True]
    first = cluster.servers[0]
    extra = cluster.run(2, name='extra', args=lambda i: ('x' * 500, i), server=first)
    code, _, text = post(cluster.app, '/server_info', {'location': str(first)})
    info = json.loads(text)
    assert {'location', 'status', 'coros_submitted', 'coros_done', 'coros',
            'update_time'} <= set(info)
    assert (info['location'], info['status'], info['coros_submitted'], info['coros_done']) == \
        (str(first), 'Initialized', 3, 1)
    assert [set(c) for c in info['coros']] == [{'coro', 'name', 'args', 'kwargs',
                                                'start_time'}] * 2
    assert [(c['coro'], c['kwargs']) for c in info['coros']] == [(str(c), 'retries=3')
                                                                 for c in extra]
    # the original's arguments: str() of each, whole (up to 400 characters each)
    assert info['coros'][0]['args'] == 'x' * 399 + '\u2026, 0'
    # what is not known: {} as the original answered
    assert json.loads(post(cluster.app, '/node_info', {'host': '10.1.2.3'})[2]) == {}
    assert json.loads(post(cluster.app, '/server_info', {'location': '10.1.2.3:5'})[2]) == {}


# ---------------------------------------------------------------- /metrics

def _families(text):
    parser = pytest.importorskip(
        'prometheus_client.parser', reason='prometheus_client (the test extra) parses /metrics')
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def _samples(families, name):
    """{node (or (node, server)): value} of the samples of `name`."""
    found = {}
    for family in families.values():
        for sample in family.samples:
            if sample.name == name:
                labels = sample.labels
                key = (labels['node'], labels['server']) if 'server' in labels else \
                    labels.get('node')
                found[key] = sample.value
    return found


def test_metrics_parse_as_prometheus_text_and_count_the_jobs_run():
    cluster = Cluster()
    first, second = NODES
    cluster.pulse(first, processes=[{'location': Location(first, 9001), 'pid': 11, 'cpu': 97.5,
                                     'rss': PROCESS_RSS}])
    coros = cluster.run(8)          # two per server: 4 on each node
    cluster.end(coros[0], StopIteration, 0)
    cluster.end(coros[1], ValueError, ValueError('bad'))
    webapp.terminate(cluster.monitor, [str(coros[2])])
    cluster.end(coros[2], StopIteration, None)
    cluster.end(coros[3], Scheduler.ServerClosed,
                DiscoroJobLost(cluster.servers[3], 'its process died (status -9)'))
    cluster.end(coros[4], StopIteration, 4)
    cluster.monitor.queue = [{'id': '78', 'client': '127.0.0.8:4001'}]
    code, headers, text = call(cluster.app, 'GET', '/metrics')
    assert code == 200 and headers['Content-Type'].startswith('text/plain; version=0.0.4')
    families = _families(text)
    assert families['asyncoro_jobs_submitted'].type == 'counter'
    # coros[i] ran on servers[i % 4]: 0 and 1 on the first node, 2 and 3 on the second
    assert _samples(families, 'asyncoro_jobs_submitted_total') == {first: 4, second: 4}
    assert _samples(families, 'asyncoro_jobs_finished_total') == {first: 2, second: 0}
    assert _samples(families, 'asyncoro_jobs_failed_total') == {first: 1, second: 0}
    assert _samples(families, 'asyncoro_jobs_terminated_total') == {first: 0, second: 1}
    assert _samples(families, 'asyncoro_jobs_lost_total') == {first: 0, second: 1}
    assert _samples(families, 'asyncoro_jobs_running') == {first: 1, second: 2}
    assert _samples(families, 'asyncoro_servers_up') == {first: 2, second: 2}
    assert _samples(families, 'asyncoro_node_up') == {first: 1, second: 1}
    assert _samples(families, 'asyncoro_node_cpu_idle_percent') == {first: 75.0, second: 75.0}
    assert _samples(families, 'asyncoro_node_memory_available_bytes')[first] == 8 << 30
    assert 0 <= _samples(families, 'asyncoro_node_last_pulse_age_seconds')[first] < 60
    assert _samples(families, 'asyncoro_server_resident_memory_bytes') == {
        (first, '%s:9001' % first): PROCESS_RSS}
    assert _samples(families, 'asyncoro_computations_queued') == {None: 1}
    # the counters carry on into the next computation; the gauges start again
    cluster.monitor.update(DiscoroStatus(Scheduler.ComputationScheduled,
                                         (78, Location('127.0.0.8', 4001))))
    families = _families(call(cluster.app, 'GET', '/metrics')[2])
    assert _samples(families, 'asyncoro_jobs_submitted_total') == {first: 4, second: 4}
    assert _samples(families, 'asyncoro_jobs_running') == {}


# ---------------------------------------------------------------- who may write

def test_cross_origin_and_tokenless_writes_are_refused_and_terminate_nothing():
    cluster = Cluster()
    coro, = cluster.run(1)
    app, token = cluster.app, cluster.app.guard.token
    evil = {'Origin': 'http://evil.example'}
    refused = [
        # a form of another site, as in the issue: no token, another origin
        ('/api/terminate', 'coro=' + str(coro), 'application/x-www-form-urlencoded', evil),
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json',
         dict(evil, **{webapp.TOKEN_HEADER: token})),
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json', {}),
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json',
         {webapp.TOKEN_HEADER: 'guessed'}),
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json',
         {webapp.TOKEN_HEADER: token, 'Sec-Fetch-Site': 'cross-site'}),
        ('/terminate_coros', 'coro=' + str(coro), 'application/x-www-form-urlencoded', evil),
        ('/terminate_coros', 'coro=' + str(coro), 'application/x-www-form-urlencoded',
         {'Sec-Fetch-Site': 'same-site'}),
        # a name that only resolves here by a trick (DNS rebinding) borrows nothing
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json',
         {webapp.TOKEN_HEADER: token, 'Host': 'evil.example:80'}),
        ('/api/terminate', json.dumps({'coro': [str(coro)]}), 'application/json',
         {webapp.TOKEN_HEADER: token, 'Host': 'evil.example:80',
          'X-Forwarded-Host': '127.0.0.1:80', 'Origin': 'http://evil.example:80'}),
        ('/api/settings', 'poll_sec=1', 'application/x-www-form-urlencoded', evil),
        ('/update', 'timeout=1', 'application/x-www-form-urlencoded', evil),
    ]
    for path, body, ctype, headers in refused:
        code, _, text = call(app, 'POST', path, body, ctype, headers=headers)
        assert code == 403, (path, headers, text)
        assert 'Traceback' not in text
    assert coro.terminated == 0 and cluster.monitor.settings.poll_sec == 5
    code, _, text = call(app, 'POST', '/api/terminate', 'coro=' + str(coro),
                         'application/x-www-form-urlencoded', headers=evil)
    assert 'another origin (http://evil.example)' in json.loads(text)['error']
    # the pages (same origin, their token) and scripts written for the original do change it
    code, _, text = call(app, 'POST', '/api/settings', json.dumps({'poll_sec': 7}),
                         'application/json', headers={'Origin': 'http://127.0.0.1',
                                                      webapp.TOKEN_HEADER: token})
    assert (code, json.loads(text)['poll_sec']) == (200, 7)
    code, _, text = call(app, 'POST', '/terminate_coros', 'coro=' + str(coro),
                         'application/x-www-form-urlencoded')
    assert (code, json.loads(text), coro.terminated) == (200, [str(coro)], 1)
    # every page carries the token
    for path in ('/', '/jobs', '/node/' + NODES[0], '/server/%s' % cluster.servers[0]):
        assert '<meta name="asyncoro-token" content="%s">' % token in call(app, 'GET', path)[2]


def test_with_a_password_every_page_and_endpoint_answers_401_without_it():
    monitor = monitor_module.Monitor()
    app = webapp.make_app(monitor, webapp.DATA_DIR, password='s3cret')
    monitor.update(DiscoroStatus(Scheduler.NodeInitialized, node_info(NODES[0])))
    monitor.update(DiscoroStatus(Scheduler.ServerInitialized, Location(NODES[0], 9001)))
    paths = [('GET', p) for p in ('/', '/index.html', '/cluster.html', '/jobs',
                                  '/node/' + NODES[0], '/server/%s:9001' % NODES[0],
                                  '/node.html?host=' + NODES[0], '/static/monitor.js',
                                  '/static/monitor.css', '/static/favicon.svg', '/api/cluster',
                                  '/api/node/' + NODES[0], '/api/server/%s:9001' % NODES[0],
                                  '/api/jobs', '/api/job?coro=x', '/metrics', '/cluster_status',
                                  '/cluster_updates', '/no/such/page')]
    paths += [('POST', p) for p in ('/api/terminate', '/api/settings', '/node_info',
                                    '/server_info', '/terminate_coros', '/update')]

    def basic(password):
        return {'Authorization': 'Basic ' + base64.b64encode(
            ('anyone:' + password).encode()).decode()}
    for method, path in paths:
        for headers in ({}, basic('wrong'), {'Authorization': 'Bearer s3cret'}):
            code, answer_headers, text = call(app, method, path, headers=headers)
            assert code == 401, (method, path, headers)
            assert answer_headers['WWW-Authenticate'].startswith('Basic realm=')
            assert NODES[0] not in text
    for path in ('/', '/api/cluster', '/metrics', '/static/monitor.js'):
        assert call(app, 'GET', path, headers=basic('s3cret'))[0] == 200
    # with the password, a name other than this machine's may write (no rebinding to fear)
    code, _, _ = call(app, 'POST', '/api/settings', json.dumps({'poll_sec': 3}),
                      'application/json', headers=dict(basic('s3cret'), Host='monitor.example',
                                                       **{webapp.TOKEN_HEADER: app.guard.token}))
    assert code == 200 and monitor.settings.poll_sec == 3


def test_only_a_monitor_on_another_interface_without_a_password_is_exposed():
    assert [httpd._exposed(addr, password) for addr, password in (
        ('0.0.0.0', None), ('', None), ('::', None), ('192.168.1.5', None),
        ('monitor.example', None), ('127.0.0.1', None), ('127.0.0.9', None), ('::1', None),
        ('localhost', None), ('0.0.0.0', 'pw'))] == \
        [True, True, True, True, True, False, False, False, False, False]


# ---------------------------------------------------------------- the Node page's polls

def test_node_poll_carries_only_the_samples_newer_than_the_page_has():
    cluster = Cluster()
    addr = NODES[0]
    node = cluster.monitor.nodes[addr]
    start = time.time() - 100
    node.history.clear()
    node.history.extend((start + i * 10, 50.0, 1 << 30, 1 << 35, 90.0) for i in range(5))
    full = get_json(cluster.app, '/api/node/' + addr)
    assert full['history_full'] and len(full['history']) == 5
    newest = full['history'][-1][0]
    cluster.pulse(addr)             # two newer reports since that poll
    node.history.append((time.time() + 5, 40.0, 1 << 30, 1 << 35, 90.0))
    again = get_json(cluster.app, '/api/node/%s?since=%r&epoch=%d' % (addr, newest,
                                                                     full['epoch']))
    assert not again['history_full'] and [s[1] for s in again['history']] == [75.0, 40.0]
    assert all(sample[0] > newest for sample in again['history'])
    assert len(get_json(cluster.app, '/api/node/%s?since=%r&epoch=%d' % (
        addr, again['history'][-1][0], full['epoch']))['history']) == 0
    # a page that has another record's samples (an earlier computation's) gets all
    stale = get_json(cluster.app, '/api/node/%s?since=%r&epoch=%d' % (addr, newest,
                                                                     full['epoch'] + 99))
    assert stale['history_full'] and len(stale['history']) == 7


def test_a_node_keeps_its_last_samples_as_numbers_and_what_it_could_not_tell_as_none():
    cluster = Cluster()
    history = cluster.monitor.nodes[NODES[0]].history
    history.clear()
    history.extend((1000.0 + i, float(i % 100), 8 << 30, 100 << 30, None if i % 2 else 90.0)
                   for i in range(monitor_module.HISTORY + 80))
    samples = get_json(cluster.app, '/api/node/' + NODES[0])['history']
    assert len(samples) == monitor_module.HISTORY
    assert samples[0] == [1080.0, 80.0, 8 << 30, 100 << 30, 90.0]
    assert samples[-1] == [1799.0, 99.0, 8 << 30, 100 << 30, None]
    assert [type(figure) for figure in samples[0]] == [float, float, int, int, float]


def test_every_response_stays_under_50_kb_with_200_running_jobs():
    cluster = Cluster()
    cluster.run(200, args=lambda i: (i, 'sample-%05d.csv' % i, {'alpha': 0.5, 'mode': 'fast'},
                                     'x' * 300))
    for i, coro in enumerate(cluster.run(60, name='transform')):
        cluster.end(coro, *((ValueError, ValueError('row %d has 3 fields' % i)) if i % 3
                            else (StopIteration, i)))
    now = time.time()
    for addr in NODES:                      # two hours of reports at 10 s
        node = cluster.monitor.nodes[addr]
        node.history.clear()
        node.history.extend((now - (720 - i) * 10, 12.5 + i % 80, 7812345678 + i,
                             98765432109 - i, 99.9) for i in range(720))
    server = cluster.servers[0]
    pages = ['/', '/jobs', '/node/' + NODES[0], '/server/%s' % server]
    endpoints = ['/api/cluster', '/api/node/' + NODES[0], '/api/server/%s' % server,
                 '/api/server/%s?limit=100' % server, '/api/jobs', '/api/jobs?state=running',
                 '/api/jobs?q=sample', '/api/job?coro=' + str(next(iter(
                     cluster.monitor.servers[str(server)].jobs))), '/metrics',
                 '/api/jobs?limit=1000', '/cluster_status', '/cluster_updates']
    sizes = {}
    for path in pages + endpoints:
        code, _, text = call(cluster.app, 'GET', path)
        assert code == 200, path
        sizes[path] = len(text.encode())
    for path, form in (('/node_info', {'host': NODES[0]}),
                       ('/server_info', {'location': str(server)})):
        code, _, text = post(cluster.app, path, form)
        sizes[path] = len(text.encode())
    logging.getLogger(__name__).info('response sizes: %s', sizes)
    assert {path: size for path, size in sizes.items() if size >= 50000} == {}
    assert sizes['/api/node/' + NODES[0]] > 20000      # the two hours of samples are there


# ---------------------------------------------------------------- a thousand nodes

def fleet_app(nodes, servers=8, jobs=1):
    """A monitor fed what a scheduler sends of `nodes` nodes with `servers`
    servers each and `jobs` jobs running on each server (as HTTPServer's
    status coroutine feeds it), its application and the Fleet."""
    monitor = monitor_module.Monitor(poll_sec=5)
    monitor.begin(1, '127.0.0.1:4000')
    fleet = monitor_fleet.Fleet(nodes, servers, jobs, FakeCoro)
    for msg in fleet.start():
        monitor.update(msg)
    # what the feed left behind is collected now, not in the first answer's first slice
    # (a full collection of this process, whose state the slices are not, takes 50 ms)
    gc.collect()
    return monitor, webapp.make_app(monitor, webapp.DATA_DIR), fleet


KB = 1000


@pytest.mark.deadline(120)
def test_at_1024_nodes_of_8_servers_no_poll_answers_over_200_kb():
    monitor, app, fleet = fleet_app(1024)
    for _ in range(40):                     # some ended, some failed
        for msg in fleet.turn():
            monitor.update(msg)
    addr, server = monitor_fleet.address(777), str(fleet.location(777, 3))
    key = str(fleet.running[0][1])
    polls = ['/api/cluster', '/api/cluster?limit=%d' % monitor_module.MAX_PAGE,
             '/api/cluster?sort=cpu&order=desc&offset=1000&limit=200',
             '/api/cluster?q=rack2', '/api/cluster?sort=name&q=node0777',
             '/api/node/' + addr, '/api/server/' + server, '/api/server/%s?limit=100' % server,
             '/api/jobs', '/api/jobs?q=part-00&limit=100', '/api/jobs?state=failed',
             '/api/job?coro=' + key, '/', '/jobs', '/node/' + addr, '/server/' + server]
    sizes = {}
    for path in polls:
        code, _, text = call(app, 'GET', path)
        assert code == 200, (path, text[:300])
        sizes[path] = len(text.encode())
    print('answers at 1024 nodes (bytes): %s' % sizes)
    assert {path: size for path, size in sizes.items() if size > 200 * KB} == {}
    data = get_json(app, '/api/cluster')
    assert (len(data['nodes']), data['page']['total'], data['page']['matched']) == \
        (monitor_module.PAGE, 1024, 1024)
    assert (data['coros_running'], data['servers'], data['node_counts']['up']) == \
        (8192, 8192, 1024)
    assert [n['name'] for n in get_json(app, '/api/cluster?q=NODE0777')['nodes']] == \
        ['rack24-node0777']
    # what is not paged: the original's list of every node, and /metrics (Prometheus
    # takes a target's series in one scrape), gzipped for a scraper that asks
    whole = {path: len(call(app, 'GET', path)[2].encode())
             for path in ('/cluster_status', '/cluster_updates', '/metrics')}
    code, headers, packed = call(app, 'GET', '/metrics', headers={'Accept-Encoding': 'gzip'},
                                 raw=True)
    assert headers['Content-Encoding'] == 'gzip'
    whole['/metrics, gzipped'] = len(packed)
    print('whole answers at 1024 nodes (bytes): %s' % whole)
    assert len(get_json(app, '/cluster_status')) == 1024
    assert whole['/metrics'] < 1024 * 8 * 300 and whole['/metrics, gzipped'] < 200 * KB


@pytest.fixture(scope='module')
def dozen():
    """Twelve nodes of two servers with a job each: node 3 lost (its servers and
    jobs too), node 4 closed, one job of node 5 ended; and a thirteenth node,
    `spare-box`, only discovered (no figures yet)."""
    monitor, app, fleet = fleet_app(12, servers=2)
    for s in range(2):
        monitor.update(DiscoroStatus(Scheduler.ServerDisconnected, fleet.location(3, s)))
    for i, status in ((3, Scheduler.NodeDisconnected), (4, Scheduler.NodeClosed)):
        monitor.update(DiscoroStatus(status, DiscoroNodeInfo(
            monitor_fleet.name(i), monitor_fleet.address(i), 2, 'linux', None)))
    monitor.update(MonitorException(fleet.running[10][1], (StopIteration, 1)))
    monitor.update(DiscoroStatus(Scheduler.NodeDiscovered, DiscoroNodeInfo(
        'spare-box', '127.1.0.13', 2, 'linux', None)))
    return app


EVERY = list(range(13))
UP = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
# a query of /api/cluster -> (the nodes of the page, by number: node i is at 127.1.0.<i+1>,
# how many the query chose); the nodes came in order; CPU idle is 7 * i %
NODE_PAGES = [
    ('', (EVERY, 13)),
    ('limit=5', ([0, 1, 2, 3, 4], 13)),
    ('limit=5&offset=10', ([10, 11, 12], 13)),
    ('offset=13', ([], 13)),                            # past the end: an empty page
    ('q=127.1.0.1', ([0, 9, 10, 11, 12], 5)),           # a piece of an address: .1, .10 - .13
    ('q=RACK00-NODE000', (list(range(10)), 10)),        # of a name, in any case
    ('q=spare', ([12], 1)),
    ('q=%20127.1.0.12%20', ([11], 1)),                  # spaces around it do not count
    ('q=nowhere', ([], 0)),
    ('sort=addr', (EVERY, 13)),                         # as numbers: .2 before .10
    ('sort=addr&order=desc&limit=3', ([12, 11, 10], 13)),
    ('order=desc&limit=2', ([12, 11], 13)),             # in the order they came, reversed
    ('sort=cpu&order=desc', (list(range(11, -1, -1)) + [12], 13)),   # not known: last
    ('sort=cpu', (EVERY, 13)),
    ('sort=coros_running', ([3, 12, 5] + [0, 1, 2, 4] + UP[4:], 13)),  # ties by address
    ('sort=coros_running&order=desc', ([0, 1, 2, 4] + UP[4:] + [5, 3, 12], 13)),
    ('sort=state', ([4, 3, 12] + UP, 13)),              # closed, lost, starting, up
    ('sort=name&q=rack00&offset=8&limit=5', ([8, 9, 10, 11], 12)),
]


@pytest.mark.parametrize('query, expected', NODE_PAGES)
def test_a_page_of_nodes_is_filtered_sorted_and_cut_by_the_server(dozen, query, expected):
    data = get_json(dozen, '/api/cluster?' + query)
    numbers = [int(node['addr'].rsplit('.', 1)[1]) - 1 for node in data['nodes']]
    assert (numbers, data['page']['matched']) == expected
    assert data['page']['total'] == 13


def test_paging_sorting_and_filtering_leave_the_totals_whole(dozen):
    def totals(query):
        data = get_json(dozen, '/api/cluster?' + query)
        for key in ('nodes', 'page', 'time'):
            del data[key]
        return data
    whole = totals('')
    assert (whole['node_counts'], whole['coros_running'], whole['servers']) == \
        ({'starting': 1, 'up': 10, 'closed': 1, 'lost': 1}, 21, 22)
    for query, _ in NODE_PAGES:
        assert totals(query) == whole, query


@pytest.mark.parametrize('query, error', [
    ('limit=0', 'limit (nodes in a page) must be between 1 and 200, not 0'),
    ('limit=201', 'limit (nodes in a page) must be between 1 and 200, not 201'),
    ('limit=ten', "limit must be a whole number, not 'ten'"),
    ('offset=-1', 'offset must be a whole number, 0 or more, not -1'),
    ('offset=1.5', "offset must be a whole number, not '1.5'"),
    ('sort=bogus', 'sort must be one of addr, name, state, servers, coros_running, '),
    ('order=up', "order must be asc or desc, not 'up'"),
    ('limit=5&limit=6', 'give limit once'),
])
def test_a_bad_page_of_nodes_is_a_400_that_says_why(dozen, query, error):
    code, _, text = call(dozen, 'GET', '/api/cluster?' + query)
    assert code == 400 and json.loads(text)['error'].startswith(error)


def test_a_node_that_changes_while_the_whole_list_is_made_is_in_the_next_update():
    """The original's /cluster_updates is made in slices, with the hub's turn in
    between: a node that changes then (one summarized already) is in the
    reader's next answer."""
    monitor, app, fleet = fleet_app(3 * monitor_module.NODE_SLICE, servers=1)
    changed = []

    def step(what, func, *args):        # between the first two slices: a node pulses
        value = func(*args)
        if not changed:
            changed.append(monitor_fleet.address(0))
            monitor.update(monitor_fleet.pulse(0, 1, when=1))
        return value
    app.views._step = step
    code, headers, text = call(app, 'GET', '/cluster_updates?since=0')
    assert code == 200 and len(json.loads(text)) == 3 * monitor_module.NODE_SLICE
    again = get_json(app, '/cluster_updates?since=' + headers['X-Monitor-Seq'])
    assert [node['addr'] for node in again] == changed


def test_a_long_list_encoded_in_slices_is_the_json_of_the_whole():
    items = [{'addr': '127.1.0.%d' % i, 'n': i, 'text': '\u2026"'} for i in range(1000)]
    assert webapp._encoded(items) == json.dumps(items, separators=(',', ':'))
    assert webapp._encoded(items[:3]) == json.dumps(items[:3], separators=(',', ':'))


@pytest.mark.parametrize('header, gzipped', [
    ('gzip', True), ('gzip, deflate, br', True), ('br;q=1.0, GZIP;q=0.5', True),
    ('gzip;q=0', False), ('gzip; q=0.0', False), ('deflate', False), ('', False),
    ('x-gzip', False)])
def test_metrics_are_gzipped_for_a_scraper_that_asks(header, gzipped):
    cluster = Cluster()
    cluster.run(3)
    plain = call(cluster.app, 'GET', '/metrics')[2]
    code, headers, body = call(cluster.app, 'GET', '/metrics',
                               headers={'Accept-Encoding': header}, raw=True)
    assert (code, headers.get('Content-Encoding') == 'gzip') == (200, gzipped)
    assert headers['Vary'] == 'Accept-Encoding'
    text = (gzip.decompress(body) if gzipped else body).decode()

    def samples(text):          # (the age of the last pulse grows between the two)
        return sorted(line for line in text.splitlines() if '_age_' not in line)
    assert samples(text) == samples(plain)


def test_the_ended_jobs_servers_list_are_the_newest_of_the_whole_cluster(monkeypatch):
    """Each server lists its last RECENT ended jobs, but all of them together
    at most LISTED: at 8,192 servers, 25 each would keep 200,000 jobs."""
    monkeypatch.setattr(monitor_module, 'LISTED', 6)
    cluster = Cluster()
    coros = cluster.run(12)                 # coros[i] runs on servers[i % 4]
    for coro in coros:
        cluster.end(coro, StopIteration, 0)
    listed = {str(server): [job['coro'] for job in get_json(
        cluster.app, '/api/server/%s' % server)['recent']] for server in cluster.servers}
    names = [str(coro) for coro in coros]
    assert list(listed.values()) == [[names[8]], [names[9]], [names[10], names[6]],
                                     [names[11], names[7]]]
    assert len(cluster.monitor.listed) == 6
    assert get_json(cluster.app, '/api/jobs')['matched'] == 12     # the search keeps its own


# ---------------------------------------------------------------- states a user can trust

def _states(cluster):
    data = get_json(cluster.app, '/api/cluster')
    return ({n['addr']: (n['state'], n['status']) for n in data['nodes']},
            {s: cluster.monitor.servers[s].state.value for s in sorted(cluster.monitor.servers)})


def test_a_normal_close_closes_nodes_and_servers():
    cluster = Cluster()
    coro, = cluster.run(1)
    cluster.end(coro, StopIteration, None)
    # what the scheduler sends at close: servers closed, then the computation
    for location in cluster.servers:
        cluster.went(Scheduler.ServerClosed, location, 'closed', 'the computation was closed')
    cluster.went(Scheduler.ComputationClosed, 1, 'closed', 'closed by its client')
    nodes, servers = _states(cluster)
    assert nodes == {addr: ('closed', 'Closed') for addr in NODES}
    assert set(servers.values()) == {'closed'}
    data = get_json(cluster.app, '/api/cluster')
    assert data['computation']['status'] == 'closed' and data['computation']['closed']
    assert data['servers'] == 0 and data['jobs']['finished'] == 1


def test_the_code_of_why_a_node_or_server_went_says_lost_or_closed_not_its_words():
    cluster = Cluster()
    # a node that quit (its servers closed with it) is closed, whatever the words say; a
    # server whose process died is lost, even when told as ServerClosed
    first, second = cluster.servers[:2]
    cluster.went(Scheduler.ServerClosed, first, 'node ended', 'its node died of boredom')
    cluster.went(Scheduler.ServerClosed, second, 'died', 'its process ended (status -9)')
    cluster.went(Scheduler.NodeClosed, node_info(NODES[0]), 'node ended', 'the node quits')
    nodes, servers = _states(cluster)
    assert (servers[str(first)], servers[str(second)]) == ('closed', 'lost')
    assert nodes[NODES[0]] == ('closed', 'Closed')
    info = get_json(cluster.app, '/api/node/' + NODES[0])
    assert [(s['status'], s['cause']) for s in info['servers']] == [
        ('Closed', 'its node died of boredom'), ('Disconnected', 'its process ended (status -9)')]
    assert info['cause'] == 'the node quits'
    # a server that could not start is shown closed, saying why
    failed = Location(NODES[1], 9003)
    cluster.went(Scheduler.ServerIgnore, failed, 'not started', 'port 9003 is taken')
    server = get_json(cluster.app, '/api/server/%s' % failed)
    assert (server['state'], server['cause']) == ('closed', 'port 9003 is taken')


def test_jobs_waiting_for_a_server_show_in_the_cluster_json_and_metrics():
    cluster = Cluster()
    cluster.monitor.update(JobsWaiting(1, 7))
    assert get_json(cluster.app, '/api/cluster')['jobs_waiting'] == 7
    families = _families(call(cluster.app, 'GET', '/metrics')[2])
    assert _samples(families, 'asyncoro_jobs_waiting') == {None: 7}     # no label: one figure
    cluster.monitor.update(JobsWaiting(2, 3))       # another computation's: not this one's
    assert get_json(cluster.app, '/api/cluster')['jobs_waiting'] == 7
    cluster.monitor.update(DiscoroStatus(Scheduler.ComputationClosed, 1))
    assert get_json(cluster.app, '/api/cluster')['jobs_waiting'] == 0


def test_a_node_killed_is_lost_with_its_servers_and_jobs():
    cluster = Cluster()
    dead = NODES[1]
    coros = cluster.run(4)
    cluster.pulse(dead)
    cause = 'its node %s went away' % dead
    # what the scheduler sends when a node's connection drops: its jobs lost, its servers
    # disconnected, the node closed, each with the code of a loss
    for coro in coros:
        if coro.location.addr == dead:
            cluster.end(coro, Scheduler.ServerClosed, DiscoroJobLost(coro.location, cause,
                                                                     code='disconnected'))
    for location in cluster.servers[2:]:
        cluster.went(Scheduler.ServerDisconnected, location, 'disconnected', cause)
    cluster.went(Scheduler.NodeClosed, node_info(dead), 'disconnected', cause)
    nodes, servers = _states(cluster)
    assert nodes == {NODES[0]: ('up', 'Initialized'), dead: ('lost', 'Disconnected')}
    assert [servers[str(s)] for s in cluster.servers] == ['up', 'up', 'lost', 'lost']
    info = get_json(cluster.app, '/api/node/' + dead)
    assert info['cause'] == cause and info['down_time'] and info['last_report']
    assert info['avail_info']['cpu'] == 75.0       # its last figures, marked by its state
    jobs = get_json(cluster.app, '/api/jobs?state=lost')['jobs']
    assert sorted((j['coro'], j['error']) for j in jobs) == sorted(
        (str(c), cause) for c in coros if c.location.addr == dead)
    # the computation closing later does not make it merely closed
    cluster.monitor.update(DiscoroStatus(Scheduler.ComputationClosed, 1))
    assert _states(cluster)[0] == {NODES[0]: ('closed', 'Closed'),
                                   dead: ('lost', 'Disconnected')}


def test_a_server_process_killed_is_lost_and_its_node_stays_up():
    cluster = Cluster()
    victim = cluster.servers[0]
    coro, = cluster.run(1, server=victim)
    cluster.end(coro, Scheduler.ServerClosed, DiscoroJobLost(victim, 'its process died '
                                                                     '(status -9)', code='died'))
    cluster.went(Scheduler.ServerDisconnected, victim, 'died', 'its process died (status -9)')
    nodes, servers = _states(cluster)
    assert servers[str(victim)] == 'lost' and nodes[NODES[0]] == ('up', 'Initialized')
    server = get_json(cluster.app, '/api/server/%s' % victim)
    assert (server['state'], server['cause']) == ('lost', 'its process died (status -9)')
    assert server['recent'][0]['state'] == 'lost'


def test_failures_keep_their_exception_and_traceback_and_the_last_n():
    cluster = Cluster(max_failures=3)
    coros = cluster.run(5, name='parse')
    error = ValueError('row 7 has 3 fields, wanted 4')
    error.add_note('Traceback (most recent call last):\n  File "<job parse>", line 3\n'
                   'ValueError: row 7 has 3 fields, wanted 4')
    cluster.end(coros[0], ValueError, error)
    cluster.end(coros[1], KeyError, KeyError)       # the value could not travel: its type did
    for coro in coros[2:4]:
        cluster.end(coro, ZeroDivisionError, ZeroDivisionError('division by zero'))
    cluster.end(coros[4], StopIteration, 1)
    data = get_json(cluster.app, '/api/cluster')
    assert data['jobs'] == {'running': 0, 'finished': 1, 'failed': 4, 'terminated': 0,
                            'lost': 0}
    assert (data['coros_done'], data['nodes'][0]['coros_failed']) == (5, 2)
    # the failures view: the last 3 kept apart from the recent ones
    assert list(cluster.monitor.failures) == [str(c) for c in coros[1:4]]
    job = get_json(cluster.app, '/api/job?coro=' + str(coros[0]))
    assert (job['state'], job['error']) == ('failed', 'ValueError: row 7 has 3 fields, '
                                                      'wanted 4')
    assert job['detail'].startswith('Traceback (most recent call last):')
    assert get_json(cluster.app, '/api/job?coro=' + str(coros[1]))['error'] == 'KeyError'


def test_search_finds_jobs_by_id_function_and_argument_text_and_filters_by_state():
    cluster = Cluster()
    coros = cluster.run(6, args=lambda i: ('dataset-%d.parquet' % i, {'threshold': i / 10}))
    other = cluster.run(2, name='reduce', args=lambda i: (i,))
    cluster.end(coros[1], ValueError, ValueError('bad'))
    cluster.end(coros[2], StopIteration, 2)

    def found(query='', states=''):
        data = get_json(cluster.app, '/api/jobs?q=%s&state=%s' % (query, states))
        return [j['coro'] for j in data['jobs']], data['counts']
    assert found('set-3.parq')[0] == [str(coros[3])]            # an argument's text
    assert found("threshold': 0.5")[0] == [str(coros[5])]
    assert sorted(found('REDUCE')[0]) == sorted(map(str, other))   # a function's name
    assert found(str(coros[4]))[0] == [str(coros[4])]          # an id
    names, counts = found('dataset', 'failed,finished')
    assert sorted(names) == sorted([str(coros[1]), str(coros[2])])
    assert counts == {'running': 4, 'finished': 1, 'failed': 1, 'terminated': 0, 'lost': 0}
    assert found('', 'running')[1]['running'] == 6
    code, _, text = call(cluster.app, 'GET', '/api/jobs?state=broken')
    assert code == 400 and 'state must be one of' in json.loads(text)['error']
    # arguments hidden: the search looks at ids and names only
    cluster.monitor.settings.change(show_coro_args=False)
    assert found('parquet')[0] == []
    assert get_json(cluster.app, '/api/job?coro=' + str(coros[0]))['args'] == ''



# ---------------------------------------------------------------- the state's transitions

CLOSED, GONE, IGNORED, LOST_, STARTED, UP_ = 'closed', 'gone', 'ignored', 'lost', 'started', 'up'
# what happens to a node or a server -> (state, the original's word, cause): a detail is
# (code, text), as the scheduler sends it after a status of going
PLACE_TRANSITIONS = [
    ((STARTED,), ('starting', 'Discovered', None)),
    ((UP_,), ('up', 'Initialized', None)),
    ((UP_, CLOSED), ('closed', 'Closed', None)),
    ((UP_, IGNORED), ('closed', 'Closed', None)),
    ((UP_, LOST_), ('lost', 'Disconnected', monitor_module.DISCONNECTED)),
    ((UP_, CLOSED, ('died', 'its process died')), ('lost', 'Disconnected', 'its process died')),
    ((UP_, CLOSED, ('silent', 'no pulse')), ('lost', 'Disconnected', 'no pulse')),
    ((UP_, LOST_, ('node ended', 'it quits')), ('closed', 'Closed', 'it quits')),
    ((UP_, LOST_, ('closed', '')), ('closed', 'Closed', None)),
    ((UP_, ('died', 'a detail of nothing')), ('up', 'Initialized', None)),
    ((UP_, LOST_, UP_), ('up', 'Initialized', None)),          # back again
    ((UP_, GONE), ('closed', 'Closed', None)),                  # the computation closed
    ((STARTED, GONE), ('closed', 'Closed', None)),
    ((UP_, LOST_, GONE), ('lost', 'Disconnected', monitor_module.DISCONNECTED)),
]


@pytest.mark.parametrize('kind', ['node', 'server'])
@pytest.mark.parametrize('events, expected', PLACE_TRANSITIONS)
def test_a_node_or_server_goes_through_the_states_its_messages_say(kind, events, expected):
    monitor = monitor_module.Monitor()
    location = Location(NODES[0], 9001)
    subject = node_info(NODES[0]) if kind == 'node' else location
    statuses = {STARTED: 'Discovered', UP_: 'Initialized', CLOSED: 'Closed',
                IGNORED: 'Ignore', LOST_: 'Disconnected'}
    prefix = 'Node' if kind == 'node' else 'Server'
    last = None
    for event in events:
        if event == GONE:
            monitor.update(DiscoroStatus(Scheduler.ComputationClosed, 1))
        elif isinstance(event, tuple):
            monitor.update(StatusDetail(last, subject, *event))
        else:
            last = getattr(Scheduler, prefix + statuses[event])
            monitor.update(DiscoroStatus(last, subject))
    views = monitor_module.Views(monitor)
    info = views.node_info(NODES[0]) if kind == 'node' else views.server_info(str(location))
    assert (info['state'], info['status'], info['cause']) == expected
    assert (info['down_time'] is not None) == (expected[0] in ('closed', 'lost'))


def test_the_original_endpoints_are_one_table():
    assert [(route.method, route.path, route.access) for route in webapp.original_routes()] == [
        ('GET', '/cluster_status', webapp.Access.READ),
        ('GET', '/cluster_updates', webapp.Access.READ),
        ('POST', '/node_info', webapp.Access.READ),
        ('POST', '/server_info', webapp.Access.READ),
        ('POST', '/terminate_coros', webapp.Access.WRITE),
        ('POST', '/update', webapp.Access.WRITE),
        ('POST', '/set_poll_sec', webapp.Access.WRITE)]


def test_random_status_messages_keep_the_running_jobs_index_whole():
    """Jobs created, ended (before they were created, twice, by a loss),
    terminated, and servers and the computation going, in any order: the
    index of running jobs is exactly the jobs on the servers, and every job
    is counted once, running or ended."""
    pytest.importorskip('hypothesis', reason='hypothesis drives the randomized monitor test')
    from hypothesis import settings, strategies as sts
    from hypothesis.stateful import (RuleBasedStateMachine, invariant, rule,
                                     run_state_machine_as_test)
    ends = {'finished': (StopIteration, None), 'failed': (ValueError, ValueError('bad')),
            'lost': (Scheduler.ServerClosed, None)}

    class Messages(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.cluster = Cluster()
            self.coros = []

        @rule(server=sts.integers(0, 3))
        def create(self, server):
            self.coros += self.cluster.run(1, server=self.cluster.servers[server])

        @rule(server=sts.integers(0, 3), how=sts.sampled_from(sorted(ends)))
        def end_first(self, server, how):
            coro = FakeCoro('early', next(self.cluster.ids), self.cluster.servers[server])
            self.cluster.end(coro, *ends[how])
            self.coros.append(coro)
            self.cluster.monitor.update(DiscoroStatus(Scheduler.CoroCreated, DiscoroCoroInfo(
                coro, (), {}, time.time())))

        @rule(data=sts.data(), how=sts.sampled_from(sorted(ends)))
        def end(self, data, how):
            if self.coros:
                self.cluster.end(data.draw(sts.sampled_from(self.coros)), *ends[how])

        @rule(data=sts.data())
        def terminate(self, data):
            if self.coros:
                webapp.terminate(self.cluster.monitor, [str(data.draw(sts.sampled_from(
                    self.coros)))])

        @rule(server=sts.integers(0, 3), status=sts.sampled_from([
            Scheduler.ServerClosed, Scheduler.ServerDisconnected, Scheduler.ServerInitialized]))
        def server(self, server, status):
            self.cluster.monitor.update(DiscoroStatus(status, self.cluster.servers[server]))

        @rule()
        def close(self):
            self.cluster.monitor.update(DiscoroStatus(Scheduler.ComputationClosed, 1))

        @invariant()
        def index_is_whole(self):
            monitor = self.cluster.monitor
            on_servers = {key: job for server in monitor.servers.values()
                          for key, job in server.jobs.items()}
            assert monitor.running == on_servers
            assert all(job.server.jobs[key] is job for key, job in monitor.running.items())
            assert not set(monitor.running) & set(monitor.ended)
            data = get_json(self.cluster.app, '/api/cluster')
            assert data['coros_running'] == len(monitor.running) == data['jobs']['running']
            assert data['coros_submitted'] == data['coros_done'] + data['coros_running'] == \
                sum(data['jobs'].values()) == \
                sum(totals['submitted'] for totals in monitor.totals.values())

    run_state_machine_as_test(Messages, settings=settings(max_examples=60,
                                                          stateful_step_count=25,
                                                          deadline=None))
