"""asyncoro.discoro: ship computations to server processes on nodes; and the
discoro.py program, the scheduler that several clients share.

What it owns: the public face of discoro (`from asyncoro.discoro import *`
gives `Computation`, `Scheduler`, the status messages and records, as in
asyncoro 4.5), and `main()`, the discoro.py program. The parts live in
asyncoro.client (Computation), asyncoro.scheduler (Scheduler),
asyncoro.records (the records), asyncoro.node and asyncoro.server (what
nodes run) and asyncoro.service (how they talk).

`MsgTimeout` read or assigned here is the one of the whole package
(asyncoro.MsgTimeout). docs/guide/discoro.rst is the user's guide to all of
it, docs/programs.rst lists the program's options.
"""

import logging
import os
import sys
import threading
import time

import asyncoro
from asyncoro import disasyncoro
from asyncoro.core import _ShowsMsgTimeout
from asyncoro.client import Computation
from asyncoro.programs import (Parser, add_runtime_options, check_frame_size, check_tls,
                               console, end_on_signals, host, in_background, port, port_or_any,
                               seconds, start_runtime, wait_for_end)
from asyncoro.records import (CoroInfo, DiscoroCoroInfo, DiscoroJobLost,  # noqa: F401
                              DiscoroNodeAllocate, DiscoroNodeAvailInfo,  # (the names
                              DiscoroNodeInfo, DiscoroStatus,             # programs read
                              MaxPulseInterval, MinPulseInterval)         # here)
from asyncoro.scheduler import Scheduler

__all__ = ['Scheduler', 'Computation', 'DiscoroStatus', 'DiscoroCoroInfo', 'CoroInfo',
           'DiscoroNodeInfo', 'DiscoroNodeAvailInfo', 'DiscoroNodeAllocate',
           'DiscoroJobLost']      # (the last is this package's: the mark of a lost job)

log = logging.getLogger(__name__)

# programs read asyncoro.discoro.MinPulseInterval with `asyncoro` bound to either
# the package or asyncoro.disasyncoro
asyncoro.discoro = disasyncoro.discoro = sys.modules[__name__]
sys.modules[__name__].__class__ = _ShowsMsgTimeout


# ---------------------------------------------------------------- the discoro.py program

def _parser():
    parser = Parser(
        prog='discoro.py', description='Run the discoro scheduler for several clients: their '
        'computations run one at a time, in the order they were scheduled.')
    add = parser.add_argument
    add('-i', '--ip_addr', type=host, default=None,
        help='the address (or host name) to listen on and announce (default: '
        '$ASYNCORO_NODE, else the first interface with a broadcast address)')
    add('--ext_ip_addr', type=host, default=None,
        help='the address to announce instead of --ip_addr, for a scheduler behind NAT; it '
        'still listens on --ip_addr (default: none)')
    add('-u', '--udp_port', type=port, default=None,
        help='the UDP port where clients and nodes look for it (default $ASYNCORO_UDP_PORT, '
        'else 51350)')
    add('-t', '--tcp_port', type=port_or_any, default=0,
        help='the TCP port to listen on (default 0: any free port; give one to reach it '
        'through a firewall or with --peer)')
    add('-n', '--name', default='discoro_scheduler',
        help='the name of its runtime, as peers see it (default %(default)s)')
    add('--node', type=host, action='append', default=[], metavar='HOST',
        help='a node host in another network, asked at the start and again every '
        '--ping_interval; repeatable (nodes on its own network find it by themselves)')
    add_runtime_options(add)
    add('--pulse_interval', type=seconds, default=None,
        help='look at the nodes at least this often, in seconds: a silent node is dropped, '
        'a lost one asked whether it is back, a busy one asked again (default: each '
        'computation\'s pulse_interval; at least 1)'),
    add('--ping_interval', type=seconds, default=0,
        help='look for nodes again every this many seconds, on its network and at the '
        '--node hosts (default 0: only at the start)')
    add('--zombie_period', type=seconds, default=10 * MaxPulseInterval,
        help='close a computation whose client is unreachable, or that runs no job, for '
        'this many seconds (default %(default)g; 0: never)')
    add('--discoronode_port', type=port, default=None,
        help="the UDP port nodes listen on (default $ASYNCORO_DISCORONODE_PORT, else 51351)")
    add('--clean', action='store_true',
        help="delete the files left in its folder by an earlier run, at the start")
    add('--daemon', action='store_true',
        help='do not read commands from standard input (implied when started in the '
        'background)')
    add('-d', '--debug', action='store_true', help='log at DEBUG level: every message')
    return parser


def main(argv=None):
    """The discoro.py program.

    :param argv: its arguments; None: ``sys.argv[1:]``.
    :returns: its exit status.
    """
    parser = _parser()
    options = parser.parse_args(argv)
    if options.zombie_period and options.zombie_period < 1:
        parser.error('--zombie_period must be 0 (never) or at least 1')
    if options.pulse_interval is not None and options.pulse_interval < 1:
        parser.error('--pulse_interval must be at least 1 second, not %g'
                     % options.pulse_interval)
    check_tls(parser, options.certfile, options.keyfile)
    check_frame_size(parser, options.max_frame_size)
    disasyncoro.logger.setLevel(logging.DEBUG if options.debug else logging.INFO)
    node = options.ip_addr or disasyncoro.default_node()
    rt = start_runtime('discoro', 'is another scheduler running? Choose another port with -t',
                       node=node, ext_ip_addr=options.ext_ip_addr,
                       udp_port=options.udp_port, tcp_port=options.tcp_port,
                       name=options.name, dest_path=options.dest_path,
                       max_file_size=options.max_file_size,
                       max_frame_size=options.max_frame_size, secret=options.secret,
                       certfile=options.certfile, keyfile=options.keyfile)
    scheduler = Scheduler(zombie_period=options.zombie_period,
                          ping_interval=options.ping_interval, clean=options.clean,
                          pulse_interval=options.pulse_interval,
                          nodes=options.node, **({'discoronode_port': options.discoronode_port}
                                                 if options.discoronode_port else {}))
    print('discoro scheduler ready %s pid=%d' % (rt.location, os.getpid()), flush=True)
    if options.node:
        threading.Thread(target=_check_nodes, args=(scheduler, options.node),
                         daemon=True).start()
    done = threading.Event()
    end_on_signals(done)
    if not options.daemon and not in_background():
        threading.Thread(target=_console, args=(scheduler, done), daemon=True).start()
    wait_for_end(done)
    scheduler.shut_down()
    rt.terminate()
    return 0


def _check_nodes(scheduler, nodes):
    """Say which --node hosts did not answer (wrong address, port or secret)."""
    time.sleep(asyncoro.MsgTimeout)
    known = set(scheduler.node_addresses())
    for addr in nodes:
        if addr not in known:
            log.warning('no discoro node answered at %s (is discoronode.py running there, '
                        'with this secret and UDP port %s?)', addr, scheduler.node_port)


_MENU = 'commands: status (or an empty line), quit or exit'


def _console(scheduler, done):
    def status():
        state = scheduler.status()
        print('Client: %s\nPending: %d\nnodes: %d\nservers: %d'
              % (state['Client'] or '-', state['Pending'], len(state['Nodes']),
                 len(state['Servers'])), flush=True)
    console({'': status, 'status': status, 'quit': done.set, 'exit': done.set}, _MENU, done)


if __name__ == '__main__':
    # run the package's module, not this copy: messages must pickle as asyncoro.discoro's
    from asyncoro.discoro import main as _main
    sys.exit(_main())
