"""asyncoro.placement: where jobs go (in process, no network).

The choices are checked against a model that scans every server (what the
lazy heaps must agree with), through long random runs of changes.
"""

import random

from asyncoro.placement import Placement


def cluster(placement, nodes, servers):
    """`nodes` usable nodes of `servers` ready servers each: [[Slot]]."""
    grid = []
    for n in range(nodes):
        node = placement.node_slot('node%d' % n)
        slots = [placement.server_slot('node%d/server%d' % (n, s), node) for s in range(servers)]
        for slot in slots:
            placement.set_ready(slot, True)
        placement.set_usable(node, True)
        grid.append(slots)
    return grid


def test_cpu_jobs_take_free_servers_of_the_least_loaded_node_in_turn():
    placement = Placement()
    grid = cluster(placement, 3, 2)
    chosen = [placement.cpu() for _ in range(6)]
    # the nodes take turns while they are equally loaded; each server once
    assert [slot.node for slot in chosen[:3]] == [row[0].node for row in grid]
    assert sorted(slot.server for slot in chosen) == sorted(s.server for row in grid for s in row)
    assert placement.cpu() is None                  # every server busy with a CPU job
    assert placement.ended(chosen[4], True) is True     # free again: the next job goes there
    assert placement.cpu() is chosen[4]


def test_a_node_that_is_not_usable_gets_no_job():
    placement = Placement()
    grid = cluster(placement, 2, 2)
    placement.set_usable(grid[0][0].node, False)     # draining, say
    chosen = [placement.cpu() for _ in range(3)]
    assert chosen[:2] != [None, None] and {slot.node for slot in chosen[:2]} == {grid[1][0].node}
    assert chosen[2] is None
    assert placement.least_busy(grid[0][0].node) is None
    placement.forget(grid[1][0])                     # a server gone with its job
    assert placement.ready == 1


def test_async_jobs_spread_evenly_over_nodes_and_servers():
    placement = Placement()
    cluster(placement, 2, 2)
    counts = {}
    for _ in range(20):
        slot = placement.least_busy()
        placement.started(slot, False)
        counts[slot.server] = counts.get(slot.server, 0) + 1
    assert sorted(counts.values()) == [5, 5, 5, 5]


def best_cpu(grid):
    """The model: the nodes whose load is least among those with a free server."""
    loads = {}
    for row in grid:
        node = row[0].node
        if node.usable and any(s.ready and not s.busy for s in node.slots):
            ready = [s for s in node.slots if s.ready]
            loads[node] = sum(s.busy for s in ready) / len(ready)
    if not loads:
        return set()
    least = min(loads.values())
    return {node for node, load in loads.items() if load == least}


def best_async(grid):
    loads = {}
    for row in grid:
        node = row[0].node
        ready = [s for s in node.slots if s.ready]
        if node.usable and ready:
            loads[node] = sum(s.jobs for s in ready) / len(ready)
    if not loads:
        return set(), None
    least = min(loads.values())
    return {node for node, load in loads.items() if load == least}, loads


def test_random_runs_agree_with_a_model_that_scans_every_server():
    rng = random.Random(20261205)
    placement = Placement()
    grid = cluster(placement, 12, 4)
    running = []            # (slot, cpu)
    for step in range(20000):
        action = rng.random()
        if action < 0.35:
            expected = best_cpu(grid)
            slot = placement.cpu()
            if expected:
                assert slot is not None and slot.node in expected, step
                running.append((slot, True))
            else:
                assert slot is None, step
        elif action < 0.55:
            nodes, _ = best_async(grid)
            slot = placement.least_busy()
            if nodes:
                assert slot is not None and slot.node in nodes, step
                fewest = min(s.jobs for s in slot.node.slots if s.ready)
                assert slot.jobs == fewest, step
                placement.started(slot, False)
                running.append((slot, False))
            else:
                assert slot is None, step
        elif action < 0.9 and running:
            slot, cpu = running.pop(rng.randrange(len(running)))
            if slot.ready:
                placement.ended(slot, cpu)
        elif action < 0.95:
            node = rng.choice(grid)[0].node
            placement.set_usable(node, not node.usable)
        else:
            slot = rng.choice(rng.choice(grid))
            if slot.ready:
                placement.set_ready(slot, False)
                running = [(s, c) for s, c in running if s is not slot]
            else:
                placement.set_ready(slot, True)
        # the counts stay what the servers say
        assert placement.ready == sum(s.ready for row in grid for s in row
                                      if s.node.usable), step
    # the lazy heaps did not grow without bound
    assert len(placement.by_load) < 4 * 12 + 64 + 1
    assert all(len(row[0].node.by_jobs) <= 4 * 4 + 16 + 1 for row in grid)


def test_the_heaps_stay_bounded_whatever_kind_of_job_runs():
    """Only async choices pop old keys from the jobs-per-server heap, and
    only CPU choices from the load heap: a long run of one kind must not
    grow the other heap (a scheduler runs computations all day)."""
    placement = Placement()
    grid = cluster(placement, 2, 4)
    bound = 4 * 2 + 64
    for _ in range(10000):
        slot = placement.cpu()
        placement.ended(slot, True)
    assert len(placement.by_load) <= bound and len(placement.by_jobs) <= bound
    for _ in range(10000):
        slot = placement.least_busy()
        placement.started(slot, False)
        placement.ended(slot, False)
    assert len(placement.by_load) <= bound and len(placement.by_jobs) <= bound
    assert all(len(row[0].node.by_jobs) <= 4 * 4 + 16 for row in grid)
    for row in grid:                                # the computation ends
        placement.set_usable(row[0].node, False)
    assert placement.by_load == [] and placement.by_jobs == []
