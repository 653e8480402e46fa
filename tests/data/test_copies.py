"""Copies a fused task avoids: numpy batches of a block the reader just made are writable
views of it (no copy), every other block's batches are writable copies, and Parquet row
groups come back as one chunk per column."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime import data
from runtime.data import _transforms as T
from runtime.data._datasource import ReadTask
from runtime.data._file_datasource import _ParquetRead

pytestmark = pytest.mark.timeout(60)


def _parquet(path: str, rows: int = 1000, row_group: int = 250) -> str:
    table = pa.table({"a": np.arange(rows, dtype=np.float64), "b": np.arange(rows)})
    pq.write_table(table, path, row_group_size=row_group)
    return path


def test_a_private_block_gives_writable_views_that_share_its_memory() -> None:
    block = pa.table({"a": np.arange(10, dtype=np.float64)})
    view = block.column("a").chunk(0).to_numpy()
    out = T.writable_batch(block, {"a": view}, private=True)
    assert out["a"].flags.writeable and np.shares_memory(out["a"], view)
    out["a"][0] = 42.0
    assert block.column("a")[0].as_py() == 42.0


def test_a_block_that_is_not_private_gives_writable_copies() -> None:
    user_array = np.arange(10, dtype=np.float64)
    block = pa.table({"a": user_array})  # wraps the user's array without a copy
    view = block.column("a").chunk(0).to_numpy()
    out = T.writable_batch(block, {"a": view}, private=False)
    assert out["a"].flags.writeable and not np.shares_memory(out["a"], user_array)
    out["a"][0] = 42.0
    assert user_array[0] == 0.0


def test_a_block_with_nulls_or_several_chunks_is_copied_or_kept_as_numpy_made_it() -> None:
    nulls = pa.table({"a": pa.array([1.0, None, 3.0])})
    v = nulls.column("a").to_numpy()
    assert not np.shares_memory(T.writable_batch(nulls, {"a": v}, private=True)["a"], v)
    chunked = pa.Table.from_batches(
        [pa.record_batch({"a": np.arange(3.0)}), pa.record_batch({"a": np.arange(3.0)})]
    )
    joined = chunked.column("a").to_numpy()  # numpy's own array: no second copy
    got = T.writable_batch(chunked, {"a": joined}, private=False)["a"]
    assert got.flags.writeable
    assert got is joined or not joined.flags.owndata


def test_only_the_first_step_after_the_reader_gets_its_block_without_a_copy(
    tmp_path: os.PathLike[str],
) -> None:
    path = _parquet(os.path.join(tmp_path, "x.parquet"))
    firsts: list[np.ndarray] = []
    seconds: list[bool] = []

    def first(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        firsts.append(batch["a"])
        batch["a"] *= 2  # in place, on the reader's table
        return batch

    def second(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seconds.append(any(np.shares_memory(batch["a"], f) for f in firsts))
        batch["a"] += 1
        return batch

    steps: list[T.Transform] = [
        T.MapBatches(first, None, "numpy"),
        T.MapBatches(second, None, "numpy"),
    ]
    read = ReadTask(_ParquetRead(path, [0, 1, 2, 3], None, False))
    items = list(T.run_fused_streaming(read, 0, steps, 1 << 30))
    blocks = items[::2]
    got = np.concatenate([b.column("a").to_numpy() for b in blocks])
    np.testing.assert_array_equal(got, np.arange(1000) * 2.0 + 1)
    # The first step's batches are views of the reader's tables (Arrow buffers, not numpy
    # arrays, own their memory); the second step's are copies of the first step's output.
    assert len(firsts) == 4 and all(isinstance(_owner(f), pa.Buffer) for f in firsts)
    assert seconds == [False] * 4
    np.testing.assert_array_equal(pq.read_table(path).column("a").to_numpy(), np.arange(1000.0))


def test_parquet_row_groups_are_read_as_one_chunk_per_column(
    tmp_path: os.PathLike[str],
) -> None:
    path = _parquet(os.path.join(tmp_path, "x.parquet"), rows=400_000, row_group=200_000)
    tables = list(_ParquetRead(path, [0, 1], ["a"], False)())
    assert [t.num_rows for t in tables] == [200_000, 200_000]
    assert [t.column("a").num_chunks for t in tables] == [1, 1]
    assert tables[0].column_names == ["a"]


@pytest.mark.usefixtures("cluster")
def test_in_place_batch_edits_in_a_pipeline_change_only_its_output(
    tmp_path: os.PathLike[str],
) -> None:
    path = _parquet(os.path.join(tmp_path, "x.parquet"))
    source = np.arange(1000, dtype=np.float64)

    def double(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["a"] *= 2
        return batch

    writable = {"zero_copy_batch": False}  # Ray 2.60's default hands read-only views
    from_file = data.read_parquet(path).map_batches(double, **writable)
    from_file = from_file.map_batches(double, **writable)
    assert sorted(r["a"] for r in from_file.take_all()) == list(source * 4)
    from_memory = data.from_numpy(source).map_batches(lambda b: {"data": b["data"] * 1})
    doubled = from_memory.map_batches(_double_data, **writable)
    assert sorted(r["data"] for r in doubled.take_all()) == list(source * 2)
    np.testing.assert_array_equal(source, np.arange(1000.0))  # the driver's array is intact
    with pytest.raises(ValueError, match="read-only"):
        data.read_parquet(path).map_batches(double).take_all()


def _double_data(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch["data"] *= 2
    return batch


def _owner(array: np.ndarray) -> object:
    base: object = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base
