"""Bounded object stores: spilling past the capacity, OutOfMemoryError when nothing can
spill, and no shared-memory or spill file left behind (after frees, shutdown, or kill -9)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import runtime
from runtime.core.api import state as _state
from runtime.core.api.blocking import current_worker
from runtime.core.objects.store import shm_root
from runtime.exceptions import OutOfMemoryError

MB = 1 << 20
pytestmark = pytest.mark.timeout(120)


def wait_until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


def files_under(path: str) -> list[str]:
    out = []
    for root, _, names in os.walk(path):
        out.extend(os.path.join(root, n) for n in names)
    return out


def store_dirs(node_ids: list[str]) -> list[str]:
    """The shared-memory directories of these nodes that exist now."""
    try:
        names = os.listdir(shm_root())
    except OSError:
        return []
    return [n for n in names if n.split(".")[0] in node_ids]


@pytest.fixture
def small_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One node and this driver, each with a 64 MiB object store."""
    monkeypatch.setenv("RUNTIME_OBJECT_STORE_FULL_WAIT_S", "1")
    runtime.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
def make(n: int, fill: int) -> Any:
    return np.full(n, fill, dtype=np.uint8)


@runtime.remote
def checksum(arr: Any) -> int:
    return int(arr.sum(dtype=np.int64))


def test_puts_past_the_capacity_spill_and_read_back(small_store: None) -> None:
    store = current_worker().store
    refs = [runtime.put(np.full(20 * MB, i, dtype=np.uint8)) for i in range(10)]  # 200 MB
    stats = store.stats()
    assert stats["used"] <= 64 * MB and stats["spill_count"] >= 7, stats
    rows = {r["object_id"]: r for r in _state.list_state("objects")}
    assert sum(rows[r.hex()]["where"] == "spilled" for r in refs) >= 7
    for i, ref in enumerate(refs):  # restored on access (mapped from the spill file)
        arr = runtime.get(ref)
        assert arr.nbytes == 20 * MB and arr[0] == i and arr[-1] == i
        del arr
    assert runtime.get(checksum.remote(refs[0])) == 0  # another process maps a spilled object
    assert runtime.get(checksum.remote(refs[9])) == 9 * 20 * MB
    spill_dir = stats["spill_dir"]
    assert files_under(spill_dir)
    del refs, ref
    wait_until(lambda: not files_under(spill_dir), "the spill files are removed")
    assert store.stats()["spilled"] == 0


def test_task_results_past_the_capacity_spill_on_their_node(small_store: None) -> None:
    refs = [make.remote(25 * MB, i) for i in range(8)]  # 200 MB made on a 64 MiB node
    for i, ref in enumerate(refs):
        arr = runtime.get(ref)
        assert arr.nbytes == 25 * MB and arr[0] == i and arr[-1] == i
        del arr
    rows = [r for r in _state.list_state("objects") if r["object_id"] in {x.hex() for x in refs}]
    assert sum(r["where"] == "spilled" for r in rows) >= 5
    paths = [r["path"] for r in _state.list_state("objects") if r.get("path")]
    del refs, ref, rows
    wait_until(lambda: not any(os.path.exists(p) for p in paths), "the node's files are gone")


def test_out_of_memory_names_the_task_when_nothing_can_spill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNTIME_OBJECT_SPILLING", "0")
    monkeypatch.setenv("RUNTIME_OBJECT_STORE_FULL_WAIT_S", "1")
    runtime.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        first = make.remote(40 * MB, 1)
        assert runtime.get(first)[0] == 1
        with pytest.raises(OutOfMemoryError, match=r"task .*make.*object store"):
            runtime.get(make.remote(40 * MB, 2), timeout=60)
        with pytest.raises(OutOfMemoryError, match=r"runtime\.put"):
            [runtime.put(np.zeros(40 * MB, dtype=np.uint8)) for _ in range(2)]
        del first  # freed: there is room again
        wait_until(
            lambda: not any(r["where"] == "shm" for r in _state.list_state("objects")),
            "the first result is freed",
        )
        assert runtime.get(make.remote(40 * MB, 3))[-1] == 3
    finally:
        runtime.shutdown()


def test_no_files_are_left_after_shutdown_or_by_a_killed_node() -> None:
    runtime.init(num_cpus=2)
    try:
        me = current_worker().peer_id
        nodes = [n for n in runtime.nodes() if not n["IsDriver"] and n["Resources"].get("CPU")]
        ids = [me, *(n["NodeID"] for n in nodes)]
        refs = [make.remote(4 * MB, i) for i in range(4)]
        kept = runtime.put(np.ones(4 * MB, dtype=np.uint8))
        runtime.get(refs)
        assert len(store_dirs(ids)) == len(ids)
        killed = nodes[0]["NodeID"]
        os.kill(nodes[0]["Pid"], signal.SIGKILL)  # it cannot clean up: the head does
        wait_until(lambda: store_dirs([killed]) == [], "the killed node's files are removed")
        del kept
    finally:
        runtime.shutdown()
    assert store_dirs(ids) == []
