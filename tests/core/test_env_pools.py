"""runtime_env isolation: each environment runs in processes of its own on the host.

Two tasks with different ``env_vars`` or ``working_dir`` running at the same moment on one node
each see their own; a runtime_env's pool process goes away once idle; an actor with a
runtime_env runs in a process of its own, started with that environment.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

import runtime
from runtime.util import NodeAffinitySchedulingStrategy

from ..conftest import until, wait_gone

pytestmark = pytest.mark.timeout(90)

ROLE = "runtime.io/role"


@pytest.fixture
def one_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local mesh of two one-CPU nodes whose env pools are stopped after 1 s idle; the id
    of the node the tests pin their tasks to."""
    monkeypatch.setenv("RUNTIME_ENV_POOL_IDLE_S", "1")
    runtime.init(num_cpus=2)
    try:
        node = next(
            n["NodeID"] for n in runtime.nodes() if n["Resources"].get("CPU") and n["Alive"]
        )
        yield node
    finally:
        runtime.shutdown()


@runtime.remote(num_cpus=0)
class Rendezvous:
    """Lets tasks wait until all of them run at the same moment."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_here = threading.Event()

    def arrive(self) -> bool:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.all_here.set()
        return self.all_here.wait(30)


@runtime.remote(num_cpus=0)
def meet_then_look(rendezvous, key: str) -> tuple[str | None, str, int, bool]:
    met = runtime.get(rendezvous.arrive.remote())  # both tasks are running now
    return os.environ.get(key), os.getcwd(), os.getpid(), met


def _pinned(node: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node, soft=False)


def _pool_pids() -> set[int]:
    return {n["Pid"] for n in runtime.nodes() if n["Alive"] and n["Labels"].get(ROLE) == "env"}


def test_tasks_with_different_env_vars_at_the_same_moment_each_see_their_own(one_node):
    meeting = Rendezvous.options(max_concurrency=2).remote(2)
    refs = [
        meet_then_look.options(
            scheduling_strategy=_pinned(one_node), runtime_env={"env_vars": {"RT_POOL": value}}
        ).remote(meeting, "RT_POOL")
        for value in ("red", "blue")
    ]
    (red, _, red_pid, met1), (blue, _, blue_pid, met2) = runtime.get(refs, timeout=60)
    assert met1 and met2  # they did run at the same moment
    assert (red, blue) == ("red", "blue")
    assert red_pid != blue_pid  # one process per environment
    nodes = {n["NodeID"]: n["Pid"] for n in runtime.nodes()}
    assert nodes[one_node] not in (red_pid, blue_pid)  # not in the node that received them
    plain = meet_then_look.options(scheduling_strategy=_pinned(one_node))
    value, _, pid, _ = runtime.get(plain.remote(Rendezvous.remote(1), "RT_POOL"), timeout=30)
    assert value is None and pid == nodes[one_node]  # no env: in the node, untouched


def test_tasks_with_different_working_dirs_at_the_same_moment_each_see_their_own(
    one_node, tmp_path
):
    dirs = []
    for name in ("alpha", "beta"):
        d = tmp_path / name
        d.mkdir()
        (d / "which.txt").write_text(name)
        dirs.append(str(d))
    meeting = Rendezvous.options(max_concurrency=2).remote(2)
    refs = [
        meet_then_look.options(
            scheduling_strategy=_pinned(one_node), runtime_env={"working_dir": d}
        ).remote(meeting, "UNSET")
        for d in dirs
    ]
    answers = runtime.get(refs, timeout=60)
    assert all(met for *_, met in answers)
    cwds = [cwd for _, cwd, _, _ in answers]
    assert [os.path.basename(c) for c in cwds] == ["alpha", "beta"]
    texts = []
    for c in cwds:
        with open(os.path.join(c, "which.txt")) as f:
            texts.append(f.read())
    assert texts == ["alpha", "beta"]


def test_an_idle_pool_process_goes_away_and_comes_back_on_demand(one_node):
    task = meet_then_look.options(
        scheduling_strategy=_pinned(one_node), runtime_env={"env_vars": {"RT_POOL": "x"}}
    )
    _, _, pid, _ = runtime.get(task.remote(Rendezvous.remote(1), "RT_POOL"), timeout=60)
    assert pid in _pool_pids()
    assert wait_gone([pid], timeout=30) == []  # idle for RUNTIME_ENV_POOL_IDLE_S: stopped
    until(lambda: pid not in _pool_pids())
    value, _, again, _ = runtime.get(task.remote(Rendezvous.remote(1), "RT_POOL"), timeout=60)
    assert value == "x" and again != pid


def test_an_actor_with_a_runtime_env_runs_in_a_process_of_its_own(one_node, tmp_path):
    @runtime.remote(num_cpus=0)
    class Looker:
        def look(self) -> tuple[str | None, str, int]:
            return os.environ.get("RT_ACTOR_ENV"), os.getcwd(), os.getpid()

    (tmp_path / "wd").mkdir()
    env = {"env_vars": {"RT_ACTOR_ENV": "mine"}, "working_dir": str(tmp_path / "wd")}
    a = Looker.options(runtime_env=env, scheduling_strategy=_pinned(one_node)).remote()
    b = Looker.options(scheduling_strategy=_pinned(one_node)).remote()
    value, cwd, pid = runtime.get(a.look.remote(), timeout=60)
    other_value, other_cwd, other_pid = runtime.get(b.look.remote(), timeout=60)
    assert value == "mine" and cwd.endswith("wd") and pid != other_pid
    assert other_value is None and not other_cwd.endswith("wd")
    runtime.kill(a)
    assert wait_gone([pid]) == []


@runtime.remote(num_cpus=1)
def inner() -> int:
    return os.getpid()


@runtime.remote(num_cpus=1)
def outer() -> tuple[str | None, int]:
    # Blocks in get() on a task that needs this very CPU: the node holding it for the pool
    # lends it out meanwhile, as it would for a task running in the node itself.
    return os.environ.get("RT_POOL"), runtime.get(inner.remote(), timeout=60)


def test_a_pool_task_blocked_in_get_lends_its_cpu_to_the_task_it_waits_for(monkeypatch):
    monkeypatch.setenv("RUNTIME_ENV_POOL_IDLE_S", "1")
    runtime.init(num_cpus=1)
    try:
        task = outer.options(runtime_env={"env_vars": {"RT_POOL": "outer"}})
        value, inner_pid = runtime.get(task.remote(), timeout=60)
        assert value == "outer" and inner_pid not in _pool_pids()
    finally:
        runtime.shutdown()
