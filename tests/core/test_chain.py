"""Tasks queued behind a running one on a one-CPU node run on its thread, one after another
(``execution.chain``): still in order, each answered alone, cancellable, and the CPU given
back exactly once at the end."""

from __future__ import annotations

import os
import time

import pytest

import runtime
from runtime.exceptions import TaskCancelledError, TaskError

from ..actors import gate
from ..conftest import until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def one_cpu():
    runtime.init(num_cpus=1)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
def stamp(i: int) -> tuple[int, int]:
    return i, time.perf_counter_ns()


@runtime.remote
def fail_at(i: int, bad: int) -> int:
    if i == bad:
        raise ValueError(f"task {i} fails")
    return i


@runtime.remote
def inner(i: int) -> int:
    return i * 10


@runtime.remote
def outer(i: int) -> int:
    return runtime.get(inner.remote(i))


def _gated(tmp_path, name: str) -> tuple[runtime.ObjectRef, str]:
    started, go = str(tmp_path / f"{name}.started"), str(tmp_path / f"{name}.go")
    ref = gate.remote(started, go)
    until(lambda: os.path.exists(started))
    return ref, go


def _open(go: str) -> None:
    open(go, "w").close()


def _cpu_back() -> None:
    until(lambda: runtime.available_resources().get("CPU") == 1.0)


def test_tasks_queued_behind_a_running_one_run_in_their_order(one_cpu, tmp_path) -> None:
    first, go = _gated(tmp_path, "first")
    refs = [stamp.remote(i) for i in range(300)]
    _open(go)
    assert runtime.get(first) == "opened"
    got = runtime.get(refs, timeout=60)
    assert [i for i, _ in got] == list(range(300))
    stamps = [t for _, t in got]
    assert stamps == sorted(stamps)  # one node process, one CPU: run in arrival order
    _cpu_back()


def test_a_failing_task_of_a_run_fails_alone(one_cpu, tmp_path) -> None:
    first, go = _gated(tmp_path, "first")
    refs = [fail_at.remote(i, 7) for i in range(20)]
    _open(go)
    runtime.get(first)
    for i, ref in enumerate(refs):
        if i == 7:
            with pytest.raises(TaskError, match="task 7 fails"):
                runtime.get(ref, timeout=30)
        else:
            assert runtime.get(ref, timeout=30) == i
    _cpu_back()


def test_a_task_cancelled_while_its_run_is_under_way_answers_cancelled(one_cpu, tmp_path) -> None:
    first, go = _gated(tmp_path, "first")
    second_started, second_go = str(tmp_path / "second.started"), str(tmp_path / "second.go")
    second = gate.remote(second_started, second_go)
    rest = [stamp.remote(i) for i in range(10)]
    _open(go)
    # The second task runs now, and the ten behind it were handed to its thread with it.
    until(lambda: os.path.exists(second_started))
    runtime.cancel(rest[5])
    _open(second_go)
    assert runtime.get(second, timeout=30) == "opened"
    for i, ref in enumerate(rest):
        if i == 5:
            with pytest.raises(TaskCancelledError):
                runtime.get(ref, timeout=30)
        else:
            assert runtime.get(ref, timeout=30)[0] == i
    assert runtime.get(first) == "opened"
    _cpu_back()


def test_a_task_of_a_run_that_blocks_in_get_lends_its_cpu_to_its_child(one_cpu, tmp_path) -> None:
    first, go = _gated(tmp_path, "first")
    refs = [outer.remote(i) if i % 3 == 1 else stamp.remote(i) for i in range(12)]
    _open(go)
    runtime.get(first)
    got = runtime.get(refs, timeout=60)
    assert [g if i % 3 == 1 else g[0] for i, g in enumerate(got)] == [
        i * 10 if i % 3 == 1 else i for i in range(12)
    ]
    _cpu_back()
    # and the node still runs work after it
    assert runtime.get(stamp.remote(99), timeout=30)[0] == 99


def test_tasks_that_arrive_while_a_run_is_under_way_join_it_in_order(one_cpu, tmp_path) -> None:
    first, go = _gated(tmp_path, "first")  # runs alone (nothing queued): its run is empty
    refs = [stamp.remote(i) for i in range(50)]  # each arrives to an empty queue: joins
    cancelled = stamp.remote(50)
    more = [stamp.remote(i) for i in range(51, 60)]
    runtime.cancel(cancelled)
    _open(go)
    assert runtime.get(first, timeout=30) == "opened"
    got = runtime.get(refs + more, timeout=60)
    assert [i for i, _ in got] == [*range(50), *range(51, 60)]
    stamps = [t for _, t in got]
    assert stamps == sorted(stamps)
    with pytest.raises(TaskCancelledError):
        runtime.get(cancelled, timeout=30)
    _cpu_back()
