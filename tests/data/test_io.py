"""Readers and writers: round trips keep schema and rows; bad paths fail before work starts."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def _frame(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {"i": np.arange(n), "f": np.arange(n) / 3.0, "s": [f"row{i}" for i in range(n)]}
    )


def test_parquet_round_trip_keeps_schema_and_rows(tmp_path: os.PathLike[str]) -> None:
    df = _frame()
    out = os.path.join(tmp_path, "pq")
    data.from_pandas([df.iloc[:100], df.iloc[100:]]).write_parquet(out)
    files = sorted(os.listdir(out))
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)
    back = data.read_parquet(out)
    assert back.schema() == pa.Table.from_pandas(df, preserve_index=False).schema.remove_metadata()
    assert back.count() == 200
    assert back.to_pandas().sort_values("i").reset_index(drop=True).equals(df)


def test_parquet_row_groups_split_and_columns_push_down(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "one.parquet")
    pq.write_table(pa.Table.from_pandas(_frame(1000)), path, row_group_size=100)
    ds = data.read_parquet(path, columns=["f"], override_num_blocks=10)
    mat = ds.materialize()
    assert mat.num_blocks() == 10
    assert mat.columns() == ["f"]
    assert mat.sum("f") == pytest.approx((np.arange(1000) / 3.0).sum())
    with pytest.raises(ValueError, match="nope"):
        data.read_parquet(path, columns=["nope"])


def test_globs_directories_and_include_paths(tmp_path: os.PathLike[str]) -> None:
    for i in range(3):
        pq.write_table(pa.table({"x": [i, i]}), os.path.join(tmp_path, f"p{i}.parquet"))
    assert data.read_parquet(os.path.join(tmp_path, "p*.parquet")).count() == 6
    rows = data.read_parquet(str(tmp_path), include_paths=True).take_all()
    assert {os.path.basename(r["path"]) for r in rows} == {"p0.parquet", "p1.parquet", "p2.parquet"}


def test_csv_and_json_round_trips(tmp_path: os.PathLike[str]) -> None:
    df = _frame(50)
    csv_dir, json_dir = os.path.join(tmp_path, "c"), os.path.join(tmp_path, "j")
    data.from_pandas(df).write_csv(csv_dir)
    data.from_pandas(df).write_json(json_dir)
    assert data.read_csv(csv_dir).to_pandas().equals(df)
    back = data.read_json(json_dir).to_pandas()
    assert back["s"].tolist() == df["s"].tolist() and back["i"].tolist() == df["i"].tolist()
    lines = os.path.join(tmp_path, "x.jsonl")
    with open(lines, "w") as f:
        for i in range(5):
            f.write(json.dumps({"a": i}) + "\n")
    assert data.read_json(lines).sum("a") == 10


def test_numpy_text_and_binary(tmp_path: os.PathLike[str]) -> None:
    arr = np.arange(12).reshape(4, 3)
    np.save(os.path.join(tmp_path, "a.npy"), arr)
    np.testing.assert_array_equal(
        data.read_numpy(os.path.join(tmp_path, "a.npy")).take_batch(4)["data"], arr
    )
    out = os.path.join(tmp_path, "npout")
    data.from_numpy(arr).write_numpy(out, column="data")
    np.testing.assert_array_equal(np.load(os.path.join(out, os.listdir(out)[0])), arr)
    text = os.path.join(tmp_path, "t.txt")
    with open(text, "w") as f:
        f.write("hello\n\nworld\n")
    assert data.read_text(text).take_all() == [{"text": "hello"}, {"text": "world"}]
    rows = data.read_binary_files(text, include_paths=True).take_all()
    assert rows == [{"bytes": b"hello\n\nworld\n", "path": text}]


def test_custom_datasource() -> None:
    class Squares(data.Datasource):
        def get_read_tasks(self, parallelism: int) -> list[data.ReadTask]:
            return [data.ReadTask(lambda i=i: [{"x": np.array([i * i])}]) for i in range(5)]

    ds = data.read_datasource(Squares())
    assert sorted(r["x"] for r in ds.take_all()) == [0, 1, 4, 9, 16]
    with pytest.raises(TypeError):
        data.read_datasource("not a source")  # type: ignore[arg-type]


def test_bad_paths_and_files_fail_at_read_time(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.read_parquet(os.path.join(tmp_path, "missing"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        data.read_csv(os.path.join(tmp_path, "*.csv"))
    bogus = os.path.join(tmp_path, "bogus.parquet")
    with open(bogus, "w") as f:
        f.write("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet"):
        data.read_parquet(bogus)
    with pytest.raises(ValueError, match="local paths"):
        data.read_parquet("s3://bucket/x")
    with pytest.raises(NotADirectoryError):
        data.range(3).write_parquet(bogus)


def test_read_parquet_filter_partitioning_and_filesystems(tmp_path: os.PathLike[str]) -> None:
    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    base = os.path.join(tmp_path, "sales")
    for year in (2023, 2024):
        d = os.path.join(base, f"year={year}")
        os.makedirs(d)
        pq.write_table(
            pa.table({"x": list(range(10)), "v": [year] * 10}), os.path.join(d, "a.parquet")
        )
    ds = data.read_parquet(base)
    rows = ds.take_all()
    assert len(rows) == 20 and {r["year"] for r in rows} == {"2023", "2024"}
    kept = data.read_parquet(base, filter=(pc.field("x") >= 7) & (pc.field("year") == "2024"))
    assert sorted(r["x"] for r in kept.take_all()) == [7, 8, 9]
    assert data.read_parquet(base, partitioning=None).columns() == ["x", "v"]
    on_fs = data.read_parquet(base, filesystem=pafs.LocalFileSystem(), columns=["x", "year"])
    assert on_fs.count() == 20 and on_fs.columns() == ["x", "year"]
    fsspec = pytest.importorskip("fsspec")
    via_fsspec = data.read_parquet(base, filesystem=fsspec.filesystem("file"))
    assert sum(r["x"] for r in via_fsspec.take_all()) == 90


def test_read_parquet_passes_pyarrow_arguments_on_and_pyarrow_answers(
    tmp_path: os.PathLike[str],
) -> None:
    path = os.path.join(tmp_path, "t.parquet")
    pq.write_table(pa.table({"x": list(range(100))}), path)
    assert data.read_parquet(path, batch_size=10).count() == 100
    with pytest.raises(TypeError):
        data.read_parquet(path, no_such_pyarrow_option=1)


def test_write_parquet_partitions_and_rows_per_file(tmp_path: os.PathLike[str]) -> None:
    df = pd.DataFrame({"k": ["a", "b"] * 50, "v": range(100)})
    out = os.path.join(tmp_path, "parts")
    data.from_pandas([df.iloc[:50], df.iloc[50:]]).write_parquet(out, partition_cols=["k"])
    assert sorted(os.listdir(out)) == ["k=a", "k=b"]
    back = data.read_parquet(out).to_pandas().sort_values("v").reset_index(drop=True)
    assert back["k"].tolist() == df["k"].tolist()

    many = os.path.join(tmp_path, "many")
    data.range(100, override_num_blocks=2).write_parquet(many, max_rows_per_file=20)
    sizes = sorted(pq.read_metadata(os.path.join(many, f)).num_rows for f in os.listdir(many))
    assert sizes == [10, 10, 20, 20, 20, 20]

    few = os.path.join(tmp_path, "few")
    data.range(100, override_num_blocks=10).write_parquet(few, min_rows_per_file=30)
    sizes = [pq.read_metadata(os.path.join(few, f)).num_rows for f in os.listdir(few)]
    assert sorted(sizes) == [30, 30, 40]
