"""The autoscaler's decision: pending demand and idle nodes in, launches and stops out."""

from __future__ import annotations

import pytest

from runtime.autoscaler import NodeType, NodeView, decide

CPU2 = NodeType("cpu2", {"CPU": 2.0}, max_workers=3)
GPU = NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, max_workers=1)


def node(node_id, type_name="cpu2", free=None, idle_s=0.0, total=None):
    total = total or {"CPU": 2.0}
    return NodeView(node_id, type_name, total, total if free is None else free, idle_s)


def test_demand_that_fits_what_is_free_starts_nothing():
    out = decide([CPU2], [node("a")], [{"CPU": 1.0}, {"CPU": 1.0}])
    assert (out.launch, out.terminate) == ({}, [])


def test_leftover_demand_starts_the_smallest_type_that_holds_it_packing_several_in_one():
    out = decide([GPU, CPU2], [node("a", free={"CPU": 0.0})], [{"CPU": 1.0}] * 3)
    assert out.launch == {"cpu2": 2}  # 3 CPUs of demand: two 2-CPU nodes, not the GPU node
    assert decide([GPU, CPU2], [], [{"GPU": 1.0}]).launch == {"gpu": 1}


def test_nodes_still_joining_count_as_capacity():
    joining = NodeView("b", "cpu2", {"CPU": 2.0}, available=None)
    assert decide([CPU2], [joining], [{"CPU": 2.0}]).launch == {}


def test_launches_stop_at_max_workers_and_impossible_demand_is_reported():
    busy = [node(str(i), free={"CPU": 0.0}) for i in range(3)]
    out = decide([CPU2], busy, [{"CPU": 1.0}, {"CPU": 4.0}])
    assert out.launch == {}
    assert out.infeasible == [{"CPU": 4.0}]


def test_requested_resources_count_against_total_capacity_whatever_runs():
    busy = node("a", free={"CPU": 0.0})
    assert decide([CPU2], [busy], [], [{"CPU": 1.0}] * 2).launch == {}
    assert decide([CPU2], [busy], [], [{"CPU": 1.0}] * 3).launch == {"cpu2": 1}


def test_an_idle_node_stops_after_the_timeout_unless_min_workers_or_requests_need_it():
    idle, young = node("a", idle_s=61), node("b", idle_s=5)
    assert decide([CPU2], [idle, young], [], idle_timeout_s=60).terminate == ["a"]
    keep_one = NodeType("cpu2", {"CPU": 2.0}, min_workers=2, max_workers=3)
    assert decide([keep_one], [idle, young], [], idle_timeout_s=60).terminate == []
    assert decide([CPU2], [idle, young], [], [{"CPU": 3.0}], idle_timeout_s=0).terminate == []
    # A host the provider did not start (a static one) is never stopped.
    static = NodeView("s", None, {"CPU": 2.0}, {"CPU": 2.0}, idle_s=1e6)
    assert decide([CPU2], [static], [], idle_timeout_s=0).terminate == []


def test_min_workers_are_started_and_nothing_stops_in_a_round_that_starts_nodes():
    out = decide([NodeType("cpu2", {"CPU": 2.0}, min_workers=2, max_workers=3)], [], [])
    assert out.launch == {"cpu2": 2}
    out = decide([CPU2, GPU], [node("a", idle_s=100)], [{"GPU": 1.0}], idle_timeout_s=60)
    assert (out.launch, out.terminate) == ({"gpu": 1}, [])
    # Demand no type can hold keeps nothing: the idle node still stops.
    out = decide([CPU2], [node("a", idle_s=100)], [{"CPU": 4.0}], idle_timeout_s=60)
    assert out.terminate == ["a"] and out.infeasible == [{"CPU": 4.0}]


def test_a_bad_node_type_is_refused():
    with pytest.raises(ValueError, match="min_workers <= max_workers"):
        NodeType("x", {"CPU": 1.0}, min_workers=3, max_workers=2)
    with pytest.raises(ValueError, match="must be >= 0"):
        NodeType("x", {"CPU": -1.0})
