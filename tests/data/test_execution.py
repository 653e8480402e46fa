"""The executor: bounded memory under backpressure, fusion, and recovery from a node's death."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

import runtime
from runtime import data


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def small_buffers() -> Iterator[data.DataContext]:
    ctx = data.DataContext.get_current()
    old = (ctx.op_output_buffer_bytes, ctx.max_tasks_in_flight_per_op)
    ctx.op_output_buffer_bytes = 32 * 1024 * 1024
    ctx.max_tasks_in_flight_per_op = 2
    try:
        yield ctx
    finally:
        ctx.op_output_buffer_bytes, ctx.max_tasks_in_flight_per_op = old


def _double(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": batch["id"].astype(np.float64) * 2}


STORE = 64 * 1024 * 1024


@pytest.fixture
def small_store() -> Iterator[None]:
    """A fresh mesh whose object stores hold 64 MiB each (then they would spill to disk)."""
    runtime.init(num_cpus=2, object_store_memory=STORE)
    try:
        yield
    finally:
        runtime.shutdown()


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("small_store", "small_buffers")
def test_a_pipeline_ten_times_the_object_store_streams_with_bounded_memory() -> None:
    pids = [n["Pid"] for n in runtime.nodes() if n["Resources"].get("CPU")] + [os.getpid()]
    block_rows = 1024 * 1024  # 8 MiB per block
    data.range(4 * block_rows, override_num_blocks=4).map_batches(_double, batch_size=None).count()
    base = {p: _rss(p) for p in pids}  # after a warm-up: libraries imported everywhere
    peak = dict(base)
    total = 0
    ds = data.range(80 * block_rows, override_num_blocks=80).map_batches(_double, batch_size=None)
    for batch in ds.iter_batches(batch_size=None):
        total += batch["x"].nbytes
        for p in pids:
            peak[p] = max(peak[p], _rss(p))
    bound = 2 * STORE
    assert total == 80 * block_rows * 8  # 640 MiB went through: 10x a node's store
    growth = {p: peak[p] - base[p] for p in pids}
    assert all(g < bound for g in growth.values()), growth


def _stored_block_bytes() -> int:
    """Bytes of the objects (blocks) the cluster holds right now, from the state API."""
    from runtime.util.state import list_objects

    return sum(int(r["size"]) for r in list_objects(limit=100_000) if int(r["size"]) > 1 << 20)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("small_store")
def test_the_executor_bounds_its_blocks_by_the_object_store_capacity_it_reads(
    tmp_path: os.PathLike[str],
) -> None:
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from runtime.data import _executor

    ctx = data.DataContext.get_current()
    assert ctx.op_output_buffer_bytes == 256 * 1024 * 1024  # the default: no tuning here
    assert runtime.cluster_resources()["object_store_memory"] == STORE  # as Ray reports it
    # One fused stage may hold half the store, not the 256 MiB default.
    assert _executor.store_budget(ctx, 1) == STORE // 2
    # Two files of 16 row groups of 4 MiB: two read tasks, each yielding 16 blocks.
    group = 512 * 1024
    for i in range(2):
        table = pa.table({"id": np.arange(16 * group, dtype=np.int64) + i * 16 * group})
        pq.write_table(table, os.path.join(tmp_path, f"{i}.parquet"), row_group_size=group)
    ds = data.read_parquet(str(tmp_path), override_num_blocks=2).map_batches(
        _double, batch_size=None
    )
    peak = rows = 0
    for batch in ds.iter_batches(batch_size=None):
        rows += len(batch["x"])
        time.sleep(0.1)  # a slow consumer: the read tasks run ahead as far as allowed
        peak = max(peak, _stored_block_bytes())
    assert rows == 32 * group
    stats = ds.stats()
    # What may exist at once: the budget and the one block that crosses it, two unconsumed
    # blocks in each read task's window plus the one it is making, and the consumer's
    # current and prefetched blocks. Tasks running ahead by core's default window (8 blocks
    # each) pass it (101 MB measured).
    block = 4 * 1024 * 1024
    bound = STORE // 2 + block + 2 * 3 * block + 2 * block
    assert peak <= bound, (peak, bound, stats)
    assert f"of a {STORE // 2 / 1e6:.1f} MB budget" in stats, stats


class _Square:
    """An actor-pool stage between two task stages."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"], "sq": batch["id"] ** 2}


def _slow_copy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import time

    time.sleep(0.05)  # stands for work, so the kill lands mid-pipeline
    return {"id": batch["id"]}


def _plus_one(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"id": batch["id"], "sq": batch["sq"] + 1}


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("mesh")
def test_a_node_killed_mid_pipeline_still_yields_the_full_result() -> None:
    victim = next(n["Pid"] for n in runtime.nodes() if n["Resources"].get("CPU"))
    # 20k rows per block: blocks live in the nodes' stores (not inlined), so the kill loses
    # some of them, and the tasks and the pool actor running there.
    ds = (
        data.range(600_000, override_num_blocks=30)
        .map_batches(_slow_copy, batch_size=None)
        .map_batches(_Square, concurrency=2, batch_size=None)
        .map_batches(_plus_one, batch_size=None, num_cpus=1)
    )
    ids: list[np.ndarray] = []
    sq: list[np.ndarray] = []
    for i, batch in enumerate(ds.iter_batches(batch_size=None)):
        if i == 3:
            os.kill(victim, signal.SIGKILL)
        ids.append(batch["id"])
        sq.append(batch["sq"])
    expect = np.arange(600_000)
    np.testing.assert_array_equal(np.concatenate(ids), expect)
    np.testing.assert_array_equal(np.concatenate(sq), expect**2 + 1)
