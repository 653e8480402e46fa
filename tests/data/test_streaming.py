"""Streaming blocks: read tasks and maps send each block on as they make it (core's
streaming generators), and blocks are cut to ``DataContext.target_max_block_size``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


class _Gated(data.Datasource):
    """One read task: two blocks, then (only once ``go`` exists) a third one."""

    def __init__(self, go: str) -> None:
        self.go = go

    def get_read_tasks(self, parallelism: int) -> list[data.ReadTask]:
        go = self.go

        def read() -> Iterator[pa.Table]:
            yield pa.table({"x": [1, 2]})
            yield pa.table({"x": [3]})
            deadline = time.monotonic() + 30
            while not os.path.exists(go):
                if time.monotonic() > deadline:
                    raise TimeoutError("the first block never reached the consumer")
                time.sleep(0.01)
            yield pa.table({"x": [4]})

        return [data.ReadTask(read)]


def test_the_first_block_reaches_the_consumer_before_the_read_task_ends(tmp_path: Path) -> None:
    go = str(tmp_path / "go")
    batches = data.read_datasource(_Gated(go)).iter_batches(batch_size=None)
    first = next(batches)
    assert first["x"].tolist() == [1, 2]
    Path(go).touch()  # only now may the read task make its last block
    assert [b["x"].tolist() for b in batches] == [[3], [4]]


def test_blocks_are_cut_to_the_target_max_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = data.DataContext.get_current()
    monkeypatch.setattr(ctx, "target_max_block_size", 8_000)
    mat = data.range(10_000, override_num_blocks=1).map_batches(lambda b: b).materialize()
    import runtime

    sizes = [runtime.get(r).nbytes for r in mat.to_arrow_refs()]
    assert len(sizes) >= 10 and max(sizes) <= 8_000
    assert [r["id"] for r in mat.take_all()] == list(range(10_000))


def test_an_exploding_flat_map_yields_several_bounded_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = data.DataContext.get_current()
    monkeypatch.setattr(ctx, "target_max_block_size", 64_000)
    ds = data.range(4, override_num_blocks=1).flat_map(
        lambda r: [{"v": np.full(100, r["id"], dtype=np.float64)}] * 200
    )
    mat = ds.materialize()
    assert mat.num_blocks() >= 4 and mat.count() == 800
    assert [int(r["v"][0]) for r in mat.take_all()] == [i for i in range(4) for _ in range(200)]


def test_a_parquet_read_task_sends_each_row_group_as_a_block(tmp_path: Path) -> None:
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"x": list(range(1000))}), path, row_group_size=100)
    ds = data.read_parquet(path, override_num_blocks=1)
    assert ds.num_blocks() == 10
    assert [r["x"] for r in ds.take_all()] == list(range(1000))


def test_a_streaming_task_that_fails_mid_way_fails_the_dataset_with_its_error() -> None:
    def boom(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if batch["id"][0] >= 50:
            raise ValueError("bad batch")
        return batch

    with pytest.raises(ValueError, match="bad batch"):
        data.range(100, override_num_blocks=1).map_batches(boom, batch_size=10).take_all()


def test_the_per_operator_budget_follows_the_store_capacity_when_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import runtime
    from runtime.data import _executor

    ctx = data.DataContext.get_current()
    # Core reports the store's capacity (as Ray does): the budget follows it.
    capacity = runtime.cluster_resources()["object_store_memory"]
    expected = max(1 << 20, min(ctx.op_output_buffer_bytes, int(capacity / 2 / 3)))
    assert _executor.store_budget(ctx, 3) == expected
    # Ray reports it as the object_store_memory resource; then the stages share half of it.
    monkeypatch.setattr(
        runtime, "cluster_resources", lambda: {"CPU": 2.0, "object_store_memory": 600e6}
    )
    assert _executor.store_budget(ctx, 3) == 100_000_000
