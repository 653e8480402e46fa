"""Sources, map-like transforms and consumption, each checked against numpy/pandas."""

from __future__ import annotations

import io
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import runtime
from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(data.__all__) == data.__all__
    assert set(data.__all__) == {
        "ActorPoolStrategy", "AggregateFn", "BlockMetadata", "Count", "DataContext",
        "DataIterator", "Dataset", "Datasource", "GroupedData", "MaterializedDataset", "Max",
        "Mean", "Min", "ReadTask", "Std", "Sum", "from_arrow", "from_items", "from_numpy",
        "from_pandas", "from_torch", "range", "range_tensor", "read_binary_files", "read_csv",
        "read_datasource", "read_images", "read_json", "read_numpy", "read_parquet",
        "read_sql", "read_text",
    }  # fmt: skip
    for name in data.__all__:
        assert getattr(data, name).__doc__, name


def test_range_rows_are_ids_and_count_comes_from_metadata() -> None:
    ds = data.range(1000)
    assert ds.count() == 1000
    assert ds.take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert [r["id"] for r in ds.take_all()] == list(range(1000))
    assert ds.columns() == ["id"]
    assert ds.schema().field("id").type == pa.int64()


def test_sources_from_driver_data_match_their_input() -> None:
    df = pd.DataFrame(
        {"a": np.arange(50), "b": np.arange(50) * 0.5, "c": [str(i) for i in range(50)]}
    )
    assert data.from_pandas(df).to_pandas().equals(df)
    assert data.from_arrow(pa.Table.from_pandas(df)).to_pandas().equals(df)
    items = [{"x": i, "y": f"s{i}"} for i in range(30)]
    assert data.from_items(items).take_all() == items
    assert data.from_items([1, 2, 3]).take_all() == [{"item": 1}, {"item": 2}, {"item": 3}]
    arr = np.arange(24).reshape(6, 2, 2)
    batch = data.from_numpy(arr).take_batch(6)
    np.testing.assert_array_equal(batch["data"], arr)


def test_map_filter_flat_map_match_python() -> None:
    ds = data.range(200)
    got = ds.map(lambda r: {"x": r["id"] * 3}).filter(lambda r: r["x"] % 2 == 0).take_all()
    assert [r["x"] for r in got] == [i * 3 for i in range(200) if (i * 3) % 2 == 0]
    flat = data.range(10).flat_map(lambda r: [{"v": r["id"]}] * r["id"]).take_all()
    assert [r["v"] for r in flat] == [i for i in range(10) for _ in range(i)]


@pytest.mark.parametrize("fmt", ["numpy", "pandas", "pyarrow"])
def test_map_batches_in_each_batch_format(fmt: str) -> None:
    def double(batch):  # type: ignore[no-untyped-def]
        if fmt == "numpy":
            assert isinstance(batch, dict) and isinstance(batch["id"], np.ndarray)
            return {"y": batch["id"] * 2}
        if fmt == "pandas":
            assert isinstance(batch, pd.DataFrame)
            return pd.DataFrame({"y": batch["id"] * 2})
        assert isinstance(batch, pa.Table)
        return pa.table({"y": pa.compute.multiply(batch["id"], 2)})

    ds = data.range(500).map_batches(double, batch_format=fmt, batch_size=64)
    assert ds.sum("y") == 2 * sum(range(500))
    assert [r["y"] for r in ds.take(4)] == [0, 2, 4, 6]


def test_map_batches_gets_at_most_batch_size_rows() -> None:
    sizes = (
        data.range(1000, override_num_blocks=3)
        .map_batches(lambda b: {"n": [len(b["id"])]}, batch_size=100)
        .take_all()
    )
    assert sum(r["n"] for r in sizes) == 1000
    assert max(r["n"] for r in sizes) == 100


def test_column_operations() -> None:
    ds = data.from_pandas(pd.DataFrame({"a": range(10), "b": range(10, 20)}))
    out = (
        ds.add_column("c", lambda df: df["a"] + df["b"])
        .drop_columns(["b"])
        .rename_columns({"a": "A"})
        .select_columns(["c", "A"])
        .to_pandas()
    )
    assert list(out.columns) == ["c", "A"]
    assert out["c"].tolist() == [a + b for a, b in zip(range(10), range(10, 20), strict=True)]


def test_column_aggregates_match_numpy() -> None:
    values = np.random.default_rng(0).normal(size=777)
    ds = data.from_pandas(pd.DataFrame({"v": values}))
    assert ds.sum("v") == pytest.approx(values.sum())
    assert ds.min("v") == pytest.approx(values.min())
    assert ds.max("v") == pytest.approx(values.max())
    assert ds.mean("v") == pytest.approx(values.mean())
    assert ds.std("v") == pytest.approx(values.std(ddof=1))
    assert ds.aggregate(data.Count(), data.Sum("v"))["count()"] == 777


def test_limit_runs_only_what_it_needs() -> None:
    ds = data.range(10_000_000, override_num_blocks=1000).map(lambda r: {"id": r["id"] + 1})
    assert ds.limit(5).take_all() == [{"id": i} for i in range(1, 6)]
    assert ds.limit(5).count() == 5
    assert ds.take(2) == [{"id": 1}, {"id": 2}]


def test_iter_batches_cuts_exact_batches_across_blocks() -> None:
    ds = data.range(1003, override_num_blocks=7)
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=100)]
    assert sizes == [100] * 10 + [3]
    assert [len(b["id"]) for b in ds.iter_batches(batch_size=100, drop_last=True)] == [100] * 10
    frames = list(ds.iter_batches(batch_size=500, batch_format="pandas"))
    assert pd.concat(frames)["id"].tolist() == list(range(1003))
    assert [r["id"] for r in ds.iter_rows()] == list(range(1003))


