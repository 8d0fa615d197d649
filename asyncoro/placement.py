"""asyncoro.placement: which server a job goes to, in O(log n) of the servers.

What it owns: `Placement`, the scheduler's bookkeeping of which servers are
ready, free and loaded, and its two choices:

- a CPU-bound job (one at a time per server) goes to a free server of the
  least loaded node (the share of its servers busy with CPU jobs), nodes
  with the same load taking turns;
- an async job goes to the node with the fewest jobs of any kind per ready
  server, and there to its server with the fewest jobs, again taking turns.

How it works: each usable node keeps its free servers in an ordered set and
its servers in a heap by their number of jobs; the nodes are in two heaps,
one by CPU load and one by jobs per server. A change (a server ready or
gone, a job started or ended, a node no longer usable) pushes the node's or
server's new key and marks it current; old keys stay in the heap until they
come to its top, where a key that is not current is dropped (a lazy heap).
So a choice costs O(log n) and a change O(log n), never a scan of the
servers. A heap that has gathered many old keys is rebuilt from the current
ones (amortised O(1) per change). The scheduler (asyncoro.scheduler) owns
the objects; this module only counts and orders them, in the hub thread.
"""

import heapq
import itertools

__all__ = []

_REBUILD = 4        # a heap with more than this many keys per entry is rebuilt


class Slot:
    """What placement keeps of one server (the scheduler's _Server has one)."""

    __slots__ = ('server', 'node', 'ready', 'busy', 'jobs', 'key')

    def __init__(self, server, node):
        self.server = server
        self.node = node            # the NodeSlot
        self.ready = False
        self.busy = False           # running a CPU-bound job
        self.jobs = 0               # jobs of any kind running on it
        self.key = None             # its current key in node.by_jobs


class NodeSlot:
    """What placement keeps of one node (the scheduler's _Node has one)."""

    __slots__ = ('node', 'usable', 'slots', 'free', 'by_jobs', 'ready', 'busy', 'jobs',
                 'cpu_key', 'async_key')

    def __init__(self, node):
        self.node = node
        self.usable = False         # it runs the computation and takes jobs
        self.slots = set()          # its servers' Slots, ready or not
        self.free = {}              # Slot -> None: ready servers without a CPU job, in order
        self.by_jobs = []           # heap of (jobs, turn, push, Slot)
        self.ready = 0              # ready servers
        self.busy = 0               # of them, running a CPU job
        self.jobs = 0               # jobs of any kind on its servers
        self.cpu_key = None         # its current key in Placement.by_load
        self.async_key = None       # its current key in Placement.by_jobs


