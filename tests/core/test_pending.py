"""Waiting for capacity instead of failing: an actor no node has room for waits as PENDING
(visible in ``list_actors``) until a node with room joins, and its creator is warned after a
while; only a new request no live node could ever hold fails, after a grace period in which a
joining node can still make it feasible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import runtime
from runtime.exceptions import InfeasibleError
from runtime.util.state import list_actors

from ..conftest import stop_process, until, wait_gone

pytestmark = pytest.mark.timeout(90)


@runtime.remote(num_cpus=1)
class Phoenix:
    def pid(self) -> int:
        return os.getpid()


class Nodes:
    """Node processes a test starts itself, joining the driver's local mesh."""

    def __init__(self, log_dir: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = log_dir

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        from runtime.core.api import session as _api

        mesh = _api._session.mesh  # type: ignore[union-attr]
        assert mesh is not None
        token_file = os.path.join(mesh.state_dir, "token")
        with open(os.path.join(self.log_dir, f"node{len(self.procs)}.log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.node", "--address", mesh.head_address,
                 "--token-file", token_file, *args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc


@pytest.fixture
def nodes(tmp_path) -> Iterator[Nodes]:
    started = Nodes(str(tmp_path))
    try:
        yield started
    finally:
        for proc in started.procs:
            stop_process(proc)


def _state(handle) -> str:
    actor_id = handle._actor_id.hex()
    rows = [r for r in list_actors() if r["actor_id"] == actor_id]
    return rows[0]["state"] if rows else "UNKNOWN"


def test_a_restart_waits_as_pending_for_a_node_started_5_s_after_its_node_died(
    monkeypatch, capfd, nodes
):
    monkeypatch.setenv("RUNTIME_PENDING_WARN_S", "1")
    monkeypatch.setenv("RUNTIME_NODE_RESTARTS", "0")  # the mesh's keeper would replace it
    runtime.init(num_cpus=1)
    try:
        actor = Phoenix.options(max_restarts=1).remote()
        pid = runtime.get(actor.pid.remote(), timeout=30)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_gone([pid]) == []
        until(lambda: _state(actor) == "PENDING")
        seen = []

        def warned() -> bool:
            seen.append(capfd.readouterr().err)
            return "waits for a node with {'CPU': 1.0}" in "".join(seen)

        until(warned, why=lambda: "".join(seen))  # the driver is told what it waits for
        assert _state(actor) == "PENDING"  # still waiting, not failed
        time.sleep(max(0.0, 5.0 - (time.monotonic() - killed)))  # the scenario: 5 s later
        nodes.start("--num-cpus", "1")
        assert runtime.get(actor.pid.remote(), timeout=60) not in (pid, os.getpid())
        assert _state(actor) == "ALIVE"
    finally:
        runtime.shutdown()


def test_a_new_actor_no_node_can_hold_fails_after_the_grace_period(monkeypatch):
    monkeypatch.setenv("RUNTIME_PG_INFEASIBLE_S", "1")
    runtime.init(num_cpus=1)
    try:
        greedy = Phoenix.options(resources={"unobtainium": 1}).remote()
        with pytest.raises(InfeasibleError, match="unobtainium"):
            runtime.get(greedy.pid.remote(), timeout=30)
        assert _state(greedy) == "DEAD"
    finally:
        runtime.shutdown()


def test_a_node_that_joins_within_the_grace_period_makes_a_new_actor_feasible(monkeypatch, nodes):
    monkeypatch.setenv("RUNTIME_PG_INFEASIBLE_S", "30")
    runtime.init(num_cpus=1)
    try:
        special = Phoenix.options(resources={"special": 1}).remote()
        until(lambda: _state(special) == "PENDING")
        node = nodes.start("--num-cpus", "1", "--resources", '{"special": 1}')
        assert runtime.get(special.pid.remote(), timeout=60) == node.pid  # on the new node
        assert _state(special) == "ALIVE"
    finally:
        runtime.shutdown()


def test_a_placement_group_that_waits_for_room_warns_its_creator(monkeypatch, capfd):
    from runtime.util import placement_group, remove_placement_group

    monkeypatch.setenv("RUNTIME_PENDING_WARN_S", "1")
    runtime.init(num_cpus=1)
    try:
        holder = Phoenix.remote()
        runtime.get(holder.pid.remote(), timeout=30)  # takes the one CPU
        pg = placement_group([{"CPU": 1}], name="patient")
        seen = []

        def warned() -> bool:
            seen.append(capfd.readouterr().err)
            return "placement group patient (PACK) waits for room" in "".join(seen)

        until(warned, why=lambda: "".join(seen))
        assert not pg.wait(0.1)
        runtime.kill(holder)
        assert pg.wait(30)
        remove_placement_group(pg)
    finally:
        runtime.shutdown()


@runtime.remote(num_cpus=1, max_retries=1)
def pid_of_node() -> int:
    return os.getpid()


@runtime.remote(num_cpus=1, max_retries=1)
def nap_once_then_pid(marker: str) -> int:
    """The first try naps (its node gets killed under it); the retry answers at once."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(60)
    return os.getpid()


def test_a_task_no_node_can_hold_runs_when_such_a_node_joins_within_the_grace(monkeypatch, nodes):
    monkeypatch.setenv("RUNTIME_INFEASIBLE_S", "30")
    runtime.init(num_cpus=1)
    try:
        ref = pid_of_node.options(resources={"special": 1}).remote()
        assert runtime.wait([ref], timeout=0.5) == ([], [ref])  # waiting, not failed
        node = nodes.start("--num-cpus", "1", "--resources", '{"special": 1}')
        assert runtime.get(ref, timeout=60) == node.pid
    finally:
        runtime.shutdown()


def test_a_retried_task_waits_for_a_node_after_its_node_died(monkeypatch, nodes, tmp_path):
    monkeypatch.setenv("RUNTIME_INFEASIBLE_S", "0.5")  # a retry waits longer than this
    runtime.init(num_cpus=1)
    try:
        first = nodes.start("--num-cpus", "1", "--resources", '{"special": 1}')
        until(lambda: runtime.cluster_resources().get("special") == 1.0)
        marker = str(tmp_path / "started")
        ref = nap_once_then_pid.options(resources={"special": 1}).remote(marker)
        until(lambda: os.path.exists(marker))
        os.kill(first.pid, signal.SIGKILL)
        assert wait_gone([first.pid]) == []
        assert runtime.wait([ref], timeout=2) == ([], [ref])  # past the grace: still waiting
        again = nodes.start("--num-cpus", "1", "--resources", '{"special": 1}')
        assert runtime.get(ref, timeout=120) == again.pid
    finally:
        runtime.shutdown()