def test_iter_torch_batches_gives_tensors() -> None:
    import torch

    batches = list(data.range(10).iter_torch_batches(batch_size=4, dtypes=torch.float32))
    assert [b["id"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0]["id"].dtype == torch.float32


def test_materialize_keeps_blocks_and_reuses_them() -> None:
    calls = data.range(100, override_num_blocks=4).map_batches(lambda b: {"id": b["id"]})
    mat = calls.materialize()
    assert isinstance(mat, data.MaterializedDataset)
    assert mat.num_blocks() == 4 and mat.count() == 100
    assert all(isinstance(r, runtime.ObjectRef) for r in mat.to_arrow_refs())
    assert mat.map(lambda r: {"id": -r["id"]}).min("id") == -99


def test_stats_report_each_fused_operator() -> None:
    ds = data.range(100).map(lambda r: r).filter(lambda r: True)
    assert "not executed" in ds.stats()
    ds.take_all()
    stats = ds.stats()
    assert "ReadRange->Map(<lambda>)->Filter(<lambda>)" in stats and "100 rows out" in stats


def test_a_failing_function_fails_with_its_exception_and_the_row() -> None:
    def bad(row):  # type: ignore[no-untyped-def]
        if row["id"] == 7:
            raise KeyError("seven")
        return row

    with pytest.raises(KeyError) as info:
        data.range(20).map(bad).take_all()
    assert "{'id': 7}" in "".join(getattr(info.value, "__notes__", []))

    with pytest.raises(ZeroDivisionError) as info2:
        data.range(20).map_batches(lambda b: 1 / 0, batch_size=5).take_all()
    assert "MapBatches(<lambda>) failed on a batch of" in "".join(
        getattr(info2.value, "__notes__", [])
    )


def test_bad_arguments_fail_before_any_work() -> None:
    with pytest.raises(TypeError):
        data.range(5).map(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_format"):
        data.range(5).map_batches(lambda b: b, batch_format="arrow2")
    with pytest.raises(ValueError, match="range"):
        data.range(-1)
    with pytest.raises(ValueError, match="limit"):
        data.range(3).limit(-2)
    with pytest.raises(TypeError, match="return a dict"):
        data.range(3).map(lambda r: 5).take_all()


def test_stats_of_a_barrier_include_the_pipeline_before_it() -> None:
    ds = data.range(100).map(lambda r: {"k": r["id"] % 2}).groupby("k").count()
    assert [r["count()"] for r in ds.take_all()] == [50, 50]
    stats = ds.stats()
    assert "ReadRange->Map" in stats and "Aggregate" in stats


def test_progress_is_quiet_when_stderr_is_not_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    assert data.DataContext.get_current().enable_progress_bars
    assert data.range(100).map(lambda r: r).count() == 100
    data.range(100).map(lambda r: r).take_all()
    assert capfd.readouterr().err == ""


def test_count_uses_read_task_metadata_without_running_them() -> None:
    class Counted(data.Datasource):
        def get_read_tasks(self, parallelism: int) -> list[data.ReadTask]:
            def never() -> list[dict[str, list[int]]]:
                raise AssertionError("count() should not read")

            return [data.ReadTask(never, data.BlockMetadata(10, 80)) for _ in range(3)]

    assert data.read_datasource(Counted()).map(lambda r: r).count() == 30


def _count_and_wait(batch: dict[str, np.ndarray], directory: str) -> dict[str, np.ndarray]:
    import os
    import time

    with open(os.path.join(directory, f"{int(batch['id'][0])}"), "w"):
        pass
    if batch["id"][0] > 0:
        time.sleep(0.5)  # a slow block: the consumer stops long before these finish
    return batch


@pytest.mark.timeout(60)
def test_stopping_early_cancels_the_work_not_yet_started(tmp_path: object) -> None:
    import os

    directory = str(tmp_path)
    ctx = data.DataContext.get_current()
    old = ctx.max_tasks_in_flight_per_op
    ctx.max_tasks_in_flight_per_op = 100  # all 100 tasks are submitted at once
    try:
        ds = data.range(100_000, override_num_blocks=100).map_batches(
            _count_and_wait, fn_kwargs={"directory": directory}, batch_size=None
        )
        assert ds.take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    finally:
        ctx.max_tasks_in_flight_per_op = old
    # A task queued after them runs once the cancelled ones are out of the way; uncancelled,
    # all 100 would run first (about 25 s on 2 CPUs).
    runtime.get([runtime.remote(lambda: None).remote() for _ in range(2)])
    assert len(os.listdir(directory)) < 50


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_each_operator_in_a_terminal_and_stay_off_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tqdm")
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.delenv("CI", raising=False)
    ds = data.range(100, override_num_blocks=4).map_batches(lambda b: b).filter(lambda r: True)
    ds.random_shuffle(seed=1).map(lambda r: r).take_all()
    out = term.getvalue()
    assert "ReadRange->MapBatches(<lambda>)->Filter(<lambda>)" in out and "Map(<lambda>)" in out
    assert "4 blocks" in out or "4/" in out or " 4 " in out

    term2 = _Terminal()
    monkeypatch.setattr(sys, "stderr", term2)
    monkeypatch.setenv("CI", "1")
    data.range(10).take_all()
    ctx = data.DataContext.get_current()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(ctx, "enable_progress_bars", False)
    data.range(10).take_all()
    assert term2.getvalue() == ""
