"""Tensor columns: ndarray values travel as Arrow tensor extension types and come back as
ndarrays of the right shape and dtype, in every batch format, through Parquet and torch."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def _rows(n: int = 50) -> tuple[np.ndarray, np.ndarray, list[dict[str, object]]]:
    rng = np.random.default_rng(0)
    x = rng.random((n, 6), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, [{"x": x[i], "y": int(y[i])} for i in range(n)]


def test_rows_of_arrays_go_to_torch_as_batch_by_six_tensors() -> None:
    torch = pytest.importorskip("torch")
    x, y, rows = _rows(50)
    ds = data.from_items(rows)
    batches = list(ds.iter_torch_batches(batch_size=16))
    assert [tuple(b["x"].shape) for b in batches] == [(16, 6), (16, 6), (16, 6), (2, 6)]
    assert batches[0]["x"].dtype == torch.float32
    got = torch.cat([b["x"] for b in batches]).numpy()
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(torch.cat([b["y"] for b in batches]).numpy(), y)


def test_the_schema_holds_arrow_fixed_shape_tensor_type() -> None:
    _, _, rows = _rows(8)
    typ = data.from_items(rows).schema().field("x").type
    assert isinstance(typ, pa.FixedShapeTensorType)
    assert typ.shape == [6] and typ.value_type == pa.float32()


def test_take_and_iter_rows_return_ndarrays_of_the_row_shape() -> None:
    x, _, rows = _rows(10)
    got = data.from_items(rows).take(3)
    assert all(isinstance(r["x"], np.ndarray) and r["x"].shape == (6,) for r in got)
    np.testing.assert_array_equal(np.stack([r["x"] for r in got]), x[:3])
    first = next(iter(data.range_tensor(5, shape=(2, 3)).iter_rows()))
    assert first["data"].shape == (2, 3) and first["data"].dtype == np.int64


@pytest.mark.parametrize("fmt", ["numpy", "pandas", "pyarrow"])
def test_iter_batches_gives_tensors_in_each_format(fmt: str) -> None:
    arr = np.arange(40 * 2 * 3, dtype=np.int32).reshape(40, 2, 3)
    batch = next(iter(data.from_numpy(arr).iter_batches(batch_size=40, batch_format=fmt)))
    if fmt == "numpy":
        got = batch["data"]
    elif fmt == "pandas":
        assert batch["data"].dtype == object
        got = np.stack(list(batch["data"]))
    else:
        assert isinstance(batch.schema.field("data").type, pa.FixedShapeTensorType)
        got = batch.column("data").combine_chunks().to_numpy_ndarray()
    assert got.shape == (40, 2, 3) and got.dtype == np.int32
    np.testing.assert_array_equal(got, arr)


def test_numpy_batches_are_zero_copy_views_of_the_block() -> None:
    arr = np.arange(64, dtype=np.float64).reshape(16, 4)
    batch = next(iter(data.from_numpy(arr).iter_batches(batch_size=None)))
    # A view of Arrow memory is read-only; a copy would be writable.
    assert batch["data"].shape == (16, 4) and not batch["data"].flags.writeable


def test_map_batches_returning_images_makes_a_tensor_column() -> None:
    ds = data.range(12, override_num_blocks=3).map_batches(
        lambda b: {
            "img": np.ones((len(b["id"]), 4, 4, 3), dtype=np.uint8)
            * b["id"][:, None, None, None].astype(np.uint8)
        }
    )
    out = ds.take_batch(12)["img"]
    assert out.shape == (12, 4, 4, 3) and out.dtype == np.uint8
    assert [int(v) for v in out[:, 0, 0, 0]] == list(range(12))


def test_ragged_arrays_use_the_variable_shape_type_and_keep_each_shape() -> None:
    rows = [{"x": np.full((i + 1, 2), i, dtype=np.float64)} for i in range(5)]
    ds = data.from_items(rows, override_num_blocks=2)
    assert ds.schema().field("x").type.extension_name == "runtime.variable_shape_tensor"
    got = [r["x"] for r in ds.take_all()]
    assert [g.shape for g in got] == [(i + 1, 2) for i in range(5)]
    assert all((g == i).all() for i, g in enumerate(got))


def test_blocks_of_different_fixed_shapes_combine_as_ragged() -> None:
    a = data.from_numpy(np.zeros((3, 2), dtype=np.float32))
    b = data.from_numpy(np.ones((2, 5), dtype=np.float32))
    batch = a.union(b).take_batch(5)
    assert [v.shape for v in batch["data"]] == [(2,)] * 3 + [(5,)] * 2


def test_a_ragged_column_to_torch_is_an_error_naming_the_column() -> None:
    pytest.importorskip("torch")
    rows = [{"feat": np.zeros(i + 1, dtype=np.float32)} for i in range(4)]
    with pytest.raises(ValueError, match="column 'feat' holds tensors of different shapes"):
        list(data.from_items(rows).iter_torch_batches(batch_size=4))


def test_parquet_round_trips_fixed_and_ragged_tensor_columns(tmp_path: Path) -> None:
    x, _, rows = _rows(20)
    data.from_items(rows).write_parquet(str(tmp_path / "fixed"))
    back = data.read_parquet(str(tmp_path / "fixed")).take_batch(20)
    np.testing.assert_array_equal(back["x"], x)
    ragged = [{"r": np.arange(i + 1, dtype=np.int16)} for i in range(6)]
    data.from_items(ragged).write_parquet(str(tmp_path / "ragged"))
    rows_back = data.read_parquet(str(tmp_path / "ragged")).take_all()
    assert [r["r"].tolist() for r in rows_back] == [list(range(i + 1)) for i in range(6)]
    assert rows_back[0]["r"].dtype == np.int16


def test_read_numpy_and_from_numpy_make_tensor_columns(tmp_path: Path) -> None:
    arr = np.arange(5 * 3 * 2, dtype=np.float64).reshape(5, 3, 2)
    np.save(tmp_path / "a.npy", arr)
    ds = data.read_numpy(str(tmp_path / "a.npy"))
    assert isinstance(ds.schema().field("data").type, pa.FixedShapeTensorType)
    np.testing.assert_array_equal(ds.take_batch(5)["data"], arr)


def test_pandas_round_trip_keeps_tensor_cells() -> None:
    x, _, rows = _rows(7)
    df = data.from_items(rows).to_pandas()
    assert df["x"].iloc[3].shape == (6,)
    back = data.from_pandas(df)
    assert isinstance(back.schema().field("x").type, pa.FixedShapeTensorType)
    np.testing.assert_array_equal(back.take_batch(7)["x"], x)


def test_tensor_blocks_pickle_with_their_types() -> None:
    from runtime.data._block import block_from_rows

    block = block_from_rows([{"v": np.zeros((i + 1,))} for i in range(3)])
    assert pickle.loads(pickle.dumps(block)).schema == block.schema


def test_torch_batches_wrap_read_only_block_memory_without_a_warning() -> None:
    torch = pytest.importorskip("torch")
    arr = np.arange(32 * 4, dtype=np.float32).reshape(32, 4)
    mat = data.from_numpy(arr).materialize()
    numpy_batch = next(iter(mat.iter_batches(batch_size=None)))["data"]
    torch_batch = next(iter(mat.iter_torch_batches(batch_size=None)))["data"]
    assert torch_batch.dtype == torch.float32 and tuple(torch_batch.shape) == (32, 4)
    np.testing.assert_array_equal(torch_batch.numpy(), arr)
    # The numpy batch is a read-only view of the block; torch wraps the same kind of view
    # (no copy), and the warning torch gives for that is not raised (warnings are errors).
    assert not numpy_batch.flags.writeable


def test_writing_into_a_torch_batch_changes_neither_the_dataset_nor_kills_the_process() -> None:
    torch = pytest.importorskip("torch")
    # Blocks made by tasks, big enough to live in a worker's store and be mapped, not inlined.
    arr = np.ones((64, 64, 64, 3), dtype=np.float32)
    mat = data.from_numpy(arr).map_batches(lambda b: {"data": b["data"] * 2}).materialize()
    seen = 0
    for batch in mat.iter_torch_batches(batch_size=16):
        t = batch["data"]
        t += 1  # a training loop's in-place op on the zero-copy batch
        assert torch.all(t == 3)
        seen += t.shape[0]
    assert seen == 64
    # The writes went to this process's private copies of the pages, not to the block.
    again = np.concatenate([b["data"] for b in mat.iter_batches(batch_size=None)])
    np.testing.assert_array_equal(again, arr * 2)


def test_a_big_array_becomes_blocks_that_map_in_parallel_and_keep_row_order() -> None:
    ctx = data.DataContext.get_current()
    old = ctx.target_max_block_size
    arr = np.arange(96 * 16 * 16 * 3, dtype=np.uint8).reshape(96, 16, 16, 3)
    ctx.target_max_block_size = arr.nbytes // 6
    try:
        ds = data.from_numpy(arr)
        assert ds.num_blocks() == 6
        out = ds.map_batches(lambda b: {"data": b["data"] * 2}).take_batch(96)
    finally:
        ctx.target_max_block_size = old
    assert out["data"].shape == (96, 16, 16, 3)
    np.testing.assert_array_equal(out["data"], arr * 2)


def test_a_compacted_slice_shares_the_block_memory_and_pickles_only_its_rows() -> None:
    from runtime.data import _block as B

    n, shape = 40, (8, 8, 3)
    arr = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    block = B.block_from_batch(
        {"data": arr, "i": np.arange(n), "half": np.arange(n).astype(np.float16),
         "name": [f"r{i}" for i in range(n)]}
    )  # fmt: skip
    piece = B.compact(block.slice(10, 5))
    data_buf = piece.column("data").chunk(0).storage.flatten().buffers()[1]
    assert data_buf.address == arr[10].ctypes.data  # a view, not a copy
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(piece, protocol=5, buffer_callback=buffers.append)
    assert sum(b.raw().nbytes for b in buffers) < 2 * 5 * arr[0].nbytes
    back = pickle.loads(payload, buffers=buffers)
    assert back.equals(block.slice(10, 5))
    np.testing.assert_array_equal(B.tensor_to_numpy(back.column("data")), arr[10:15])
    assert back.column("name").to_pylist() == [f"r{i}" for i in range(10, 15)]
