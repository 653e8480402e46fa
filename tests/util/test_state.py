"""runtime.util.state on a real local mesh: Ray's listing functions over the head's tables
and every member's tasks and objects, with filters, limits and attribute access."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

import runtime
from runtime.util import placement_group, remove_placement_group, state
from tests.conftest import until

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]


@runtime.remote
class Probe:
    def ping(self) -> str:
        return "pong"


@runtime.remote
def wait_for(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


def test_actors_by_filter_with_attribute_access() -> None:
    named = Probe.options(name="state-probe").remote()
    others = [Probe.remote() for _ in range(3)]
    runtime.get([a.ping.remote() for a in [named, *others]])
    rows = state.list_actors(filters=[("name", "=", "state-probe")])
    assert len(rows) == 1 and rows[0].state == "ALIVE" and rows[0]["class_name"] == "Probe"
    assert state.get_actor(rows[0].actor_id) == rows[0]
    assert state.get_actor("00" * 8) is None
    alive = state.list_actors(filters=[("state", "=", "ALIVE"), ("name", "!=", "state-probe")])
    assert len(alive) >= 3 and all(r.name != "state-probe" for r in alive)
    assert len(state.list_actors(limit=2)) == 2
    with pytest.raises(AttributeError, match="no field 'pid'"):
        _ = rows[0].pid
    runtime.kill(named)


def test_nodes_tasks_objects_and_placement_groups(tmp_path: Any) -> None:
    workers = state.list_nodes(filters=[("is_driver", "=", False)])
    assert workers and all(r.alive for r in workers)

    flag = str(tmp_path / "go")
    ref = wait_for.remote(flag)
    until(lambda: state.list_tasks(filters=[("name", "=", "wait_for"), ("state", "=", "RUNNING")]))
    open(flag, "w").close()
    assert runtime.get(ref) == "done"

    big = runtime.put(np.zeros(1 << 20, dtype=np.uint8))
    assert state.list_objects(filters=[("object_id", "=", big.hex())])

    pg = placement_group([{"CPU": 1}])
    pg.wait(10)
    rows = state.list_placement_groups(filters=[("placement_group_id", "=", pg.id)])
    assert len(rows) == 1
    remove_placement_group(pg)


def test_bad_filters_and_addresses_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="'=' or '!='"):
        state.list_actors(filters=[("state", ">", "ALIVE")])
    with pytest.raises(ValueError, match="triple"):
        state.list_actors(filters=[("state", "=")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="cannot filter on 'colour'"):
        state.list_nodes(filters=[("colour", "=", "blue")])
    with pytest.raises(ValueError, match=r"runtime.init\(address="):
        state.list_nodes(address="127.0.0.1:6380")  # type: ignore[arg-type]
