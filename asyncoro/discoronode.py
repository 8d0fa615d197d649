"""asyncoro.discoronode: the discoronode.py program.

What it owns: the program's options (with --save_config/--config), its
console, and `main()`, which starts a node: the zygote (asyncoro.server)
first, before any hub, thread or socket, then the runtime and the node's
service (asyncoro.node).

How it works: every option value is checked before anything starts; a bad
one is one line naming the option and the value, and exit status 2. The
node keeps its files in a folder of its own, `<dest_path>/discoro/node-<n>`
(the first one no other live process holds), so that two nodes, or a node
and a scheduler, never share one. Its ready line says where it listens and
which folder it has. docs/programs.rst describes the program for its
users.
"""

import argparse
import configparser
import logging
import os
import signal
import socket
import sys
import tempfile
import threading

from asyncoro import disasyncoro
from asyncoro.disasyncoro import DEFAULT_UDP_PORT, Location, env_port
from asyncoro.node import NodeService, Windows, clock
from asyncoro.programs import (Parser, add_runtime_options, check_frame_size, check_tls,
                               claim_folder, console, end_on_signals, host, host_port,
                               in_background, new_file, port, port_ranges, seconds,
                               start_runtime, wait_for_end)
from asyncoro.records import DEFAULT_NODE_PORT, MaxPulseInterval, MinPulseInterval
from asyncoro.server import start_zygote

__all__ = []

log = logging.getLogger(__name__)


def server_ports(specs, count):
    """The TCP ports of the node (first) and `count` servers: ranges and
    single ports as given, continued past the highest one.

    :param specs: the --tcp_ports values.
    :returns: `count` + 1 ports (0: any).
    :raises ValueError: when they would go above 65535.
    """
    ports = []
    for spec in specs or []:
        for part in str(spec).split(','):
            if '-' in part:
                low, high = (int(x) for x in part.split('-', 1))
                ports.extend(range(low, high + 1))
            elif part:
                ports.append(int(part))
    if not ports:
        return [0] * (count + 1)
    while len(ports) < count + 1:
        ports.append(max(ports) + 1)
    if ports[count] > 65535:
        raise ValueError('--tcp_ports: %d servers and the node need ports up to %d (above '
                         '65535)' % (count, ports[count]))
    return ports[:count + 1]


def servers_wanted(value):
    """The servers -c asks for: 0 one per CPU, n > 0 that many, n < 0 all
    CPUs but n.

    :raises ValueError: when that leaves none.
    """
    total = os.cpu_count() or 1
    if value == 0:
        return total
    if value > 0:
        return value
    if total + value < 1:
        raise ValueError('-c %d leaves no server on %d CPUs' % (value, total))
    return total + value


def _parser():
    parser = Parser(prog='discoronode.py',
                    description='Run a discoro node: it waits for a scheduler, and runs '
                    'the server processes of one computation at a time.')
    add = parser.add_argument
    add('-c', '--cpus', type=int, default=0,
        help='how many server processes to run: n > 0 that many (more than the CPUs is '
        'allowed), n < 0 all CPUs but n (default 0: one per CPU)')
    _add_address_options(add)
    add_runtime_options(add)
    _add_service_options(add)
    _add_start_options(add)
    return parser


def _add_address_options(add):
    """Where the node listens, what it announces, and its name."""
    add('-i', '--ip_addr', type=host, default=None,
        help='the address (or host name) to listen on and announce (default: '
        '$ASYNCORO_NODE, else the first interface with a broadcast address)')
    add('--ext_ip_addr', type=host, default=None,
        help='the address to announce instead of --ip_addr, for a node behind NAT; it '
        'still listens on --ip_addr (default: none)')
    add('-u', '--udp_port', type=port,
        default=env_port('ASYNCORO_DISCORONODE_PORT', DEFAULT_NODE_PORT),
        help='the UDP port where schedulers look for nodes (default '
        '$ASYNCORO_DISCORONODE_PORT, else 51351)')
    add('--scheduler_port', type=port,
        default=env_port('ASYNCORO_UDP_PORT', DEFAULT_UDP_PORT),
        help="the UDP port where it tells schedulers it is there (default "
        "$ASYNCORO_UDP_PORT, else 51350)")
    add('--tcp_ports', type=port_ranges, action='append', default=[],
        help="TCP ports: n, n1-n2 or several joined by commas; repeatable. The node takes "
        "the first, its servers the next ones (default: any free ports)")
    add('-n', '--name', default=None,
        help="the node's name, as schedulers and the monitor show it (default: this "
        "machine's host name)")


