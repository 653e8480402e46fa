"""Chaos scenario 10: load on one node: an actor with 10,000 queued calls, and 1,000 actors.

The calls keep their order and the node's memory stays bounded; a thousand actors on one
node each keep their own state and order, and go away again when killed.
"""

from __future__ import annotations

import psutil
import pytest

import runtime
from runtime.util import NodeAffinitySchedulingStrategy


@runtime.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.seen = []

    def incr(self, n=1):
        self.value += n
        self.seen.append(n)
        return self.value

    def history(self):
        return list(self.seen)

    def where(self):
        ctx = runtime.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_actor_name(), ctx.get_node_id()


@pytest.mark.timeout(120)
def test_ten_thousand_queued_calls_keep_their_order_and_memory_stays_bounded(cluster):
    c = Counter.remote()
    pid_ref = c.where.remote()
    node_id = runtime.get(pid_ref)[2]
    node_pid = next(n["Pid"] for n in runtime.nodes() if n["NodeID"] == node_id)
    refs = [c.incr.remote(1) for _ in range(10_000)]
    assert runtime.get(refs, timeout=100) == list(range(1, 10_001))
    del refs
    rss = psutil.Process(node_pid).memory_info().rss
    assert rss < 300 << 20, f"the node holds {rss >> 20} MB after 10,000 calls"
    assert runtime.get(c.history.remote())[-3:] == [1, 1, 1]


@pytest.mark.timeout(120)
def test_a_thousand_actors_on_one_node_keep_their_state_and_order(cluster):
    node_id = next(n["NodeID"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"])
    node_pid = next(n["Pid"] for n in runtime.nodes() if n["NodeID"] == node_id)
    here = NodeAffinitySchedulingStrategy(node_id)
    rss_before = psutil.Process(node_pid).memory_info().rss
    actors = [Counter.options(scheduling_strategy=here).remote(i * 1000) for i in range(1000)]
    refs = [[a.incr.remote(1) for _ in range(3)] for a in actors]
    got = runtime.get([r for rs in refs for r in rs], timeout=100)
    assert got == [i * 1000 + k for i in range(1000) for k in (1, 2, 3)]
    assert {w[2] for w in runtime.get([a.where.remote() for a in actors[::100]])} == {node_id}
    grown = psutil.Process(node_pid).memory_info().rss - rss_before
    assert grown < 300 << 20, f"1,000 actors cost the node {grown >> 20} MB"
    for a in actors:
        runtime.kill(a)
