"""``runtime list tasks``: every live task and actor call of the cluster, with its state where
it runs (RUNNING, QUEUED, PENDING_ARGS) or SUBMITTED while only its owner knows of it, the
node it is on and the member that submitted it; finished ones leave the list."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import runtime
from runtime.core.api.state import list_state
from tests.conftest import cli_json, until

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]


def _wait_for(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return "released"


wait_for = runtime.remote(num_cpus=1)(_wait_for)


@runtime.remote
class Gate:
    def wait_for(self, path: str) -> str:
        return _wait_for(path)


def task_of(ref: Any) -> str:
    """The id of the task whose result ``ref`` is (a return id is the task id + an index)."""
    return str(ref.id[:-4].hex())


def _mine(rows: list[dict[str, Any]], ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in rows if r["task_id"] in ids]


def test_running_queued_and_finished_tasks_and_actor_calls(tmp_path: Any) -> None:
    flag = str(tmp_path / "go")
    me = runtime.get_runtime_context().get_node_id()
    tasks = [wait_for.remote(flag) for _ in range(3)]  # two CPUs: one of them waits
    gate = Gate.remote()
    calls = [gate.wait_for.remote(flag) for _ in range(2)]  # one at a time
    ids = {task_of(r) for r in tasks + calls}

    def running_two_of_each() -> bool:
        rows = _mine(list_state("tasks"), ids)
        states = [(r["name"], r["state"]) for r in rows]
        return (
            len(rows) == 5
            and states.count(("_wait_for", "RUNNING")) == 2
            and states.count(("wait_for", "RUNNING")) == 1
        )

    until(running_two_of_each)
    rows = _mine(list_state("tasks"), ids)
    assert all(r["owner"] == me for r in rows)
    by_id = {r["task_id"]: r for r in rows}
    assert by_id[task_of(calls[1])]["state"] == "QUEUED"
    assert by_id[task_of(calls[0])]["actor_id"] == by_id[task_of(calls[1])]["actor_id"] != ""
    waiting = [by_id[task_of(t)] for t in tasks if by_id[task_of(t)]["state"] != "RUNNING"]
    assert len(waiting) == 1 and waiting[0]["state"] in ("QUEUED", "SUBMITTED")
    running_nodes = {by_id[task_of(t)]["node_id"] for t in tasks} - {waiting[0]["node_id"]}
    assert me not in running_nodes and "" not in running_nodes

    # The CLI, from another process, sees them too.
    listed = cli_json("list", "tasks")
    assert isinstance(listed, list)
    assert {r["task_id"] for r in listed} >= {task_of(calls[0]), task_of(tasks[0])}

    open(flag, "w").close()
    assert runtime.get(tasks + calls) == ["released"] * 5
    assert _mine(list_state("tasks"), ids) == []
