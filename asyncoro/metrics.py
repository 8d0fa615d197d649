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
Prometheus takes every series of a target in one scrape, so the text is
not paged: at 1,024 nodes of 8 servers it has about 30,000 samples (2 MB;
the web application gzips it for a scraper that asks, as Prometheus
does). It is written SLICE samples per step of the caller's `step` hook
(asyncoro.monitor.Views has the same), so that the hub runs in between.
"""

import math
import time

from asyncoro.monitor import JobState, PlaceState, at_once

__all__ = []

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
SLICE = 1024            # samples written in one step

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
    def __init__(self, step):
        self.lines = []
        self.step = step

    def family(self, name, kind, text, records, sample):
        """HELP and TYPE of `name`, then a sample of each of `records`:
        sample(record) -> (labels dict, value), no sample when the value is
        None; SLICE records per step."""
        self.lines.append('# HELP %s %s' % (name, text.replace('\\', '\\\\')
                                                .replace('\n', '\\n')))
        self.lines.append('# TYPE %s %s' % (name, kind))
        for start in range(0, len(records), SLICE):
            self.lines += self.step('metrics: ' + name, _samples, name,
                                    records[start:start + SLICE], sample)

    def gauge(self, name, text, value):
        """A gauge of one sample, without labels."""
        self.family(name, 'gauge', text, [value], lambda value: ({}, value))


def _samples(name, records, sample):
    lines = []
    for record in records:
        labels, value = sample(record)
        if value is None:
            continue
        shown = ','.join('%s="%s"' % (key, _label(val)) for key, val in labels.items())
        lines.append('%s{%s} %s' % (name, shown, _number(value)) if shown
                     else '%s %s' % (name, _number(value)))
    return lines


def exposition(monitor, now=None, step=at_once):
    """The monitor's metrics as Prometheus text (a str ending in a newline);
    `step(what, func, *args)` runs each slice of it (see the module
    docstring)."""
    now = time.time() if now is None else now
    out = _Text(step)
    # lists made at once: between slices, the monitor's tables may change
    nodes = list(monitor.nodes.values())
    totals = list(monitor.totals.items())
    for key, name, text in _COUNTERS:
        out.family(name, 'counter', text, totals,
                   lambda item, key=key: ({'node': item[0]}, item[1][key]))
    out.family('asyncoro_jobs_running', 'gauge', 'Jobs running now', nodes,
               lambda node: ({'node': node.addr}, sum(len(s.jobs)
                                                      for s in node.servers.values())))
    out.family('asyncoro_servers_up', 'gauge', 'Server processes up', nodes,
               lambda node: ({'node': node.addr}, sum(1 for s in node.servers.values()
                                                      if s.state is PlaceState.UP)))
    out.family('asyncoro_node_up', 'gauge', '1 while the node serves the computation, else 0',
               nodes, lambda node: ({'node': node.addr}, int(node.state is PlaceState.UP)))
    for index, name, text in _NODE_GAUGES:
        out.family(name, 'gauge', text, nodes,
                   lambda node, index=index: ({'node': node.addr},
                                              node.avail[index] if node.avail else None))
    out.family('asyncoro_node_last_pulse_age_seconds', 'gauge',
               'Seconds since the node\'s last report of its load', nodes,
               lambda node: ({'node': node.addr}, round(now - node.last_report, 3)
                             if node.last_report else None))
    servers = list(monitor.servers.values())
    out.family('asyncoro_server_cpu_percent', 'gauge',
               'Percent of one CPU a server process used between its node\'s last two reports',
               servers, lambda server: _process(server, 'cpu'))
    out.family('asyncoro_server_resident_memory_bytes', 'gauge',
               'Resident memory of a server process', servers,
               lambda server: _process(server, 'rss'))
    computation = monitor.computation
    out.gauge('asyncoro_computation_running', '1 while the monitored computation runs, else 0',
              int(bool(computation) and computation.get('status') == 'running'))
    out.gauge('asyncoro_jobs_waiting', 'Jobs of the monitored computation waiting for a server',
              monitor.waiting)
    out.gauge('asyncoro_computations_queued',
              'Computations waiting in the shared scheduler\'s queue', len(monitor.queue))
    return '\n'.join(out.lines) + '\n'


def _process(server, figure):
    """(labels, value) of a figure of a server's process: none unless it is up."""
    process = server.process
    value = process[figure] if process and server.state is PlaceState.UP else None
    return {'node': server.node.addr, 'server': server.location}, value