def _add_service_options(add):
    """How the node serves computations: pulses, idle ends, its service window."""
    add('--min_pulse_interval', type=seconds, default=MinPulseInterval,
        help='the shortest pulse interval it keeps, whatever a computation asks '
        '(default %(default)g seconds; at least 1)')
    add('--max_pulse_interval', type=seconds, default=MaxPulseInterval,
        help='the longest pulse interval it keeps (default %(default)g seconds)')
    add('--zombie_period', type=seconds, default=10 * MaxPulseInterval,
        help='end a computation that has had no job for this many seconds (default '
        '%(default)g; 0: never)')
    add('--ping_interval', type=seconds, default=0,
        help='while it has no computation, tell schedulers again every this many seconds '
        '(default 0: only at the start and when it is free again)')
    add('--msg_timeout', type=seconds, default=disasyncoro.MsgTimeout,
        help='seconds to wait for an answer from a peer, in the node and its servers '
        '(default %(default)g; at least 1)')
    add('--serve', type=int, default=-1,
        help='quit after this many computations (default -1: never)')
    add('--service_start', default=None, metavar='HH:MM',
        help='take computations from this time of day (default: from the start)')
    add('--service_stop', default=None, metavar='HH:MM',
        help='from this time of day, running jobs finish and no new ones start (default: '
        'never)')
    add('--service_end', default=None, metavar='HH:MM',
        help='at this time of day, running jobs are killed (default: never)')


def _add_start_options(add):
    """How the program starts: servers left over, peers to call, standard
    input, its configuration file, logging."""
    add('--clean', action='store_true',
        help='kill servers left running by an earlier run of a node in this folder (their '
        'PID files say which); without it the node refuses to start over them')
    add('--peer', type=host_port, action='append', default=[], metavar='HOST:PORT',
        help="a scheduler's (or other peer's) TCP address to contact at the start, for one "
        "in another network; repeatable")
    add('--daemon', action='store_true',
        help='do not read commands from standard input (implied when started in the '
        'background)')
    add('--save_config', type=new_file, default=None, metavar='FILE',
        help="save every option's value (defaults included; not --ip_addr, --ext_ip_addr "
        "and --name) in FILE and exit")
    add('--config', default=None, metavar='FILE',
        help='read the options from FILE (made by --save_config); options on the command '
        'line win')
    add('-d', '--debug', action='store_true', help='log at DEBUG level: every message')


# options that belong to one node, never saved for the others
_NODE_OWN = ('ip_addr', 'ext_ip_addr', 'name', 'save_config', 'config')
_CONFIG_MARK = 'discoronode'


def save_config(parser, options, path):
    """Write the value of every option (defaults and values taken from the
    environment included; not the node's own address and name) to the INI
    file `path`, for --config."""
    config = configparser.ConfigParser(interpolation=None)
    config['DEFAULT']['program'] = _CONFIG_MARK
    for action in parser._actions:
        value = getattr(options, action.dest, None)
        if action.dest in _NODE_OWN or action.dest == 'help' or value is None:
            continue
        config['DEFAULT'][action.dest] = (' '.join(value) if isinstance(value, list)
                                          else str(value))
    with open(path, 'w') as f:
        f.write('# discoronode.py options (discoronode.py --config %s)\n'
                % os.path.basename(path))
        config.write(f)


def load_config(parser, path):
    """The options saved in a file by `save_config`.

    :returns: {dest: value}.
    :raises ValueError: saying what is wrong with the file.
    """
    config = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            config.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ValueError('--config %s: not a discoronode.py config file (%s)'
                         % (path, str(exc).splitlines()[0])) from exc
    section = config['DEFAULT']
    if section.get('program') != _CONFIG_MARK or config.sections():
        raise ValueError('--config %s: not a discoronode.py config file (save one with '
                         '--save_config)' % path)
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, text in section.items():
        if key == 'program':
            continue
        action = actions.get(key)
        if action is None or key in _NODE_OWN:
            raise ValueError('--config %s: unknown option %r' % (path, key))
        try:
            if isinstance(action, argparse._StoreTrueAction):
                values[key] = section.getboolean(key)
            elif isinstance(action, argparse._AppendAction):
                values[key] = [action.type(part) if action.type else part
                               for part in text.split()]
            elif text == 'None':
                values[key] = None
            else:
                values[key] = action.type(text) if action.type else text
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ValueError('--config %s: bad value for %s: %r' % (path, key, text)) from exc
    return values


def options_of(argv):
    """The program's options, each checked.

    :raises SystemExit: 2 with one line for a bad one; 0 after --save_config.
    """
    parser = _parser()
    options = parser.parse_args(argv)
    if options.config:
        try:
            values = load_config(parser, options.config)
        except ValueError as exc:
            parser.error(str(exc))
        # the command line wins; a repeatable option given there replaces the file's
        for dest, value in list(values.items()):
            if isinstance(value, list) and getattr(options, dest):
                del values[dest]
        options = parser.parse_args(argv, argparse.Namespace(**values))
    if options.save_config:
        save_config(parser, options, options.save_config)
        print('options saved in %s' % options.save_config)
        raise SystemExit(0)
    try:
        options.cpus = servers_wanted(options.cpus)
        ports = server_ports(options.tcp_ports, options.cpus)
        options.node_port, options.server_ports = ports[0], ports[1:]
        options.windows = Windows(*(None if text is None else clock('--service_' + name, text)
                                    for name, text in (('start', options.service_start),
                                                       ('stop', options.service_stop),
                                                       ('end', options.service_end))))
    except ValueError as exc:
        parser.error(str(exc))
    check_tls(parser, options.certfile, options.keyfile)
    check_frame_size(parser, options.max_frame_size)
    if options.msg_timeout < 1:
        parser.error('--msg_timeout must be at least 1')
    if options.min_pulse_interval < 1:
        parser.error('--min_pulse_interval must be at least 1')
    if options.max_pulse_interval < options.min_pulse_interval:
        parser.error('--max_pulse_interval must be >= --min_pulse_interval')
    if options.zombie_period and options.zombie_period < options.min_pulse_interval:
        parser.error('--zombie_period must be 0 or >= --min_pulse_interval')
    if options.serve == 0 or options.serve < -1:
        parser.error('--serve must be -1 (no limit) or a positive number')
    options.name = options.name or socket.gethostname()
    base = options.dest_path or os.path.join(tempfile.gettempdir(), 'asyncoro')
    options.dest_path = os.path.abspath(base)
    return options


