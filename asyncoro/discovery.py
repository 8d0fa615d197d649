"""asyncoro.discovery: how runtimes find each other on a network.

What it owns: `Discovery`, one per distributed runtime: its UDP socket, the
pings it sends (broadcast on its own network, or to one host) and what it
does with those it hears.

How it works: a ping is a signed JSON datagram (netio.encode_ping) saying
where its runtime listens. It is broadcast only on the bound address's own
network (127.255.255.255 when bound to 127.0.0.1), never to
255.255.255.255. Who hears a ping from a runtime it does not know connects
to it (Peers.reach): the connection's first frame introduces the connecting
runtime. A ping signed with another secret is said once per sender, and
answered with a connection attempt, so that both sides log that the secrets
differ.
"""

import logging

import gevent

import asyncoro
from asyncoro import netio
from asyncoro.netio import Location
from asyncoro.failure import spawn

__all__ = []

log = logging.getLogger(__name__)


class Discovery:
    """Discovery for runtime `rt` (its location, name, key), which knows its
    peers through `peers` (asyncoro.peers). `start()` binds the UDP port (on
    every address, unless `bind_addr` names one)."""

    def __init__(self, rt, peers, key, node, udp_port, bind_addr=''):
        self.rt = rt
        self.peers = peers
        self.node = node                # the bound address (whose network is pinged)
        self.udp_port = udp_port
        self.bind_addr = bind_addr      # where its UDP socket listens ('': every address)
        self.ignoring = False           # pings from others are ignored (ignore_peers)
        self.closing = False
        self._key = key
        self._udp = None
        self._told_other_secret = set()     # addresses whose other-secret pings were logged

    def start(self, ping):
        """Bind the UDP port and listen (and `ping`: broadcast one now). A
        port that cannot be bound disables discovery, with a WARNING."""
        try:
            self._udp = netio.udp_socket(self.udp_port, addr=self.bind_addr)
        except OSError as exc:
            log.warning('discovery disabled: cannot bind udp port %s: %s', self.udp_port, exc)
            return
        spawn(self._listen)
        if ping:
            self.broadcast()

    def stop(self):
        self.closing = True
        if self._udp is not None:
            self._udp.close()

    def broadcast(self, port=None):
        """A ping on this runtime's network, to `port` (None: its own)."""
        target = netio.broadcast_address(self.node)
        if target is None:
            log.warning('no broadcast address for %s: discovery pings not sent', self.node)
            return
        self.ping(target, port or self.udp_port, False)

    def ping(self, addr, port, broadcast):
        """A ping to `addr`:`port` (asking it to broadcast one of its own):
        0, or -1 if it cannot be sent."""
        if self._udp is None:
            return -1
        rt = self.rt
        datagram = netio.encode_ping(self._key, {
            'location': [rt.location.addr, rt.location.port], 'name': rt.name,
            'version': asyncoro.__version__, 'broadcast': bool(broadcast)})
        try:
            self._udp.sendto(datagram, (addr, port))
        except OSError as exc:
            log.warning('discovery ping to %s:%s failed: %s', addr, port, exc)
            return -1
        return 0

    def _listen(self):
        while not self.closing:
            try:
                datagram, addr = self._udp.recvfrom(4096)
            except OSError as exc:
                if self.closing:
                    return
                log.warning('discovery socket failed: %s', exc)
                gevent.sleep(0.1)
                continue
            info = netio.decode_ping(self._key, datagram)
            if info is None:
                self._other_secret(netio.unverified_ping(datagram), addr)
                continue
            if self.ignoring:
                continue
            try:
                location = Location(*info['location'])
            except (KeyError, TypeError, ValueError, OSError):
                continue
            if location == self.rt.location:
                continue
            if info.get('broadcast'):
                self.broadcast()
            self.peers.reach(location)

    def _other_secret(self, claimed, addr):
        """A ping signed with another secret (or damaged): once per sender,
        say so, and try a connection to where it claims to listen, so that
        both sides log that the secrets differ."""
        if claimed is None or self.ignoring or addr[0] in self._told_other_secret:
            return
        self._told_other_secret.add(addr[0])
        try:
            location = Location(*claimed['location'])
        except (KeyError, TypeError, ValueError, OSError):
            location = None
        self.peers.auth_failures[addr[0]] = 'its discovery pings are signed with another secret'
        log.warning('discovery ping from %s (%s, %s) is signed with another secret (or damaged); '
                    'ignored', addr[0], claimed.get('name'), location)
        if location is not None and location != self.rt.location:
            self.peers.reach(location)
