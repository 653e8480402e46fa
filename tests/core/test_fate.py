"""Fate sharing, said and bounded: what a crashing process takes down with it.

The head hosts no user code (no task, no actor, not even a 0-CPU one); a node process that
crashes (``os._exit``, a segfault, SIGKILL as the OOM killer sends) restarts each actor it held
per that actor's own ``max_restarts``; an actor made with ``dedicated_process=True`` runs in a
node process of its own, started on demand and ended with the actor (or with its parent).
"""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime.exceptions import ActorDiedError, InfeasibleError
from runtime.util import NodeAffinitySchedulingStrategy

from ..conftest import HeadProcess, stop_process, until, wait_gone

pytestmark = pytest.mark.timeout(90)

ROLE = "runtime.io/role"


@runtime.remote(num_cpus=0)
class Tenant:
    """An actor that reports where it lives and can crash its process in several ways."""

    def where(self) -> tuple[str, int]:
        return runtime.get_runtime_context().get_node_id(), os.getpid()

    def crash(self, how: str) -> None:
        if how == "exit":
            os._exit(3)
        elif how == "segfault":
            import ctypes

            ctypes.string_at(0)  # reads address 0: SIGSEGV in C code
        else:  # what the OOM killer does
            os.kill(os.getpid(), signal.SIGKILL)


@runtime.remote(num_cpus=0)
def zero_cpu_task() -> str:
    return runtime.get_runtime_context().get_node_id()


def _head_ids() -> set[str]:
    return {n["NodeID"] for n in runtime.nodes() if n["Labels"].get(ROLE) == "head"}


def test_the_head_of_a_local_mesh_hosts_no_task_and_no_actor_even_at_zero_cpus(mesh):
    heads = _head_ids()
    assert len(heads) == 1
    actors = [Tenant.remote() for _ in range(8)]
    places = {node for node, _ in runtime.get([a.where.remote() for a in actors], timeout=30)}
    places |= set(runtime.get([zero_cpu_task.remote() for _ in range(20)], timeout=30))
    assert places and not places & heads
    (head,) = heads
    with pytest.raises(InfeasibleError):  # not even when asked by name
        runtime.get(
            zero_cpu_task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)
            ).remote(),
            timeout=30,
        )


def test_a_head_started_on_the_command_line_hands_its_cpus_to_a_node_process(
    head: HeadProcess,
) -> None:
    runtime.init(address=head.address, token=head.token)
    try:
        heads = _head_ids()
        assert runtime.cluster_resources().get("CPU") == 1.0  # the head fixture's one CPU
        where = runtime.get([zero_cpu_task.remote() for _ in range(5)], timeout=30)
        assert set(where) and not set(where) & heads
        node, pid = runtime.get(Tenant.remote().where.remote(), timeout=30)
        assert node not in heads and pid != head.proc.pid
    finally:
        runtime.shutdown()
    stop_process(head.proc)
    children = [p for p in _children_of(head.proc.pid)]
    assert wait_gone(children) == []


def _children_of(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("how", ["exit", "segfault", "sigkill"])
def test_a_crashed_process_restarts_each_actor_in_it_per_its_own_max_restarts(mesh, how):
    # max_task_retries: a call sent before this driver noticed the crash is sent again.
    first = Tenant.options(max_restarts=1, max_task_retries=1).remote()
    node, pid = runtime.get(first.where.remote(), timeout=30)
    here = NodeAffinitySchedulingStrategy(node, soft=True)  # all in one process
    second = Tenant.options(max_restarts=0, scheduling_strategy=here).remote()
    third = Tenant.options(max_restarts=2, max_task_retries=1, scheduling_strategy=here).remote()
    bomb = Tenant.options(scheduling_strategy=here).remote()  # crashes the process they share
    for actor in (second, third, bomb):
        assert runtime.get(actor.where.remote(), timeout=30) == (node, pid)
    bomb.crash.remote(how)
    assert wait_gone([pid]) == []
    for survivor in (first, third):  # they restart, in another process
        _, new_pid = runtime.get(survivor.where.remote(), timeout=60)
        assert new_pid != pid
    for dead in (second, bomb):  # no restarts: dead for good
        with pytest.raises(ActorDiedError):
            runtime.get(dead.where.remote(), timeout=60)
    assert not {n for n, _ in runtime.get([first.where.remote(), third.where.remote()])} & (
        _head_ids()
    )


def test_an_actor_in_a_dedicated_process_crashes_alone_and_restarts(mesh):
    neighbour = Tenant.remote()
    node, shared_pid = runtime.get(neighbour.where.remote(), timeout=30)
    loner = Tenant.options(
        dedicated_process=True,
        max_restarts=1,
        max_task_retries=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True),
    ).remote()
    loner_node, loner_pid = runtime.get(loner.where.remote(), timeout=30)
    assert loner_pid != shared_pid and loner_node != node
    # started by the node it was placed on (forked from that node's zygote, its child)
    started = _children_of(shared_pid)
    assert loner_pid in started + [g for c in started for g in _children_of(c)]
    os.kill(loner_pid, signal.SIGSEGV)  # as a segfault in its native code would
    assert wait_gone([loner_pid]) == []
    assert runtime.get(neighbour.where.remote(), timeout=30) == (node, shared_pid)
    _, again = runtime.get(loner.where.remote(), timeout=60)
    assert again not in (loner_pid, shared_pid)


def test_a_dedicated_process_ends_with_its_actor_and_gives_its_cpu_back(mesh):
    cpus = runtime.cluster_resources()["CPU"]
    until(lambda: runtime.available_resources().get("CPU") == cpus)
    loner = Tenant.options(dedicated_process=True, num_cpus=1).remote()
    node, pid = runtime.get(loner.where.remote(), timeout=30)
    until(lambda: runtime.available_resources().get("CPU") == cpus - 1)
    members = {n["NodeID"]: n for n in runtime.nodes()}
    assert members[node]["Labels"].get(ROLE) == "actor"
    # Its parent holds its CPU: counted once (memory and the store are reported, not held).
    reported = {"memory", "object_store_memory"}
    assert {k: v for k, v in members[node]["Resources"].items() if k not in reported} == {}
    runtime.kill(loner)
    assert wait_gone([pid]) == []
    until(lambda: runtime.available_resources().get("CPU") == cpus)


def test_a_dedicated_process_dies_with_the_node_that_started_it(mesh):
    host = Tenant.remote()
    node, parent = runtime.get(host.where.remote(), timeout=30)
    loner = Tenant.options(
        dedicated_process=True, scheduling_strategy=NodeAffinitySchedulingStrategy(node)
    ).remote()
    _, pid = runtime.get(loner.where.remote(), timeout=30)
    os.kill(parent, signal.SIGKILL)
    assert wait_gone([parent, pid]) == []


def test_dedicated_process_must_be_a_bool(mesh):
    with pytest.raises(TypeError, match="dedicated_process"):
        Tenant.options(dedicated_process="yes").remote()
    with pytest.raises(ValueError, match="unknown option"):
        zero_cpu_task.options(dedicated_process=True)


def test_an_actor_whose_process_cannot_start_dies_saying_why(monkeypatch):
    monkeypatch.setenv("RUNTIME_CHILD_START_S", "0.01")  # no process joins that fast
    runtime.init(num_cpus=1)
    try:
        loner = Tenant.options(dedicated_process=True).remote()
        with pytest.raises(ActorDiedError, match="could not start"):
            runtime.get(loner.where.remote(), timeout=60)
        assert runtime.get(Tenant.remote().where.remote(), timeout=30)  # the node lives on
    finally:
        runtime.shutdown()
