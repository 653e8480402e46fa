"""A node process collects its young garbage every ``collector.YOUNG`` container allocations
(``execution.collector``), and a reference cycle made garbage there is still freed."""

from __future__ import annotations

import gc

import pytest

import runtime
from runtime.core.execution import collector

pytestmark = pytest.mark.timeout(60)


@runtime.remote(num_cpus=0)
class Probe:
    def threshold(self):
        import gc

        return gc.get_threshold()

    def cycles_are_freed(self):
        import gc
        import weakref

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        # Container allocations that stay alive (a freed one does not count), no gc.collect().
        kept = [[None] for _ in range(3 * collector.YOUNG)]
        return gone() is None and gc.isenabled() and len(kept) > 0


def test_a_node_collects_its_young_garbage_less_often(cluster):
    p = Probe.remote()
    assert runtime.get(p.threshold.remote(), timeout=30)[0] == collector.YOUNG
    assert gc.get_threshold()[0] < collector.YOUNG  # the driver's is left as it was


def test_a_cycle_made_garbage_on_a_node_is_still_collected(cluster):
    p = Probe.remote()
    assert runtime.get(p.cycles_are_freed.remote(), timeout=30)
