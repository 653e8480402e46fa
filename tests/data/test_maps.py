"""Maps as Ray has them: callable classes on actor pools for map / map_batches / flat_map /
filter, their arguments, resources and batch formats, and the column operations."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from runtime import data
from runtime.data.expressions import col, lit
from tests.conftest import until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


class AddOffset:
    """Records the pid that built it, so a test can count constructions per actor."""

    def __init__(self, offset: int, *, scale: int = 1) -> None:
        self.offset = offset
        self.scale = scale
        self.pid = os.getpid()

    def __call__(self, row: dict[str, int], extra: int = 0) -> dict[str, int]:
        return {"id": row["id"], "v": row["id"] * self.scale + self.offset + extra, "pid": self.pid}


class Repeat:
    def __init__(self, times: int) -> None:
        self.times = times

    def __call__(self, row: dict[str, int]) -> list[dict[str, int]]:
        return [{"id": row["id"]}] * self.times


class KeepMultiples:
    def __init__(self, of: int) -> None:
        self.of = of

    def __call__(self, row: dict[str, int]) -> bool:
        return row["id"] % self.of == 0


class CountCalls:
    def __init__(self) -> None:
        self.built_at = time.time()
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), self.pid)}


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("model file is missing")

    def __call__(self, row: dict[str, int]) -> dict[str, int]:
        return row


def test_map_with_a_callable_class_passes_constructor_and_call_arguments() -> None:
    ds = data.range(20, override_num_blocks=4).map(
        AddOffset,
        fn_constructor_args=(100,),
        fn_constructor_kwargs={"scale": 3},
        fn_kwargs={"extra": 5},
        concurrency=2,
    )
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["v"] for r in rows] == [i * 3 + 105 for i in range(20)]
    assert len({r["pid"] for r in rows}) <= 2


def test_flat_map_and_filter_take_callable_classes() -> None:
    flat = data.range(5).flat_map(Repeat, fn_constructor_args=(3,), concurrency=1)
    assert sorted(r["id"] for r in flat.take_all()) == sorted(list(range(5)) * 3)
    kept = data.range(30).filter(KeepMultiples, fn_constructor_args=(7,), concurrency=(1, 2))
    assert sorted(r["id"] for r in kept.take_all()) == [0, 7, 14, 21, 28]


def test_a_fixed_pool_builds_the_class_once_per_actor() -> None:
    ds = data.range(400, override_num_blocks=20).map_batches(
        CountCalls, batch_size=10, concurrency=2
    )
    pids = {int(p) for p in ds.to_pandas()["pid"]}
    assert 1 <= len(pids) <= 2


def test_map_batches_passes_fn_args_and_kwargs_to_a_function() -> None:
    def scale(batch: dict[str, np.ndarray], k: int, *, shift: int) -> dict[str, np.ndarray]:
        return {"v": batch["id"] * k + shift}

    ds = data.range(6).map_batches(scale, fn_args=(10,), fn_kwargs={"shift": 1})
    assert sorted(r["v"] for r in ds.take_all()) == [1, 11, 21, 31, 41, 51]


def test_batches_are_read_only_views_by_default_and_writable_without_zero_copy() -> None:
    def writable(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"w": np.full(len(batch["id"]), batch["id"].flags.writeable)}

    # Ray 2.60's defaults: zero_copy_batch=True, batch_size=None (whole blocks).
    viewed = data.range(8, override_num_blocks=1).map_batches(writable)
    copied = data.range(8, override_num_blocks=1).map_batches(writable, zero_copy_batch=False)
    assert all(r["w"] for r in copied.take_all())
    assert not any(r["w"] for r in viewed.take_all())


def test_map_batches_hands_whole_blocks_by_default() -> None:
    def sizes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"n": np.full(len(batch["id"]), len(batch["id"]))}

    rows = data.range(3000, override_num_blocks=2).map_batches(sizes).take_all()
    assert sorted({r["n"] for r in rows}) == [1500]
    rows = data.range(3000, override_num_blocks=2).map_batches(sizes, batch_size=1000).take_all()
    assert sorted({r["n"] for r in rows}) == [500, 1000]


def test_a_constructor_that_raises_fails_the_dataset_naming_the_operator() -> None:
    ds = data.range(10).map(Broken, concurrency=1)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="model file is missing") as info:
        ds.take_all()
    assert "Map(Broken)" in str(info.value) or "Map(Broken)" in "".join(
        getattr(info.value, "__notes__", [])
    )
    assert time.monotonic() - t0 < 30

    from runtime.util.state import list_actors, list_tasks

    def nothing_left() -> bool:
        pools = [a for a in list_actors() if a["class_name"] == "_PoolWorker"]
        return all(a["state"] == "DEAD" for a in pools) and not list_tasks()

    until(nothing_left)


def test_a_function_cannot_take_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="fn_constructor_args"):
        data.range(3).map(lambda r: r, fn_constructor_args=(1,))
    with pytest.raises(ValueError, match="concurrency"):
        data.range(3).map(AddOffset, concurrency="many")  # type: ignore[arg-type]


def test_column_operations_select_drop_rename_add_with_column() -> None:
    ds = data.from_items([{"a": i, "b": 2 * i, "c": "x"} for i in range(6)])
    assert ds.select_columns(["b", "a"]).columns() == ["b", "a"]
    assert ds.drop_columns(["c"]).columns() == ["a", "b"]
    assert ds.rename_columns({"a": "A"}).columns() == ["A", "b", "c"]
    assert ds.rename_columns(["x", "y", "z"]).columns() == ["x", "y", "z"]
    added = ds.add_column("s", lambda df: df["a"] + df["b"])
    assert [r["s"] for r in added.take_all()] == [3 * i for i in range(6)]
    added_np = ds.add_column("t", lambda b: b["a"] * 10, batch_format="numpy")
    assert [r["t"] for r in added_np.take_all()] == [10 * i for i in range(6)]
    expr = ds.with_column("e", col("a") * 2 + lit(1))
    assert [r["e"] for r in expr.take_all()] == [2 * i + 1 for i in range(6)]
    assert [r["a"] for r in ds.filter(expr="a > 3 and b < 12").take_all()] == [4, 5]


def test_an_unknown_column_is_an_error_naming_it() -> None:
    ds = data.from_items([{"a": 1, "b": 2}])
    for bad in (
        ds.select_columns(["a", "nope"]),
        ds.drop_columns(["nope"]),
        ds.rename_columns({"nope": "x"}),
        ds.with_column("z", col("nope") + 1),
    ):
        with pytest.raises(KeyError, match="'nope'"):
            bad.take_all()


def test_ray_module_paths_import_the_same_objects() -> None:
    from runtime.data.aggregate import Count
    from runtime.data.block import BlockMetadata
    from runtime.data.context import DataContext
    from runtime.data.dataset import Dataset
    from runtime.data.datasource import Datasource, ReadTask
    from runtime.data.iterator import DataIterator

    assert (Count, BlockMetadata, DataContext, Dataset, Datasource, ReadTask, DataIterator) == (
        data.Count,
        data.BlockMetadata,
        data.DataContext,
        data.Dataset,
        data.Datasource,
        data.ReadTask,
        data.DataIterator,
    )
