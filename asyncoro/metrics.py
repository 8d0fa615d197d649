"""asyncoro.metrics: the web monitor's state for Prometheus (`GET /metrics`).

What it owns: `exposition(monitor)`, the text of Prometheus' text exposition
format (version 0.0.4) for one asyncoro.monitor.Monitor, and its content
type.

How it works: every family is written with its HELP and TYPE lines, and one
sample per node (label `node`, the node's address) or per server process
(labels `node` and `server`). The job counters are the monitor's `totals`:
they count every job since the monitor started, across computations, so
they only grow (what Prometheus expects of a counter); the gauges describe
the current computation. A figure a node did not report has no sample.
"""

import math
import time

from asyncoro.monitor import JobState, PlaceState

__all__ = []

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

_COUNTERS = (('submitted', 'asyncoro_jobs_submitted_total', 'Jobs submitted to the node'),
             (JobState.FINISHED, 'asyncoro_jobs_finished_total', 'Jobs that finished normally'),
             (JobState.FAILED, 'asyncoro_jobs_failed_total',
              'Jobs that ended with an exception'),
             (JobState.TERMINATED, 'asyncoro_jobs_terminated_total',
              'Jobs terminated from the monitor'),
             (JobState.LOST, 'asyncoro_jobs_lost_total',
              'Jobs lost with their server (its process or node died, or the computation '
              'closed under it)'))

# (index in a node's avail figures, name, help)
_NODE_GAUGES = ((0, 'asyncoro_node_cpu_idle_percent', 'Percent of the node\'s CPU idle'),
                (1, 'asyncoro_node_memory_available_bytes', 'Memory available on the node'),
                (2, 'asyncoro_node_disk_free_bytes',
                 'Disk space free where the node keeps files'),
                (3, 'asyncoro_node_swap_free_percent', 'Percent of the node\'s swap free'))


def _label(value):
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _number(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    return repr(float(value))


class _Text:
    def __init__(self):
        self.lines = []

    def family(self, name, kind, text, samples):
        """HELP and TYPE of `name`, then its samples: (labels dict, value);
        a None value has no sample."""
        self.lines.append('# HELP %s %s' % (name, text.replace('\\', '\\\\')
                                                .replace('\n', '\\n')))
        self.lines.append('# TYPE %s %s' % (name, kind))
        for labels, value in samples:
            if value is None:
                continue
            shown = ','.join('%s="%s"' % (key, _label(val)) for key, val in labels.items())
            self.lines.append('%s{%s} %s' % (name, shown, _number(value)) if shown
                              else '%s %s' % (name, _number(value)))


def exposition(monitor, now=None):
    """The monitor's metrics as Prometheus text (a str ending in a newline)."""
    now = time.time() if now is None else now
    out = _Text()
    nodes = list(monitor.nodes.values())
    for key, name, text in _COUNTERS:
        out.family(name, 'counter', text, [({'node': addr}, totals[key])
                                           for addr, totals in monitor.totals.items()])
    out.family('asyncoro_jobs_running', 'gauge', 'Jobs running now',
               [({'node': node.addr}, sum(len(s.jobs) for s in node.servers.values()))
                for node in nodes])
    out.family('asyncoro_servers_up', 'gauge', 'Server processes up',
               [({'node': node.addr}, sum(1 for s in node.servers.values()
                                          if s.state is PlaceState.UP))
                for node in nodes])
    out.family('asyncoro_node_up', 'gauge', '1 while the node serves the computation, else 0',
               [({'node': node.addr}, int(node.state is PlaceState.UP)) for node in nodes])
    for index, name, text in _NODE_GAUGES:
        out.family(name, 'gauge', text, [({'node': node.addr}, node.avail[index])
                                         for node in nodes if node.avail])
    out.family('asyncoro_node_last_pulse_age_seconds', 'gauge',
               'Seconds since the node\'s last report of its load',
               [({'node': node.addr}, round(now - node.last_report, 3))
                for node in nodes if node.last_report])
    processes = [(server, server.process) for server in monitor.servers.values()
                 if server.process and server.state is PlaceState.UP]
    out.family('asyncoro_server_cpu_percent', 'gauge',
               'Percent of one CPU a server process used between its node\'s last two reports',
               [({'node': server.node.addr, 'server': server.location}, process['cpu'])
                for server, process in processes])
    out.family('asyncoro_server_resident_memory_bytes', 'gauge',
               'Resident memory of a server process',
               [({'node': server.node.addr, 'server': server.location}, process['rss'])
                for server, process in processes])
    computation = monitor.computation
    out.family('asyncoro_computation_running', 'gauge',
               '1 while the monitored computation runs, else 0',
               [({}, int(bool(computation) and computation.get('status') == 'running'))])
    out.family('asyncoro_jobs_waiting', 'gauge',
               'Jobs of the monitored computation waiting for a server',
               [({}, monitor.waiting)])
    out.family('asyncoro_computations_queued', 'gauge',
               'Computations waiting in the shared scheduler\'s queue',
               [({}, len(monitor.queue))])
    return '\n'.join(out.lines) + '\n'
