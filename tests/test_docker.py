"""Nodes in containers (issue 23): the package's Dockerfile, built by a real
engine, runs discoronode.py detached, in the `--serve 1` loop, and stops
cleanly with `docker stop`; the Compose file starts a scheduler and two
nodes as a cluster on one machine.

The image is built before the tests, where the network is: `.ci/docker`
does it (CI runs it) with docker, or with podman, which takes the same
commands. These tests only run containers, each with the host network of
the loopback-only namespace the suite runs in (--net=host), and remove
every container they start by its id or name at the end. The engine and
image are $ASYNCORO_TEST_ENGINE and $ASYNCORO_TEST_IMAGE (default: the
engine that works here, and the image .ci/docker builds). Where there is no
engine or no image built from this checkout, the tests skip and say why;
with ASYNCORO_TEST_DOCKER=required (CI, once it built the image) they fail
instead.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

import asyncoro
from conftest import (LOG_LINE, ROOT, Process, free_udp_port, reap,
                      unexpected_tracebacks, wait_until)
from test_operations import TOLD_STATUS, finish, job_started, told_within, \
    wait_for_line as wait_for

IMAGE = os.environ.get('ASYNCORO_TEST_IMAGE', 'localhost/asyncoro:test')
# a container's ulimits must not exceed the host's (podman's defaults do, on
# some machines): these are below any host's
LIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000']
COMPOSE_FILE = os.path.join(os.path.dirname(asyncoro.__file__), 'data', 'compose.yaml')
DOCKERFILE = os.path.join(os.path.dirname(asyncoro.__file__), 'data', 'Dockerfile')

# what the package's modules hold, in the image (python3 -c) and here alike
DIGEST = r'''
import hashlib, os, sys
folder = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__import__('asyncoro').__file__)
digest = hashlib.sha256()
for name in sorted(n for n in os.listdir(folder) if n.endswith('.py')):
    with open(os.path.join(folder, name), 'rb') as f:
        digest.update(name.encode() + b'\0' + f.read() + b'\0')
print(digest.hexdigest())
'''


def test_the_dockerfile_is_found_beside_the_installed_module():
    with open(DOCKERFILE) as f:
        text = f.read()
    assert 'pip install' in text
    assert 'discoronode.py' in text.split('CMD', 1)[1]
    # the base is the builder's choice
    assert 'ARG BASE=python:3.12-slim\nFROM ${BASE}\n' in text


def _unavailable(reason):
    if os.environ.get('ASYNCORO_TEST_DOCKER') == 'required':
        pytest.fail('%s (and ASYNCORO_TEST_DOCKER=required)' % reason, pytrace=False)
    pytest.skip(reason)


def _run(cmd, timeout):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def _find_engine():
    given = os.environ.get('ASYNCORO_TEST_ENGINE')
    if given:
        return shlex.split(given)
    if shutil.which('docker'):
        try:
            if _run(['docker', 'info'], 20).returncode == 0:
                return ['docker']
        except subprocess.TimeoutExpired:
            pass        # no daemon answers: as if there were none
    if shutil.which('podman'):
        # crun, podman's default runtime, refuses hybrid cgroups; runc works on both
        return ['podman'] + (['--runtime', 'runc'] if shutil.which('runc') else [])
    return None


@pytest.fixture(scope='module')
def engine():
    """The engine's command (['docker'] or ['podman', ...]), once the image
    is known to be there and built from this checkout."""
    found = _find_engine()
    if found is not None and not shutil.which(found[0]):
        _unavailable('ASYNCORO_TEST_ENGINE=%r: there is no program %s here'
                     % (os.environ.get('ASYNCORO_TEST_ENGINE'), found[0]))
    if found is None:
        _unavailable('no container engine here (no docker daemon answers, no podman): '
                     '`bash .ci/docker FILE` installs one where it can, and builds the image')
    if _run(found + ['image', 'inspect', IMAGE], 60).returncode != 0:
        _unavailable('no image %s for %s: build it with `bash .ci/docker FILE`'
                     % (IMAGE, ' '.join(found)))
    here = subprocess.run([sys.executable, '-c', DIGEST, os.path.join(ROOT, 'asyncoro')],
                          capture_output=True, timeout=30, check=True).stdout.decode().strip()
    there = _run(found + ['run', '--rm', '--net=none'] + LIMITS + [IMAGE, 'python3', '-c', DIGEST],
                 120)
    if there.returncode != 0:
        pytest.fail('%s cannot run a container of %s: %s' % (' '.join(found), IMAGE,
                                                             there.stderr.decode()[-2000:]))
    if there.stdout.decode().strip() != here:
        _unavailable('image %s was built from another version of the package than this '
                     "checkout's: build it again with `bash .ci/docker FILE`" % IMAGE)
    return found


class Containers:
    """The containers a test starts (detached or in a loop, with the host's
    network and 127.0.0.1 as the programs' address); each is killed and
    removed by name at the end. `follow(name)` streams a container's output
    into a conftest Process, so that the test reads its lines and a
    traceback in it fails the test."""

    def __init__(self, engine, tag):
        self.engine = engine
        self.tag = tag
        self.names = []
        self.followers = []

    def options(self, name=None, init=True, **env):
        env.setdefault('ASYNCORO_NODE', '127.0.0.1')
        options = (['--init'] if init else []) + ['--net=host'] + (
            ['--name', name] if name else []) + LIMITS
        for key, value in sorted(env.items()):
            options += ['-e', '%s=%s' % (key, value)]
        return options

    def name(self, what):
        name = 'asyncoro-test-%s-%s' % (self.tag, what)
        self.names.append(name)
        return name

    def run(self, what, *argv, init=True, volume=None, **env):
        """Start a container detached, as `docker run -d` does (no -i, no
        -t), with a volume (`-v volume`) if given; its name."""
        name = self.name(what)
        cmd = self.engine + ['run', '-d'] + self.options(name, init, **env) + (
            ['-v', volume] if volume else []) + [IMAGE] + [str(arg) for arg in argv]
        started = _run(cmd, 120)
        assert started.returncode == 0, started.stderr.decode()[-2000:]
        return name

    def follow(self, name):
        return self.start(self.engine + ['logs', '-f', name])

    def start(self, cmd):
        """A process that shows containers' output (its stdout and stderr)."""
        proc = Process(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
        self.followers.append(proc)
        return proc

    def exit_code(self, name):
        state = _run(self.engine + ['inspect', '--format', '{{.State.Status}} '
                                    '{{.State.ExitCode}}', name], 60)
        assert state.returncode == 0, state.stderr.decode()
        status, code = state.stdout.decode().split()
        return status, int(code)

    def remove(self):
        for name in self.names:
            # SIGKILL first: `rm -f` would wait for a stop's grace
            _run(self.engine + ['kill', name], 60)
            _run(self.engine + ['rm', '-f', name], 60)


@pytest.fixture
def containers(engine, request):
    made = Containers(engine, '%d-%d' % (os.getpid(), int(time.monotonic() * 1000)))
    try:
        yield made
    finally:
        try:
            reap(made.followers, request)       # first: a loop starts no more containers
        finally:
            made.remove()


def node_argv(ports, *more):
    return ['discoronode.py', '-c', 2, '-u', ports['node'], '--scheduler_port',
            ports['scheduler']] + list(more)


CLIENT = r'''
import json, os, sys
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
ports = json.loads(sys.argv[1])
Scheduler(udp_port=ports['scheduler'], discoronode_port=ports['node'])
''' + TOLD_STATUS + r'''
def where(seconds, coro=None):
    """Where this job runs: a container's marker file, the container the test
    named, this process's mount namespace, and whether a job ran in this
    container before (it leaves a file outside the node's folder)."""
    import os
    yield coro.sleep(seconds)
    markers = [path for path in ('/run/.containerenv', '/.dockerenv') if os.path.exists(path)]
    trace = '/var/tmp/asyncoro-test-job-was-here'
    before = os.path.exists(trace)
    open(trace, 'w').close()
    return {'markers': markers, 'container': os.environ.get('ASYNCORO_TEST_CONTAINER'),
            'mnt': os.readlink('/proc/self/ns/mnt'), 'job_before': before}

def main(seconds, coro=None):
    computation = Computation([where], status_coro=asyncoro.Coro(status, coro))
    assert (yield computation.schedule()) == 0
    result = yield computation.run_result(where, seconds)
    print('result', json.dumps(result) if isinstance(result, dict) else type(result).__name__,
          flush=True)
    if not isinstance(result, dict):
        # the news of the node may come after the job's end: wait for it, or the
        # program ends with the status coroutine (a daemon) before it prints it
        yield coro.receive(timeout=10)
    yield computation.close()

asyncoro.Coro(main, float(sys.argv[2]))
'''


def ran_in(lines, container):
    """The job's answer, checked: it ran in the container named."""
    results = [line for line in lines if line.startswith('result ')]
    assert len(results) == 1, lines
    where = json.loads(results[0].split(' ', 1)[1])
    assert where['markers'], 'the job saw no container marker: %s' % where
    assert where['container'] == container
    assert where['mnt'] != os.readlink('/proc/self/ns/mnt')      # not this machine's
    assert not where['job_before']          # the first job in a fresh container
    return where


def ports():
    return {'scheduler': free_udp_port(), 'node': free_udp_port()}


# ---------------------------------------------------------------- the three runs

@pytest.mark.deadline(120)
def test_a_detached_node_serves_a_client_on_the_host(containers, processes):
    """`docker run -d` (no -i, no -t): stdin is closed, and the node serves on."""
    given = ports()
    name = containers.run('detached', *node_argv(given), ASYNCORO_TEST_CONTAINER='detached')
    node = containers.follow(name)
    wait_for(node, 60, 'the ready line', lambda line: line.startswith('discoronode ready'))
    wait_for(node, 10, 'why it serves on', lambda line: LOG_LINE.match(line) and
             'serving on as with --daemon' in line)
    code, lines, logs = finish(processes(CLIENT, json.dumps(given), 0.1, ready=False), 60)
    assert code == 0, logs[-20:]
    ran_in(lines, 'detached')
    assert containers.exit_code(name) == ('running', 0)


@pytest.mark.deadline(150)
def test_the_serve_1_loop_gives_each_computation_a_fresh_container(containers, processes):
    """The documented loop (`while docker run --rm ... --serve 1; do :; done`),
    bounded to two rounds: each computation runs in a container of its own,
    which ends with it."""
    given = ports()
    names = [containers.name('round-%d' % n) for n in (1, 2)]
    script = ('for name in %s; do %s --name "$name" -e ASYNCORO_TEST_CONTAINER="$name" %s '
              '|| exit $?; done' % (
                  ' '.join(names), shlex.join(containers.engine + ['run', '--rm']),
                  shlex.join(containers.options() + [IMAGE] + [
                      str(arg) for arg in node_argv(given, '--serve', 1)])))
    loop = containers.start(['sh', '-c', script])
    for name in names:
        wait_for(loop, 60, 'the ready line of %s' % name,
                 lambda line: line.startswith('discoronode ready'))
        code, lines, logs = finish(processes(CLIENT, json.dumps(given), 0.1, ready=False), 60)
        assert code == 0, logs[-20:]
        ran_in(lines, name)
        wait_for(loop, 30, 'the end of %s' % name,
                 lambda line: line.endswith('served 1 computations; quitting'))
    assert loop.wait(30) == 0       # each container exited with 0


@pytest.mark.deadline(120)
def test_docker_stop_in_the_middle_of_a_job_tells_the_client_within_2s(containers,
                                                                       processes):
    given = ports()
    name = containers.run('stopped', *node_argv(given), ASYNCORO_TEST_CONTAINER='stopped')
    node = containers.follow(name)
    wait_for(node, 60, 'the ready line', lambda line: line.startswith('discoronode ready'))
    client = processes(CLIENT, json.dumps(given), 60, ready=False)
    before = job_started(client, 60)
    start = time.monotonic()
    stop = Process(containers.engine + ['stop', name], stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        told_within(client, start + 2, before)
        out, err = stop.communicate(timeout=30)
        took = time.monotonic() - start
        assert stop.returncode == 0, err.decode()
    finally:
        reap([stop], None)
    # it ended by itself, well within the 10 s grace (not killed after it: 137)
    assert took < 10
    assert containers.exit_code(name) == ('exited', 0)
    assert client.wait(30) == 0
    wait_for(node, 10, 'why the computation ended', lambda line: LOG_LINE.match(line) and
             'ends here: the node quits' in line)


@pytest.mark.deadline(120)
def test_a_saved_config_goes_into_the_container_as_a_mounted_file(containers, tmp_path):
    """As docs/guide/docker.rst shows: saved with the image into a mounted
    folder, then given to a node as a mounted file."""
    given = ports()
    folder = tmp_path / 'conf'
    folder.mkdir()
    options = ['-c', '3', '--zombie_period', '600', '-u', str(given['node']),
               '--scheduler_port', str(given['scheduler'])]
    saved = _run(containers.engine + ['run', '--rm', '--net=none', '-v', '%s:/conf' % folder]
                 + LIMITS + [IMAGE, 'discoronode.py'] + options +
                 ['--save_config', '/conf/node.conf'], 120)
    assert saved.returncode == 0, saved.stderr.decode()
    assert saved.stdout.decode().strip() == 'options saved in /conf/node.conf'
    name = containers.run('config', 'discoronode.py', '--config', '/etc/asyncoro/node.conf',
                          volume='%s:/etc/asyncoro/node.conf:ro' % (folder / 'node.conf'))
    node = containers.follow(name)
    ready = wait_for(node, 60, 'the ready line', lambda line: line.startswith('discoronode '
                                                                              'ready'))
    assert ' servers=3 ' in ready, ready


@pytest.mark.deadline(120)
def test_a_node_that_is_pid_1_leaves_no_zombies(containers, processes):
    """Without --init the node is the container's PID 1, which the servers
    of an ended computation are left to: the zygote adopts and reaps them."""
    given = ports()
    name = containers.run('pid-1', *node_argv(given), init=False,
                          ASYNCORO_TEST_CONTAINER='pid-1')
    node = containers.follow(name)
    ready = wait_for(node, 60, 'the ready line',
                     lambda line: line.startswith('discoronode ready'))
    assert ' pid=1 ' in ready
    code, lines, logs = finish(processes(CLIENT, json.dumps(given), 0.1, ready=False), 60)
    assert code == 0, logs[-20:]
    ran_in(lines, 'pid-1')
    wait_for(node, 10, 'the end of the computation', lambda line: LOG_LINE.match(line) and
             'ends here: closed by the scheduler' in line)

    def states():
        listing = _run(containers.engine + ['exec', name, 'sh', '-c',
                                            'cat /proc/[0-9]*/stat'], 60)
        assert listing.returncode == 0, listing.stderr.decode()
        # pid (comm) state ppid ...: comm may hold spaces, not ')'
        return sorted(line.rsplit(')', 1)[1].split()[0] for line in
                      listing.stdout.decode().splitlines() if line)
    # the zygote reaps each as it ends (SIGCHLD wakes it)
    wait_until(lambda: 'Z' not in states(), 5, 'the reaping of the zombies in the container')


# ---------------------------------------------------------------- Compose

def _compose_tool(engine):
    given = os.environ.get('ASYNCORO_TEST_COMPOSE')
    if given:
        return shlex.split(given)
    if engine == ['docker'] and _run(['docker', 'compose', 'version'], 30).returncode == 0:
        return ['docker', 'compose']
    return None


CLUSTER_CLIENT = r'''
import json, os, sys
import asyncoro.disasyncoro as asyncoro
from asyncoro.discoro import *
asyncoro.AsynCoro(udp_port=int(sys.argv[1]))

def where(coro=None):
    import os
    yield coro.sleep(0.5)           # long enough for the 4 jobs to be on 4 servers at once
    markers = [path for path in ('/run/.containerenv', '/.dockerenv') if os.path.exists(path)]
    return [coro.location.addr, bool(markers)]

def status(coro=None):
    coro.set_daemon()
    while True:
        msg = yield coro.receive()
        if isinstance(msg, DiscoroStatus) and msg.status == Scheduler.ServerInitialized:
            print('server', msg.info, flush=True)

def main(coro=None):
    computation = Computation([where], status_coro=asyncoro.Coro(status))
    assert (yield computation.schedule()) == 0
    servers = yield computation.servers()
    while len(servers) < 4:         # the nodes are found as they come; the test bounds it
        yield coro.sleep(0.2)
        servers = yield computation.servers()
    print('results', json.dumps(sorted((yield computation.run_results(where, [()] * 4)))),
          flush=True)
    yield computation.close()

asyncoro.Coro(main)
'''


@pytest.mark.deadline(180)
def test_the_compose_file_starts_a_scheduler_and_two_nodes(engine, processes):
    tool = _compose_tool(engine)
    if tool is None:
        pytest.skip('no Compose tool here (docker compose, or podman-compose in '
                    '$ASYNCORO_TEST_COMPOSE: `bash .ci/docker FILE` installs one)')
    project = 'asyncoro-test-%d' % os.getpid()
    given = ports()
    env = dict(os.environ, ASYNCORO_IMAGE=IMAGE, ASYNCORO_UDP_PORT=str(given['scheduler']),
               ASYNCORO_DISCORONODE_PORT=str(given['node']))
    command = tool + ['-p', project, '-f', COMPOSE_FILE]
    if os.path.basename(tool[0]).startswith('podman-compose'):
        # the engine's own options (the runtime), and this machine's ulimits
        command[1:1] = ['--podman-args=%s' % ' '.join(engine[1:]),
                        '--podman-run-args=%s' % ' '.join(LIMITS)]
    followers = []
    try:
        up = subprocess.run(command + ['up', '-d'], env=env, capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=120)
        assert up.returncode == 0, (up.stdout + up.stderr).decode()[-3000:]
        for service in ('scheduler', 'node1', 'node2'):
            found = _run(engine + ['ps', '-q', '--filter', 'label=com.docker.compose.project=%s'
                                   % project, '--filter',
                                   'label=com.docker.compose.service=%s' % service], 60)
            ids = found.stdout.decode().split()
            assert len(ids) == 1, (service, found.stdout, found.stderr)
            follower = Process(engine + ['logs', '-f', ids[0]], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            followers.append(follower)
            wait_for(follower, 60, 'the ready line of %s' % service,
                     lambda line: ' ready ' in line)
        code, lines, logs = finish(processes(CLUSTER_CLIENT, given['scheduler'], ready=False),
                                   90)
        assert code == 0, logs[-20:]
        results = json.loads([line for line in lines if line.startswith('results ')][0][8:])
        # each node's 2 servers ran a job, in a container
        assert results == [['127.0.0.2', True]] * 2 + [['127.0.0.3', True]] * 2, lines
    finally:
        down = subprocess.run(command + ['down'], env=env, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        left = _run(engine + ['ps', '-aq', '--filter',
                              'label=com.docker.compose.project=%s' % project], 60)
        for cid in left.stdout.decode().split():      # down failed: by id, then
            _run(engine + ['kill', cid], 60)
            _run(engine + ['rm', '-f', cid], 60)
        reap(followers, None)
    assert down.returncode == 0, (down.stdout + down.stderr).decode()[-3000:]
    assert not left.stdout.split(), 'compose down left containers: %s' % left.stdout
    found = unexpected_tracebacks(followers, ())
    assert not found, found
