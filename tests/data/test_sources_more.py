"""Images (Pillow), SQL (sqlite3 through a connection factory) and torch datasets."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from runtime import data

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


def _images(tmp_path: Path, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    image = pytest.importorskip("PIL.Image")
    out = []
    for i, (h, w) in enumerate(shapes):
        arr = np.full((h, w, 3), i * 20, dtype=np.uint8)
        arr[0, 0] = [1, 2, 3]
        image.fromarray(arr).save(tmp_path / f"img{i}.png")
        out.append(arr)
    (tmp_path / "notes.txt").write_text("not an image")
    return out


def test_read_images_makes_a_tensor_column_of_the_pixels(tmp_path: Path) -> None:
    arrays = _images(tmp_path, [(8, 6)] * 4)
    ds = data.read_images(str(tmp_path), include_paths=True)
    assert isinstance(ds.schema().field("image").type, pa.FixedShapeTensorType)
    rows = sorted(ds.take_all(), key=lambda r: r["path"])
    assert [os.path.basename(r["path"]) for r in rows] == [f"img{i}.png" for i in range(4)]
    for r, want in zip(rows, arrays, strict=True):
        np.testing.assert_array_equal(r["image"], want)


def test_read_images_resizes_and_converts(tmp_path: Path) -> None:
    _images(tmp_path, [(8, 6), (5, 9)])
    batch = data.read_images(str(tmp_path), size=(4, 3), mode="L").take_batch(2)
    assert batch["image"].shape == (2, 4, 3) and batch["image"].dtype == np.uint8
    ragged = data.read_images(str(tmp_path)).take_all()
    assert sorted(r["image"].shape for r in ragged) == [(5, 9, 3), (8, 6, 3)]
    with pytest.raises(ValueError, match="size"):
        data.read_images(str(tmp_path), size=(0, 3))


def _db(tmp_path: Path) -> str:
    path = str(tmp_path / "t.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER, name TEXT, price REAL)")
    conn.executemany(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", i * 1.5) for i in range(50)]
    )
    conn.commit()
    conn.close()
    return path


def test_read_sql_reads_a_query_through_a_connection_factory(tmp_path: Path) -> None:
    path = _db(tmp_path)
    ds = data.read_sql("SELECT id, price FROM items WHERE id >= 10", lambda: sqlite3.connect(path))
    rows = ds.take_all()
    assert len(rows) == 40 and ds.columns() == ["id", "price"]
    assert sum(r["price"] for r in rows) == pytest.approx(sum(i * 1.5 for i in range(10, 50)))
    sharded = data.read_sql(
        "SELECT * FROM items",
        lambda: sqlite3.connect(path),
        shard_keys=["id"],
        override_num_blocks=4,
    )
    assert sharded.num_blocks() == 4
    assert sorted(r["id"] for r in sharded.take_all()) == list(range(50))


def test_read_sql_with_a_bad_query_fails_before_anything_runs(tmp_path: Path) -> None:
    path = _db(tmp_path)
    with pytest.raises(sqlite3.OperationalError, match="no_table"):
        data.read_sql("SELECT * FROM no_table", lambda: sqlite3.connect(path))


def test_from_torch_rows_hold_each_sample() -> None:
    torch = pytest.importorskip("torch")

    class Squares(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> object:
            return torch.full((3,), float(i * i))

    ds = data.from_torch(Squares())
    batch = ds.take_batch(5)
    assert batch["item"].shape == (5, 3)
    assert batch["item"][:, 0].tolist() == [0.0, 1.0, 4.0, 9.0, 16.0]


def test_a_file_based_datasource_reads_each_file_through_read_stream(tmp_path: Path) -> None:
    from runtime.data.datasource import FileBasedDatasource

    class Lines(FileBasedDatasource):
        def _read_stream(self, f: object, path: str) -> object:
            text = f.readall().decode()  # type: ignore[attr-defined]
            yield {"line": np.array(text.splitlines())}

    for i in range(3):
        (tmp_path / f"f{i}.log").write_text(f"a{i}\nb{i}\n")
    (tmp_path / "skip.txt").write_text("not read\n")
    ds = data.read_datasource(Lines(str(tmp_path), file_extensions=["log"], include_paths=True))
    rows = ds.take_all()
    assert sorted(r["line"] for r in rows) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert {os.path.basename(r["path"]) for r in rows} == {"f0.log", "f1.log", "f2.log"}


def test_write_datasink_runs_write_in_tasks_and_its_hooks_in_the_driver(tmp_path: Path) -> None:
    from runtime.data.datasource import Datasink, RowBasedFileDatasink, WriteResult

    class ImageSink(RowBasedFileDatasink):
        def write_row_to_file(self, row: dict[str, object], file: object) -> None:
            import io

            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(row["image"]).save(buffer, format="png")  # type: ignore[arg-type]
            file.write(buffer.getvalue())  # type: ignore[attr-defined]

    pytest.importorskip("PIL")
    images = [{"image": np.full((4, 5, 3), i, dtype=np.uint8)} for i in range(6)]
    out = tmp_path / "out"
    data.from_items(images, override_num_blocks=3).write_datasink(
        ImageSink(str(out), file_format="png")
    )
    back = data.read_images(str(out)).take_all()
    assert sorted(int(r["image"][0, 0, 0]) for r in back) == list(range(6))

    seen: list[WriteResult] = []

    class Counting(Datasink):
        def write(self, blocks: object, ctx: object) -> int:
            return sum(b.num_rows for b in blocks)  # type: ignore[attr-defined]

        def on_write_complete(self, write_result: WriteResult) -> None:
            seen.append(write_result)

    data.range(100, override_num_blocks=4).write_datasink(Counting())
    assert seen[0].num_rows == 100 and sum(seen[0].write_returns) == 100

    failures: list[Exception] = []

    class Failing(Datasink):
        def write(self, blocks: object, ctx: object) -> None:
            raise OSError("disk full")

        def on_write_failed(self, error: Exception) -> None:
            failures.append(error)

    with pytest.raises(OSError, match="disk full"):
        data.range(10).write_datasink(Failing())
    assert len(failures) == 1


def test_rays_documented_image_datasource_runs_on_local_files(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from runtime.data._internal.delegating_block_builder import DelegatingBlockBuilder
    from runtime.data.datasource import FileBasedDatasource

    class ImageDatasource(FileBasedDatasource):
        def __init__(self, paths: str, *, mode: str) -> None:
            super().__init__(paths, file_extensions=["png"])
            self.mode = mode

        def _read_stream(self, f: object, path: str) -> object:
            import io

            from PIL import Image

            image = Image.open(io.BytesIO(f.readall())).convert(self.mode)  # type: ignore[attr-defined]
            builder = DelegatingBlockBuilder()
            builder.add({"image": np.array(image)})
            yield builder.build()

    arrays = _images(tmp_path, [(6, 7)] * 3)
    rows = data.read_datasource(ImageDatasource(str(tmp_path), mode="RGB")).take_all()
    got = sorted(int(r["image"][1, 1, 0]) for r in rows)
    assert got == sorted(int(a[1, 1, 0]) for a in arrays) and rows[0]["image"].shape == (6, 7, 3)
