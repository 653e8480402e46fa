"""Pending tasks and actors say what they ask for (``required_resources``, Ray's field) in
their state rows, and the autoscaler starts a node for them (real processes)."""

from __future__ import annotations

import os

import pytest

import runtime
from runtime.autoscaler import (
    NODE_LABEL,
    Autoscaler,
    LocalProcessProvider,
    NodeType,
    pending_demand,
)
from runtime.util.state import list_actors, list_tasks
from tests.conftest import start_head, stop_process, until


def node_id() -> str:
    return runtime.get_runtime_context().get_node_id()


@runtime.remote(num_cpus=2)
class Big:
    def where(self) -> str:
        return node_id()


@runtime.remote(num_cpus=2)
def big_task() -> str:
    return node_id()


@pytest.fixture
def head(tmp_path, monkeypatch):
    """A head with no resources of its own: every CPU comes from the autoscaler's nodes.
    What nobody can hold waits (not the default 5 s), for the driver and the head."""
    monkeypatch.setenv("RUNTIME_INFEASIBLE_S", "120")
    env = {**os.environ, "RUNTIME_INFEASIBLE_S": "120"}
    started = start_head(tmp_path, "--num-cpus", "0", env=env)
    token = os.path.join(started.state_dir, "token")
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", token)
    runtime.init(address=started.address, log_to_driver=False)
    try:
        yield started, token
    finally:
        runtime.shutdown()
        stop_process(started.proc)


def test_a_pending_actor_and_task_say_what_they_require(head):
    actor = Big.remote()
    ref = big_task.remote()
    until(lambda: any(r["state"] == "PENDING" for r in list_actors()), 30)
    (row,) = list_actors()
    assert row["required_resources"] == {"CPU": 2.0}
    until(lambda: any(r["state"] == "PENDING_NODE_ASSIGNMENT" for r in list_tasks()), 30,
          lambda: str(list_tasks()))  # fmt: skip
    (task,) = [r for r in list_tasks() if r["name"].endswith("big_task")]
    assert task["required_resources"] == {"CPU": 2.0}
    assert sorted(map(str, pending_demand())) == [str({"CPU": 2.0})] * 2
    runtime.cancel(ref)
    runtime.kill(actor)


@pytest.mark.timeout(150)
def test_a_pending_two_cpu_actor_makes_the_local_provider_start_a_node(head):
    started, token = head
    provider = LocalProcessProvider(started.address, token_file=token, env=started.env)
    auto = Autoscaler(provider, [NodeType("cpu2", {"CPU": 2.0}, max_workers=1)],
                      idle_timeout_s=60.0, period_s=0.2)  # fmt: skip
    try:
        actor = Big.remote()
        auto.start()
        where = runtime.get(actor.where.remote(), timeout=90)
        ours = {n["NodeID"] for n in runtime.nodes() if n["Alive"] and NODE_LABEL in n["Labels"]}
        assert where in ours
        assert len(provider.non_terminated_nodes()) == 1 and auto.errors == []
        runtime.kill(actor)
    finally:
        auto.stop()
        provider.close()
