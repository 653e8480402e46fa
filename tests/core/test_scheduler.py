"""Resource accounting and placement, fed plain events: no sockets, no processes."""

from __future__ import annotations

import pytest

from runtime.core.common.exceptions import InfeasibleError
from runtime.core.scheduling.scheduler import (
    LocalScheduler,
    Placer,
    fits,
    normalize,
    pick_actor_node,
    pick_node,
)
from runtime.core.wire.protocol import NodeInfo

CPU1 = {"CPU": 1.0}
CPU2 = {"CPU": 2.0}


def node(
    node_id: str,
    resources: dict[str, float] | None = None,
    available: dict[str, float] | None = None,
    *,
    is_driver: bool = False,
    alive: bool = True,
) -> NodeInfo:
    resources = {"CPU": 1.0} if resources is None else resources
    available = dict(resources) if available is None else available
    return NodeInfo(node_id, f"{node_id}:1", is_driver, resources, available, 1, alive=alive)


# --- fits and normalize -----------------------------------------------------------------------


def test_fits_compares_every_named_amount() -> None:
    assert fits({"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 2.0})
    assert not fits({"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0})
    assert not fits({"custom": 0.5}, {"CPU": 8.0})
    assert fits({}, {})
    assert fits({"GPU": 0.0}, {})  # a zero amount asks for nothing


def test_normalize_defaults_the_cpus_and_drops_zero_amounts() -> None:
    assert normalize(None, None, None, default_cpus=1.0) == {"CPU": 1.0}
    assert normalize(None, None, None, default_cpus=0.0) == {}
    assert normalize(0, 0, {"custom": 0}, default_cpus=1.0) == {}
    assert normalize(0.5, 1, {"custom": 2}, default_cpus=1.0) == {
        "CPU": 0.5,
        "GPU": 1.0,
        "custom": 2.0,
    }
    assert all(type(v) is float for v in normalize(2, 1, {"x": 3}, default_cpus=1.0).values())


@pytest.mark.parametrize(
    ("num_cpus", "num_gpus", "resources", "match"),
    [
        (-1, None, None, "CPU amount must be a finite number >= 0"),
        (None, -0.5, None, "GPU amount must be a finite number >= 0"),
        (None, None, {"custom": -1}, "resource 'custom' amount must be a finite number >= 0"),
    ],
    ids=["cpu", "gpu", "custom"],
)
def test_normalize_rejects_negative_amounts(num_cpus, num_gpus, resources, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize(num_cpus, num_gpus, resources, default_cpus=1.0)


@pytest.mark.parametrize("name", ["CPU", "GPU"])
def test_normalize_rejects_cpus_or_gpus_given_as_custom_resources(name: str) -> None:
    with pytest.raises(ValueError, match=f"use num_cpus/num_gpus instead of resources={{'{name}'"):
        normalize(None, None, {name: 1}, default_cpus=1.0)


# --- LocalScheduler ---------------------------------------------------------------------------


def test_a_request_that_fits_is_granted_at_once() -> None:
    sched = LocalScheduler(CPU2)
    assert sched.request("a", CPU1)
    assert sched.available == {"CPU": 1.0}
    assert not sched.queue


def test_a_request_without_room_queues_until_a_release_grants_it() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.request("a", CPU1)
    assert not sched.request("b", CPU1)
    assert sched.available == {"CPU": 0.0}
    assert sched.release(CPU1) == ["b"]
    assert sched.available == {"CPU": 0.0}
    assert not sched.queue


def test_queued_requests_are_granted_in_arrival_order() -> None:
    sched = LocalScheduler(CPU2)
    assert sched.request("running-1", CPU1)
    assert sched.request("running-2", CPU1)
    for key in ("q1", "q2", "q3", "q4"):
        assert not sched.request(key, CPU1)
    assert sched.release(CPU1) == ["q1"]
    assert sched.release(CPU2) == ["q2", "q3"]
    assert sched.release(CPU1) == ["q4"]
    assert sched.release(CPU1) == []
    assert sched.release(CPU2) == []
    assert sched.available == CPU2


def test_a_release_grants_everything_that_now_fits() -> None:
    sched = LocalScheduler({"CPU": 4.0})
    assert sched.request("all", {"CPU": 4.0})
    for key in ("a", "b", "c", "d", "e"):
        assert not sched.request(key, CPU1)
    assert sched.release({"CPU": 4.0}) == ["a", "b", "c", "d"]
    assert list(sched.queue) == [("e", CPU1)]


def test_a_small_request_passes_a_queued_one_that_still_does_not_fit() -> None:
    sched = LocalScheduler(CPU2)
    assert sched.request("a", CPU1)
    assert sched.request("b", CPU1)
    assert not sched.request("big", CPU2)
    assert not sched.request("small", CPU1)
    assert sched.release(CPU1) == ["small"]  # big still does not fit; small does
    assert [key for key, _ in sched.queue] == ["big"]
    assert sched.release(CPU1) == []
    assert sched.release(CPU1) == ["big"]


def test_a_request_that_fits_is_granted_even_while_a_bigger_one_waits() -> None:
    # An actor holds one of two CPUs for as long as it lives, so nothing is released.
    sched = LocalScheduler(CPU2)
    assert sched.try_take(CPU1)
    assert not sched.request("big", CPU2)  # waits for the actor to go
    assert sched.request("small", CPU1)  # one CPU is free: it should run now
    assert sched.available == {"CPU": 0.0}


def test_half_cpus_add_up_to_a_whole_one() -> None:
    sched = LocalScheduler(CPU1)
    half = {"CPU": 0.5}
    assert sched.request("a", half)
    assert sched.request("b", half)
    assert not sched.request("c", half)
    assert sched.release(half) == ["c"]
    assert sched.release(half) == []
    assert sched.release(half) == []
    assert sched.available == CPU1


def test_ten_tenths_of_a_cpu_fill_it_and_free_it_without_rounding_drift() -> None:
    sched = LocalScheduler(CPU1)
    tenth = {"CPU": 0.1}
    for i in range(10):
        assert sched.request(i, tenth)
    assert not sched.request("eleventh", tenth)
    assert sched.cancel("eleventh")
    for _ in range(10):
        sched.release(tenth)
    assert sched.request("whole", CPU1)  # 0.1 * 10 is not exactly 1.0 in floats


def test_several_resources_must_all_fit() -> None:
    sched = LocalScheduler({"CPU": 2.0, "GPU": 1.0})
    assert sched.request("gpu", {"CPU": 1.0, "GPU": 1.0})
    assert not sched.request("gpu2", {"CPU": 1.0, "GPU": 1.0})  # CPU left, no GPU
    assert sched.release({"CPU": 1.0, "GPU": 1.0}) == ["gpu2"]
    assert sched.available == {"CPU": 1.0, "GPU": 0.0}


@pytest.mark.parametrize(
    "demand",
    [{"CPU": 3.0}, {"GPU": 1.0}, {"custom": 0.5}, {"CPU": 1.0, "GPU": 1.0}],
    ids=["too-many-cpus", "no-gpu", "unknown-resource", "partly-infeasible"],
)
def test_a_request_the_node_could_never_grant_is_infeasible(demand: dict[str, float]) -> None:
    sched = LocalScheduler(CPU2)
    assert not sched.feasible(demand)
    with pytest.raises(InfeasibleError, match="can never grant"):
        sched.request("x", demand)
    assert not sched.queue
    assert sched.available == CPU2


def test_an_empty_demand_is_granted_on_a_full_node() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.request("a", CPU1)
    assert sched.try_take({})
    assert sched.request("nothing", {})
    assert sched.available == {"CPU": 0.0}


def test_try_take_takes_what_fits_and_never_queues() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.try_take(CPU1)
    assert not sched.try_take({"CPU": 0.5})
    assert not sched.queue
    assert sched.available == {"CPU": 0.0}


def test_a_cancelled_request_is_never_granted() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.request("a", CPU1)
    assert not sched.request("b", CPU1)
    assert not sched.request("c", CPU1)
    assert sched.cancel("b")
    assert not sched.cancel("b")
    assert not sched.cancel("never-queued")
    assert sched.release(CPU1) == ["c"]


def test_a_release_never_raises_availability_past_the_total() -> None:
    sched = LocalScheduler(CPU1)
    sched.release(CPU1)
    sched.release({"custom": 1.0})
    assert sched.available == {"CPU": 1.0, "custom": 0.0}


def test_a_blocked_task_lends_its_resources_and_takes_them_back_over_budget() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.request("parent", CPU1)
    assert not sched.request("child", CPU1)
    # The parent blocks in get(child): its CPU goes to the child meanwhile.
    assert sched.borrow(CPU1) == ["child"]
    assert sched.available == {"CPU": 0.0}
    # The parent wakes while the child still runs: the node is oversubscribed for a while.
    sched.reacquire(CPU1)
    assert sched.available == {"CPU": -1.0}
    assert not sched.request("other", CPU1)
    assert sched.release(CPU1) == []  # the child finishes: back to exactly full
    assert sched.available == {"CPU": 0.0}
    assert sched.release(CPU1) == ["other"]  # the parent finishes


def test_a_lent_cpu_that_nobody_used_comes_back_cleanly() -> None:
    sched = LocalScheduler(CPU1)
    assert sched.request("parent", CPU1)
    assert sched.borrow(CPU1) == []
    assert sched.available == CPU1
    sched.reacquire(CPU1)
    assert sched.available == {"CPU": 0.0}
    assert sched.release(CPU1) == []
    assert sched.available == CPU1


# --- pick_node --------------------------------------------------------------------------------


def test_pick_node_prefers_a_node_with_room_now() -> None:
    nodes = [node("busy", CPU1, {"CPU": 0.0}), node("free", CPU1)]
    assert pick_node(nodes, CPU1, {}) == "free"


def test_pick_node_prefers_the_local_node_among_equals() -> None:
    nodes = [node("a"), node("b"), node("c")]
    assert pick_node(nodes, CPU1, {}, prefer="b") == "b"
    assert pick_node(nodes, CPU1, {}) == "a"  # ties are broken by id: deterministic


def test_pick_node_spreads_by_the_load_this_submitter_put_on_each_node() -> None:
    nodes = [node("a", CPU2), node("b", CPU2)]
    assert pick_node(nodes, CPU1, {"a": 2, "b": 1}) == "b"
    assert pick_node(nodes, CPU1, {"a": 1, "b": 1}, prefer="a") == "a"


def test_pick_node_weighs_load_by_the_cpus_of_a_node() -> None:
    nodes = [node("small", CPU1), node("big", {"CPU": 8.0})]
    assert pick_node(nodes, CPU1, {"small": 1, "big": 4}) == "big"  # 4/8 < 1/1


def test_pick_node_queues_on_a_busy_node_rather_than_fail() -> None:
    nodes = [node("busy", CPU2, {"CPU": 0.0})]
    assert pick_node(nodes, CPU2, {"busy": 5}) == "busy"


def test_pick_node_skips_drivers_and_dead_nodes() -> None:
    nodes = [
        node("driver", {}, is_driver=True),
        node("dead", CPU2, alive=False),
        node("alive", CPU1, {"CPU": 0.0}),
    ]
    assert pick_node(nodes, {}, {}) == "alive"  # even a zero-CPU task never goes to a driver
    assert pick_node(nodes, CPU1, {}, prefer="dead") == "alive"


def test_pick_node_matches_custom_resources() -> None:
    nodes = [node("plain", CPU2), node("gpu", {"CPU": 1.0, "GPU": 1.0})]
    assert pick_node(nodes, {"CPU": 1.0, "GPU": 1.0}, {}, prefer="plain") == "gpu"


@pytest.mark.parametrize(
    "nodes",
    [
        [],
        [node("small", CPU1)],
        [node("driver", {"CPU": 4.0}, is_driver=True)],
        [node("dead", {"CPU": 4.0}, alive=False)],
    ],
    ids=["empty", "too-small", "only-a-driver", "only-dead"],
)
def test_pick_node_raises_a_clear_error_when_no_node_could_ever_run_it(nodes) -> None:
    with pytest.raises(InfeasibleError) as info:
        pick_node(nodes, {"CPU": 4.0}, {})
    message = str(info.value)
    assert "can ever satisfy the resource request {'CPU': 4.0}" in message
    assert "start a node with those resources or lower the request" in message


def test_a_placer_picks_as_pick_node_does_while_the_view_and_the_load_move() -> None:
    view = {n.node_id: n for n in [node("a", CPU2), node("b", CPU2), node("c", CPU1)]}
    placer = Placer()
    for load in ({}, {"a": 2}, {"a": 2, "b": 1}, {"a": 3, "b": 3, "c": 1}, {"c": 0, "a": 1}):
        assert placer.pick(view, CPU1, load) == pick_node(view.values(), CPU1, load), load
    view = {**view, "b": node("b", CPU2, {"CPU": 0.0})}  # a new view: b is busy now
    assert placer.pick(view, CPU1, {"a": 1}) == pick_node(view.values(), CPU1, {"a": 1}) == "c"


def test_a_placer_skips_a_node_found_dead_after_its_view_came() -> None:
    view = {n.node_id: n for n in [node("a"), node("b")]}
    placer = Placer()
    assert placer.pick(view, CPU1, {}) == "a"
    view["a"].alive = False  # peer_lost marks the entry in place: the dict stays the same
    assert placer.pick(view, CPU1, {}) == "b"
    assert placer.pick(view, CPU1, {"b": 5}) == "b"


def test_a_placer_raises_as_pick_node_does_when_no_node_could_ever_run_it() -> None:
    view = {"small": node("small", CPU1)}
    with pytest.raises(InfeasibleError, match="can ever satisfy the resource request"):
        Placer().pick(view, {"CPU": 4.0}, {})


# --- pick_actor_node --------------------------------------------------------------------------


def test_pick_actor_node_chooses_the_node_with_the_fewest_actors() -> None:
    nodes = [node("a"), node("b"), node("c")]
    assert pick_actor_node(nodes, CPU1, {"a": 2, "b": 1, "c": 3}) == ("b", True)


def test_pick_actor_node_needs_room_now() -> None:
    nodes = [node("full", CPU1, {"CPU": 0.0}), node("free", CPU1)]
    assert pick_actor_node(nodes, CPU1, {}) == ("free", True)
    assert pick_actor_node(nodes[:1], CPU1, {}) == (None, True)  # feasible, just not now


def test_pick_actor_node_uses_a_cpu_less_node_last() -> None:
    demand = {"x": 1.0}
    head = node("head", {"x": 1.0})
    worker = node("worker", {"CPU": 1.0, "x": 1.0})
    assert pick_actor_node([head, worker], demand, {"worker": 5}) == ("worker", True)
    busy = node("worker", {"CPU": 1.0, "x": 1.0}, {"CPU": 1.0, "x": 0.0})
    assert pick_actor_node([head, busy], demand, {}) == ("head", True)


def test_pick_actor_node_reports_infeasible_requests() -> None:
    nodes = [
        node("a"),
        node("driver", {"CPU": 8.0}, is_driver=True),
        node("dead", CPU2, alive=False),
    ]
    assert pick_actor_node(nodes, CPU2, {}) == (None, False)


def test_pick_actor_node_honours_hard_affinity() -> None:
    nodes = [node("a"), node("b")]
    assert pick_actor_node(nodes, CPU1, {"b": 9}, affinity="b") == ("b", True)
    full = [node("a"), node("b", CPU1, {"CPU": 0.0})]
    assert pick_actor_node(full, CPU1, {}, affinity="b") == (None, True)
    assert pick_actor_node(nodes, CPU1, {}, affinity="gone") == (None, False)


def test_pick_actor_node_falls_back_from_soft_affinity() -> None:
    nodes = [node("a"), node("b")]
    assert pick_actor_node(nodes, CPU1, {}, affinity="gone", soft=True) == ("a", True)
    assert pick_actor_node(nodes, CPU1, {"a": 3}, affinity="b", soft=True) == ("b", True)
