"""Placement groups and scheduling strategies on three one-CPU hosts (a local mesh of one
CPU and two hosts that join it)."""

from __future__ import annotations

import pytest

import runtime
from runtime.core.api.state import list_state
from runtime.exceptions import ActorDiedError, InfeasibleError, TaskCancelledError
from runtime.util import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

from ..conftest import join_hosts, stop_process, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    import os

    old = os.environ.get("RUNTIME_TMPDIR")
    os.environ["RUNTIME_TMPDIR"] = str(tmp_path_factory.mktemp("pg"))
    os.environ["RUNTIME_PG_INFEASIBLE_S"] = "0.5"  # the head gives up on impossible groups fast
    try:
        runtime.init(num_cpus=1)
        hosts = join_hosts(2)
    finally:
        del os.environ["RUNTIME_PG_INFEASIBLE_S"]
    try:
        yield
    finally:
        runtime.shutdown()
        for proc in hosts:
            stop_process(proc)
        if old is not None:
            os.environ["RUNTIME_TMPDIR"] = old


@runtime.remote
def where():
    return runtime.get_runtime_context().get_node_id()


@runtime.remote
class Where:
    def node(self):
        return runtime.get_runtime_context().get_node_id()


def in_bundle(pg, i=-1):
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)


def group_nodes(pg):
    for row in placement_group_table():
        if row["placement_group_id"] == pg.id:
            return [row["bundles_to_node_id"][i] for i in range(pg.bundle_count)]
    raise AssertionError("group not listed")


@pytest.mark.parametrize(
    ("strategy", "distinct"),
    [("STRICT_SPREAD", 3), ("SPREAD", 3), ("STRICT_PACK", 1), ("PACK", 1)],
)
def test_strategies_place_bundles(three_nodes, strategy, distinct):
    size = 1.0 / 3 if strategy in ("STRICT_PACK", "PACK") else 1.0
    pg = placement_group([{"CPU": size}] * 3, strategy=strategy)
    assert runtime.get(pg.ready(), timeout=20) == pg
    assert len(set(group_nodes(pg))) == distinct
    remove_placement_group(pg)


def test_tasks_and_actors_run_in_their_bundle(three_nodes):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(20)
    nodes = group_nodes(pg)
    for i in range(2):
        ref = where.options(scheduling_strategy=in_bundle(pg, i)).remote()
        assert runtime.get(ref) == nodes[i]
    actor = Where.options(num_cpus=1, scheduling_strategy=in_bundle(pg, 1)).remote()
    assert runtime.get(actor.node.remote()) == nodes[1]
    any_bundle = runtime.get([where.options(scheduling_strategy=in_bundle(pg)).remote()])
    assert any_bundle[0] in nodes
    remove_placement_group(pg)
    with pytest.raises(ActorDiedError):
        runtime.get(actor.node.remote(), timeout=10)


def test_bundles_are_reserved_and_freed(three_nodes):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    assert pg.wait(20)
    # A second group that needs the whole cluster waits until the first is removed.
    full = placement_group([{"CPU": 1}] * 3, strategy="SPREAD")
    assert not full.wait(0.5)
    remove_placement_group(pg)
    assert full.wait(20)
    remove_placement_group(full)
    # Everything is free again: a third group of the whole cluster fits.
    again = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert again.wait(20)
    remove_placement_group(again)


def test_tasks_queue_inside_a_bundle(three_nodes):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(20)
    refs = [where.options(scheduling_strategy=in_bundle(pg, 0)).remote() for _ in range(5)]
    assert len(set(runtime.get(refs, timeout=30))) == 1
    remove_placement_group(pg)


def test_infeasible_group_fails_clearly(three_nodes):
    pg = placement_group([{"CPU": 4}])
    with pytest.raises(InfeasibleError, match="bundle 0"):
        runtime.get(pg.ready(), timeout=10)
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    with pytest.raises(InfeasibleError):
        pg.wait(10)
    with pytest.raises(ValueError, match="strategy"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="bundle"):
        placement_group([{}])
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="out of range"):
        PlacementGroupSchedulingStrategy(pg, 3)
    remove_placement_group(pg)


def test_queued_task_fails_when_its_group_is_removed(three_nodes):
    import time

    @runtime.remote
    def hold(seconds):
        time.sleep(seconds)
        return seconds

    pg = placement_group([{"CPU": 1}])
    assert pg.wait(20), (placement_group_table(), runtime.available_resources())
    running = hold.options(scheduling_strategy=in_bundle(pg, 0)).remote(1.0)
    queued = hold.options(scheduling_strategy=in_bundle(pg, 0)).remote(0)
    # Both reached the bundle's node: one runs, the other waits there for the bundle's CPU.
    ids = (running.id, queued.id)
    until(lambda: _task_states(*ids) == ["RUNNING", "QUEUED"])
    remove_placement_group(pg)
    with pytest.raises(TaskCancelledError):
        runtime.get(queued, timeout=10)
    del running


def _task_states(*object_ids: bytes) -> list[str | None]:
    """Where the task of each result is now (``runtime list tasks``): RUNNING, QUEUED, ..."""
    states = {r["task_id"]: r["state"] for r in list_state("tasks")}
    return [states.get(oid[:-4].hex()) for oid in object_ids]  # a result id: task id + index


def test_named_group(three_nodes):
    pg = placement_group([{"CPU": 0.5}], name="trainers")
    assert pg.wait(20)
    assert get_placement_group("trainers") == pg
    remove_placement_group(pg)


def test_node_affinity_and_spread(three_nodes):
    nodes = [n["NodeID"] for n in runtime.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    for node_id in nodes:
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        assert runtime.get(where.options(scheduling_strategy=strategy).remote()) == node_id
        actor = Where.options(scheduling_strategy=strategy).remote()
        assert runtime.get(actor.node.remote()) == node_id
    missing = NodeAffinitySchedulingStrategy("0" * 16, soft=False)
    with pytest.raises(InfeasibleError):
        runtime.get(where.options(scheduling_strategy=missing).remote())
    soft = NodeAffinitySchedulingStrategy("0" * 16, soft=True)
    assert runtime.get(where.options(scheduling_strategy=soft).remote()) in nodes
    spread = runtime.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(6)])
    assert set(spread) == set(nodes)