def _is_server(pid):
    """Whether `pid` runs a discoronode server (a PID file may outlive its
    process, and the number may have gone to another program since)."""
    try:
        import psutil
        return any('discoronode' in part for part in psutil.Process(pid).cmdline())
    except ImportError:
        pass
    except Exception:      # psutil.NoSuchProcess, AccessDenied, ZombieProcess
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _stale_servers(node_dir, clean):
    """Deal with pid files of servers from an earlier run: kill them with
    --clean, otherwise refuse to start while one still runs."""
    for entry in os.listdir(node_dir):
        if not (entry.startswith('discoroproc-') and entry.endswith('.pid')):
            continue
        path = os.path.join(node_dir, entry)
        try:
            with open(path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        alive = bool(pid) and _is_server(pid)
        if alive and not clean:
            raise SystemExit('a server from an earlier run (pid %d, %s) is still running; '
                             'stop it or start with --clean' % (pid, path))
        if alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.remove(path)


def main(argv=None):
    """The discoronode.py program.

    :param argv: its arguments; None: ``sys.argv[1:]``.
    :returns: its exit status.
    """
    options = options_of(argv)
    options.node_dir = claim_folder(os.path.join(options.dest_path, 'discoro'), 'node')
    _stale_servers(options.node_dir, options.clean)
    # before any runtime, thread or socket: the zygote that forks servers
    zygote = start_zygote()
    disasyncoro.logger.setLevel(logging.DEBUG if options.debug else logging.INFO)
    disasyncoro.MsgTimeout = options.msg_timeout
    if not options.ip_addr:
        options.ip_addr = disasyncoro.default_node()
    try:
        rt = start_runtime('discoronode', 'is another discoronode running? Choose other ports '
                           'with --tcp_ports', node=options.ip_addr, tcp_port=options.node_port,
                           udp_port=options.udp_port, ext_ip_addr=options.ext_ip_addr,
                           name='%s_proc-0' % options.name, discover_peers=False,
                           secret=options.secret, certfile=options.certfile,
                           keyfile=options.keyfile, dest_path=options.node_dir,
                           max_file_size=options.max_file_size,
                           max_frame_size=options.max_frame_size)
    except SystemExit:
        os.kill(zygote[0], signal.SIGKILL)
        raise
    node = rt._run_here(NodeService, options, zygote)
    log.info('network server "%s_proc-0" @ %s, udp_port=%s', options.name, rt.location,
             options.udp_port)
    print('discoronode ready %s pid=%d servers=%d dir=%s' % (rt.location, os.getpid(),
                                                            options.cpus, options.node_dir),
          flush=True)
    rt.discover_peers(port=options.scheduler_port)
    for peer in options.peer:
        rt.peer(Location(*peer.rsplit(':', 1)))
    end_on_signals(node.quit, ('SIGTERM', 'SIGHUP', 'SIGQUIT'))
    if not options.daemon and in_background():
        options.daemon = True
    if not options.daemon:
        threading.Thread(target=_console, args=(node, rt), daemon=True).start()
    try:
        wait_for_end(node.quit)
    except KeyboardInterrupt:
        pass
    rt._run_here(node.stop_node)
    rt.terminate()
    return 0


_MENU = ('commands: status (or an empty line), close (the current computation), '
         'quit or exit (when running jobs are done), terminate (now)')


def _console(node, rt):
    """The console (a thread): see programs.console for the end of its input."""
    def status():
        print('\n'.join(rt._run_here(node.status_lines)), flush=True)

    def close():
        comp = node.comp
        if comp is None:
            print('no computation to close', flush=True)
        else:
            rt._run_here(node.end_computation, comp, 'closed from the console')

    def finish():
        print('quitting when the running jobs are done', flush=True)
        rt._run_here(node.finish)

    console({'': status, 'status': status, 'close': close, 'quit': finish, 'exit': finish,
             'terminate': node.quit.set}, _MENU, node.quit)


if __name__ == '__main__':
    # run the package's module, not this copy: messages must pickle as the package's
    from asyncoro.discoronode import main as _main
    sys.exit(_main())
