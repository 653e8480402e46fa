"""A local mesh starts a node process again when one dies (os._exit, SIGKILL as the OOM
killer sends), so the host keeps offering its CPUs and restarted actors and retried tasks
find room (real processes)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

import runtime
from runtime.core.api import session as _api
from runtime.core.process.keeper import describe_exit, restart_delay
from runtime.exceptions import ActorDiedError

from ..conftest import local_mesh, until


@pytest.fixture
def mesh(tmp_path) -> Iterator[None]:
    with local_mesh(tmp_path, num_cpus=2):
        yield


def work_rows() -> dict[str, dict[str, object]]:
    return {
        n["NodeID"]: n
        for n in runtime.nodes()
        if n["Alive"] and not n["IsDriver"] and n["Resources"].get("CPU")
    }


def dead_rows() -> dict[str, dict[str, object]]:
    return {n["NodeID"]: n for n in runtime.nodes() if not n["Alive"]}


@runtime.remote(max_restarts=1, max_task_retries=-1)
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def where(self) -> tuple[int, str]:
        return os.getpid(), runtime.get_runtime_context().get_node_id()

    def incr(self) -> int:
        self.n += 1
        return self.n


@runtime.remote(max_retries=1)
def die_once(marker: str) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(0)  # as Ray's doc example does: the node process ends with status 0
    return os.getpid()


def test_a_killed_node_process_is_replaced_and_an_actor_with_max_restarts_comes_back(mesh):
    before = work_rows()
    assert len(before) == 2
    actor = Counter.remote()
    pid, node_id = runtime.get(actor.where.remote(), timeout=30)
    assert runtime.get(actor.incr.remote(), timeout=30) == 1
    host_id = before[node_id]["HostID"]

    os.kill(pid, signal.SIGKILL)  # what the OOM killer sends

    # The actor restarted (its constructor ran again), and the host offers 2 CPUs again.
    assert runtime.get(actor.incr.remote(), timeout=60) == 1
    until(lambda: len(work_rows()) == 2, 60, why=lambda: str(runtime.nodes()))
    now = work_rows()
    assert node_id not in now
    assert dead_rows()[node_id]["Pid"] == pid  # the dead one is listed, as Ray lists them
    (new_id,) = set(now) - set(before)
    assert now[new_id]["HostID"] == host_id and now[new_id]["Pid"] != pid
    assert runtime.cluster_resources()["CPU"] == 2.0
    keeper = _api._session.mesh.keeper  # type: ignore[union-attr]
    assert keeper is not None and [old for _, old, _ in keeper.replaced] == [pid]

    # Its one restart spent, a second crash ends it: calls fail at once, none waits.
    pid2, _ = runtime.get(actor.where.remote(), timeout=30)
    os.kill(pid2, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        runtime.get(actor.incr.remote(), timeout=30)
    with pytest.raises(ActorDiedError):
        runtime.get(actor.incr.remote(), timeout=30)


def test_a_task_whose_process_exits_is_retried_and_the_mesh_keeps_its_processes(mesh, tmp_path):
    marker = str(tmp_path / "died")
    pid = runtime.get(die_once.remote(marker), timeout=60)
    assert os.path.exists(marker) and pid in {n["Pid"] for n in work_rows().values()}
    until(lambda: len(work_rows()) == 2, 60, why=lambda: str(runtime.nodes()))


def test_restarts_back_off_and_exits_are_said_plainly():
    assert restart_delay(0) == 0.0
    assert [restart_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert restart_delay(50) == 10.0
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(0) == "exited with status 0"


@pytest.mark.timeout(120)
def test_a_forked_host_of_nine_processes_forks_a_killed_one_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path))
    runtime.init(num_cpus=9)  # above FORK_ABOVE: one process forks the host's nine
    try:
        victim = next(r["Pid"] for r in work_rows().values())
        os.kill(victim, signal.SIGKILL)

        def back() -> bool:
            rows = work_rows()
            return len(rows) == 9 and victim not in {r["Pid"] for r in rows.values()}

        until(back, 60, why=lambda: str(work_rows()))
        assert victim in {r["Pid"] for r in dead_rows().values()}
    finally:
        runtime.shutdown()
