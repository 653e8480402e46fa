"""Resources belong to hosts: the node processes of a local mesh share its CPUs, GPUs,
memory and labels (real processes)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import pytest

import runtime
from runtime.exceptions import InfeasibleError

from ..conftest import local_mesh, until


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local host of 3 CPUs (three node processes), 2 declared GPUs, a label."""
    base = tmp_path_factory.mktemp("host")
    with local_mesh(base, num_cpus=3, num_gpus=2, labels={"zone": "a"}):
        yield str(base)


def cpus_free() -> float:
    return float(runtime.available_resources().get("CPU", 0.0))


@runtime.remote(num_cpus=2)
def two_cpus(gate: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {
        "pid": os.getpid(),
        "assigned": runtime.get_runtime_context().get_assigned_resources(),
    }


def test_a_two_cpu_task_runs_on_a_three_cpu_mesh_and_takes_two_from_the_host(host, tmp_path):
    gate = str(tmp_path / "gate")
    ref = two_cpus.remote(gate)
    until(lambda: cpus_free() == 1.0, why=lambda: str(runtime.available_resources()))
    open(gate, "w").close()
    out = runtime.get(ref, timeout=30)
    assert out["assigned"] == {"CPU": 2.0}
    assert out["pid"] in {n["Pid"] for n in runtime.nodes() if n["Resources"].get("CPU")}
    until(lambda: cpus_free() == 3.0, why=lambda: str(runtime.available_resources()))


@runtime.remote(num_cpus=2)
def timed(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def test_two_tasks_of_two_cpus_never_run_together_on_a_host_of_three(host):
    (s1, e1), (s2, e2) = runtime.get([timed.remote(0.5), timed.remote(0.5)], timeout=30)
    assert e1 <= s2 or e2 <= s1  # processes differ, the host's count is one


@runtime.remote
def sleeper(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_one_cpu_tasks_spread_over_the_hosts_processes(host):
    pids = runtime.get([sleeper.remote(0.5) for _ in range(3)], timeout=30)
    assert len(set(pids)) == 3


def test_the_host_is_counted_once_with_memory_and_the_object_store(host):
    total = runtime.cluster_resources()
    assert total["CPU"] == 3.0
    assert total["GPU"] == 2.0
    assert total["object_store_memory"] > 0
    assert total["memory"] > 0
    rows = [n for n in runtime.nodes() if not n["IsDriver"] and n["Resources"].get("CPU")]
    assert len(rows) == 3
    assert len({n["HostID"] for n in rows}) == 1
    assert all(n["Labels"] == {"zone": "a"} for n in rows)


@runtime.remote(num_gpus=1)
def gpu_task(gate: str) -> tuple[list[int | str], str, dict[str, list[str]]]:
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx = runtime.get_runtime_context()
    return runtime.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"], ctx.get_accelerator_ids()


def test_gpu_tasks_see_their_own_device_ids(host, tmp_path):
    gate = str(tmp_path / "gate")
    refs = [gpu_task.remote(gate), gpu_task.remote(gate)]
    until(lambda: runtime.available_resources().get("GPU") == 0.0)
    open(gate, "w").close()
    out = runtime.get(refs, timeout=30)
    assert sorted(o[0][0] for o in out) == [0, 1]  # both at once: one device each
    for ids, visible, accel in out:
        assert visible == str(ids[0])
        assert accel == {"GPU": [str(ids[0])]}


@runtime.remote(num_gpus=0.5)
def half_gpu(gate: str) -> list[int | str]:
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return runtime.get_gpu_ids()


def test_half_gpu_tasks_share_one_device(host, tmp_path):
    gate = str(tmp_path / "gate")
    refs = [half_gpu.remote(gate), half_gpu.remote(gate)]
    until(lambda: runtime.available_resources().get("GPU") == 1.0)
    open(gate, "w").close()
    first, second = runtime.get(refs, timeout=30)
    assert first == second and len(first) == 1


@runtime.remote(num_gpus=1)
class GpuActor:
    def ids(self) -> tuple[list[int | str], str, dict[str, float]]:
        ctx = runtime.get_runtime_context()
        return (
            runtime.get_gpu_ids(),
            os.environ["CUDA_VISIBLE_DEVICES"],
            ctx.get_assigned_resources(),
        )


def test_a_gpu_actor_holds_its_device_until_it_goes(host):
    actor = GpuActor.remote()
    ids, visible, assigned = runtime.get(actor.ids.remote(), timeout=30)
    assert len(ids) == 1 and visible == str(ids[0])
    assert assigned == {"GPU": 1.0}
    until(lambda: runtime.available_resources().get("GPU") == 1.0)
    runtime.kill(actor)
    until(lambda: runtime.available_resources().get("GPU") == 2.0)


def test_gpu_actors_in_dedicated_processes_each_see_their_own_device(host):
    actors = [GpuActor.options(dedicated_process=True).remote() for _ in range(2)]
    seen = runtime.get([a.ids.remote() for a in actors], timeout=60)
    ids = sorted(i for i, _, _ in seen)
    assert ids == [[0], [1]]  # one device each, as a shared-process actor would get
    for device, visible, assigned in seen:
        assert visible == str(device[0]) and assigned == {"GPU": 1.0}
    until(
        lambda: runtime.available_resources().get("GPU") == 0.0,
        why=lambda: str([(n["HostID"], n["Labels"], n["Available"]) for n in runtime.nodes()]),
    )
    for actor in actors:
        runtime.kill(actor)
    until(
        lambda: runtime.available_resources().get("GPU") == 2.0,
        why=lambda: str(runtime.available_resources()),
    )


@runtime.remote
class Holder:
    def where(self) -> dict[str, object]:
        ctx = runtime.get_runtime_context()
        return {
            "pid": os.getpid(),
            "assigned": ctx.get_assigned_resources(),
            "pg": ctx.get_placement_group_id(),
        }


@runtime.remote
def zone() -> str:
    return runtime.get_runtime_context().get_node_id()


def test_a_label_selector_picks_nodes_by_their_labels(host):
    labelled = {n["NodeID"] for n in runtime.nodes() if n["Labels"].get("zone") == "a"}
    assert runtime.get(zone.options(label_selector={"zone": "a"}).remote(), timeout=30) in labelled
    assert runtime.get(zone.options(label_selector={"zone": "in(b,a)"}).remote(), timeout=30)
    with pytest.raises(InfeasibleError, match="labels matching"):
        runtime.get(zone.options(label_selector={"zone": "b"}).remote(), timeout=30)
    spread = zone.options(label_selector={"zone": "a"}, scheduling_strategy="SPREAD")
    assert set(runtime.get([spread.remote() for _ in range(6)], timeout=30)) <= labelled
    actor = Holder.options(label_selector={"zone": "!b"}).remote()
    assert runtime.get(actor.where.remote(), timeout=30)["pid"] > 0


def test_memory_is_a_resource_in_bytes(host):
    total = runtime.cluster_resources()["memory"]
    ask = sleeper.options(memory=100 * 2**20)
    assert isinstance(runtime.get(ask.remote(0), timeout=30), int)
    with pytest.raises(InfeasibleError):
        runtime.get(sleeper.options(memory=math.ceil(total) * 2).remote(0), timeout=30)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"num_cpus": -1}, ValueError),
        ({"num_cpus": float("nan")}, ValueError),
        ({"num_gpus": float("inf")}, ValueError),
        ({"memory": -5}, ValueError),
        ({"num_gpus": 1.5}, ValueError),
        ({"resources": {"x": float("nan")}}, ValueError),
        ({"label_selector": {"zone": 3}}, TypeError),
        ({"label_selector": {"zone": "in()"}}, ValueError),
    ],
)
def test_bad_amounts_and_selectors_are_refused_at_options(options, error):
    with pytest.raises(error):
        sleeper.options(**options)


def test_a_label_selector_with_a_placement_group_is_refused():
    from runtime.util import NodeAffinitySchedulingStrategy

    with pytest.raises(ValueError, match="label_selector"):
        sleeper.options(
            label_selector={"zone": "a"},
            scheduling_strategy=NodeAffinitySchedulingStrategy("x", soft=False),
        )
