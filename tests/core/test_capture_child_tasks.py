"""Ray's ``placement_group_capture_child_tasks``: what a captured task submits with no
strategy runs in the same placement group."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import runtime
from runtime.util import (
    PlacementGroup,
    get_current_placement_group,
    placement_group,
    remove_placement_group,
)
from runtime.util.scheduling_strategies import PlacementGroupSchedulingStrategy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def group() -> Iterator[PlacementGroup]:
    runtime.init(num_cpus=3)
    try:
        pg = placement_group([{"CPU": 2}])
        runtime.get(pg.ready(), timeout=30)
        yield pg
        remove_placement_group(pg)
    finally:
        runtime.shutdown()


def _where() -> str | None:
    pg = get_current_placement_group()
    return None if pg is None else pg.id


@runtime.remote(num_cpus=1)
def leaf() -> str | None:
    return _where()


@runtime.remote(num_cpus=0)
def middle() -> list[str | None]:
    return [_where(), runtime.get(leaf.remote(), timeout=30)]


@runtime.remote(num_cpus=1)
def parent(opt_out: bool = False) -> list[str | None]:
    if opt_out:
        child = leaf.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None)
        )
        return [runtime.get(child.remote(), timeout=30)]
    return [runtime.get(leaf.remote(), timeout=30), *runtime.get(middle.remote(), timeout=30)]


@runtime.remote(num_cpus=1)
class Probe:
    def where(self) -> str | None:
        return _where()


@runtime.remote(num_cpus=0)
def make_probe() -> str | None:
    probe = Probe.remote()
    return runtime.get(probe.where.remote(), timeout=30)


def _in(pg: PlacementGroup, capture: bool | None) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_capture_child_tasks=capture
    )


def test_children_and_grandchildren_of_a_captured_task_run_in_its_group(
    group: PlacementGroup,
) -> None:
    out = runtime.get(parent.options(scheduling_strategy=_in(group, True)).remote(), timeout=60)
    assert out == [group.id, group.id, group.id]


def test_without_capture_the_children_run_outside_the_group(group: PlacementGroup) -> None:
    out = runtime.get(parent.options(scheduling_strategy=_in(group, None)).remote(), timeout=60)
    assert out == [None, None, None]


def test_a_child_that_names_no_group_opts_out_of_the_capture(group: PlacementGroup) -> None:
    task = parent.options(scheduling_strategy=_in(group, True)).remote(opt_out=True)
    assert runtime.get(task, timeout=60) == [None]


def test_an_actor_created_by_a_captured_task_lives_in_the_group(group: PlacementGroup) -> None:
    task = make_probe.options(scheduling_strategy=_in(group, True)).remote()
    assert runtime.get(task, timeout=60) == group.id


def test_a_strategy_without_a_group_is_the_default_strategy() -> None:
    strategy = PlacementGroupSchedulingStrategy(placement_group=None)
    assert strategy._to_wire() is None
    with pytest.raises(TypeError, match="PlacementGroup or None"):
        PlacementGroupSchedulingStrategy(placement_group="pg")  # type: ignore[arg-type]