class Placement:
    """The choices and the counts (see the module docstring)."""

    def __init__(self):
        self.by_load = []           # heap of (busy/ready, turn, push, NodeSlot)
        self.by_jobs = []           # heap of (jobs/ready, turn, push, NodeSlot)
        self._turns = itertools.count()
        self._pushes = itertools.count()     # a key's third field: no two keys are equal
        self.usable = set()         # the usable NodeSlots
        self.ready = 0              # ready servers of usable nodes

    def node_slot(self, node):
        return NodeSlot(node)

    def server_slot(self, server, node_slot):
        slot = Slot(server, node_slot)
        node_slot.slots.add(slot)
        return slot

    # ---------------- keys

    def _push_node(self, node, turn=None):
        """Push `node`'s current keys (a node that is not usable has none)."""
        if not node.usable or not node.ready:
            node.cpu_key = node.async_key = None
            return
        if turn is None:        # the node keeps its place among its equals
            cpu_turn = node.cpu_key[1] if node.cpu_key else next(self._turns)
            async_turn = node.async_key[1] if node.async_key else cpu_turn
        else:                   # a job started there: behind its equals
            cpu_turn = async_turn = turn
        node.cpu_key = (node.busy / node.ready, cpu_turn, next(self._pushes), node)
        heapq.heappush(self.by_load, node.cpu_key)
        node.async_key = (node.jobs / node.ready, async_turn, next(self._pushes), node)
        heapq.heappush(self.by_jobs, node.async_key)
        # each heap on its own: CPU jobs pop old keys from by_load only, so
        # by_jobs would otherwise grow by a key per job for good
        bound = _REBUILD * len(self.usable) + 64
        if len(self.by_load) > bound:
            self.by_load = [n.cpu_key for n in self.usable if n.cpu_key is not None]
            heapq.heapify(self.by_load)
        if len(self.by_jobs) > bound:
            self.by_jobs = [n.async_key for n in self.usable if n.async_key is not None]
            heapq.heapify(self.by_jobs)

    def _push_slot(self, slot, turn=None):
        if not slot.ready:
            slot.key = None
            return
        if turn is None:
            turn = slot.key[1] if slot.key else next(self._turns)
        slot.key = (slot.jobs, turn, next(self._pushes), slot)
        node = slot.node
        heapq.heappush(node.by_jobs, slot.key)
        if len(node.by_jobs) > _REBUILD * len(node.slots) + 16:
            node.by_jobs = [s.key for s in node.slots if s.key is not None]
            heapq.heapify(node.by_jobs)

    # ---------------- changes

    def set_usable(self, node, usable):
        """The node runs the computation and takes jobs (or no longer)."""
        if node.usable == usable:
            return
        node.usable = usable
        if usable:
            self.usable.add(node)
        else:
            self.usable.discard(node)
            if not self.usable:         # the computation is over: its old keys go too
                self.by_load, self.by_jobs = [], []
        self.ready += node.ready if usable else -node.ready
        self._push_node(node)

    def set_ready(self, slot, ready):
        """A server is ready for jobs (or gone)."""
        if slot.ready == ready:
            return
        node = slot.node
        slot.ready = ready
        node.ready += 1 if ready else -1
        if node.usable:
            self.ready += 1 if ready else -1
        if ready:
            if not slot.busy:
                node.free[slot] = None
            self._push_slot(slot)
        else:
            node.free.pop(slot, None)
            slot.key = None
            if slot.busy:
                node.busy -= 1
                slot.busy = False
            node.jobs -= slot.jobs
            slot.jobs = 0
        self._push_node(node)

    def forget(self, slot):
        """The server is gone for good."""
        self.set_ready(slot, False)
        slot.node.slots.discard(slot)

    def started(self, slot, cpu):
        """A job started on the server (`cpu`: a CPU-bound one)."""
        node = slot.node
        slot.jobs += 1
        node.jobs += 1
        turn = next(self._turns)
        if cpu and not slot.busy:
            slot.busy = True
            node.busy += 1
            node.free.pop(slot, None)
        self._push_slot(slot, turn)
        self._push_node(node, turn)

    def ended(self, slot, cpu):
        """A job on the server ended: True if the server is free now."""
        node = slot.node
        if slot.jobs:
            slot.jobs -= 1
            node.jobs -= 1
        if cpu and slot.busy:
            slot.busy = False
            node.busy -= 1
            if slot.ready:
                node.free[slot] = None
        self._push_slot(slot)
        self._push_node(node)
        return slot.ready and not slot.busy

    def reserve(self, slot):
        """Mark the server busy for a CPU job about to start there."""
        self.started(slot, True)

    # ---------------- choices

    def free_node(self):
        """The least loaded usable node with a free server, or None
        (nothing is reserved)."""
        return _top(self.by_load, lambda entry: entry is entry[3].cpu_key and entry[3].usable
                    and entry[3].free)

    def cpu(self):
        """A free server of the least loaded usable node (reserved for the
        job: call `ended` if the job does not start), or None."""
        node = _top(self.by_load, lambda entry: entry is entry[3].cpu_key and entry[3].usable
                    and entry[3].free)      # free_node(), a call less: it is hot
        if node is None:
            return None
        slot = next(iter(node.free))
        self.reserve(slot)
        return slot

    def cpu_on(self, node):
        """A free server of `node` (reserved), or None."""
        if not node.usable or not node.free:
            return None
        slot = next(iter(node.free))
        self.reserve(slot)
        return slot

    def least_busy(self, node=None):
        """The server for an async job: the least busy of `node`, or of the
        node with the fewest jobs per server; None if no server is ready."""
        if node is None:
            node = _top(self.by_jobs, lambda entry: entry is entry[3].async_key and
                        entry[3].usable)
        if node is None or not node.usable:
            return None
        return _top(node.by_jobs, lambda entry: entry is entry[3].key and entry[3].ready)


def _top(heap, current):
    """What the top entry of a lazy heap names, once the entries that are not
    `current` are dropped from its top; None if none is left."""
    while heap:
        entry = heap[0]
        if current(entry):
            return entry[3]
        heapq.heappop(heap)
    return None
