"""More sources: images (Pillow), SQL (any DB-API connection factory) and torch datasets."""

from __future__ import annotations

import builtins
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from . import _block as B
from ._datasource import Datasource, ReadTask
from ._file_datasource import expand_paths

IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif"]


@dataclass
class _ImageRead:
    files: list[str]
    size: tuple[int, int] | None
    mode: str | None
    include_paths: bool

    def __call__(self) -> list[B.Block]:
        from PIL import Image

        images, paths = [], []
        for path in self.files:
            try:
                with Image.open(path) as opened:
                    img: Image.Image = opened
                    if self.mode is not None:
                        img = img.convert(self.mode)
                    if self.size is not None:
                        height, width = self.size
                        img = img.resize((width, height))
                    images.append(np.asarray(img))
            except OSError as e:
                raise OSError(f"read_images: cannot read {path!r} as an image: {e}") from e
            paths.append(path)
        cols: dict[str, Any] = {"image": B.tensor_array_from_list(images)}
        if self.include_paths:
            cols["path"] = pa.array(paths, pa.string())
        return [pa.table(cols)]


class ImageDatasource(Datasource):
    """Image files decoded by Pillow into ``{"image": HxW(xC) uint8 array}`` rows."""

    def __init__(
        self,
        paths: Any,
        *,
        size: tuple[int, int] | None,
        mode: str | None,
        include_paths: bool,
        file_extensions: list[str] | None,
    ) -> None:
        if size is not None and (
            len(size) != 2 or not all(isinstance(d, int) and d > 0 for d in size)
        ):
            raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
        exts = tuple("." + e.lower().lstrip(".") for e in (file_extensions or IMAGE_EXTENSIONS))
        self.files = [f for f in expand_paths(paths) if f.lower().endswith(exts)]
        if not self.files:
            raise FileNotFoundError(f"no image files ({', '.join(exts)}) under {paths!r}")
        self.size = tuple(size) if size is not None else None
        self.mode = mode
        self.include_paths = include_paths

    def get_name(self) -> str:
        return "ReadImage"

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        n = max(1, min(parallelism, len(self.files)))
        bounds = [len(self.files) * i // n for i in builtins.range(n + 1)]
        return [
            ReadTask(
                _ImageRead(
                    self.files[a:b],
                    self.size,  # type: ignore[arg-type]
                    self.mode,
                    self.include_paths,
                )
            )
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]


@dataclass
class _SQLRead:
    sql: str
    connection_factory: Callable[[], Any]
    params: tuple[Any, ...] = ()
    batch_rows: int = 65536
    where: str | None = field(default=None)

    def __call__(self) -> list[B.Block]:
        conn = self.connection_factory()
        try:
            cur = conn.cursor()
            query = (
                self.sql
                if self.where is None
                else f"SELECT * FROM ({self.sql}) AS q WHERE {self.where}"
            )
            cur.execute(query, self.params) if self.params else cur.execute(query)
            names = [d[0] for d in cur.description]
            blocks = []
            while True:
                rows = cur.fetchmany(self.batch_rows)
                if not rows:
                    break
                cols = list(zip(*rows, strict=True))
                blocks.append(
                    pa.table({n: pa.array(list(c)) for n, c in zip(names, cols, strict=True)})
                )
            if not blocks:
                return [pa.table({n: pa.array([], pa.null()) for n in names})]
            return blocks
        finally:
            conn.close()


class SQLDatasource(Datasource):
    """Rows of a SQL query through a DB-API 2 connection made by ``connection_factory``."""

    def __init__(
        self,
        sql: str,
        connection_factory: Callable[[], Any],
        shard_keys: list[str] | None = None,
    ) -> None:
        if not isinstance(sql, str):
            raise TypeError(f"read_sql needs a SQL string, got {type(sql).__name__}")
        if not callable(connection_factory):
            raise TypeError(
                "read_sql needs a connection_factory: a function returning a connection"
            )
        # Run the query's description once here, so a bad query fails before anything runs.
        conn = connection_factory()
        try:
            cur = conn.cursor()
            cur.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
            self.columns = [d[0] for d in cur.description]
        finally:
            conn.close()
        for k in shard_keys or []:
            if k not in self.columns:
                raise KeyError(
                    f"read_sql: shard key {k!r} is not a column of the query ({self.columns})"
                )
        self.sql = sql
        self.factory = connection_factory
        self.shard_keys = list(shard_keys or [])

    def get_name(self) -> str:
        return "ReadSQL"

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        if not self.shard_keys or parallelism <= 1:
            return [ReadTask(_SQLRead(self.sql, self.factory))]
        key = " + ".join(f"ABS({k})" for k in self.shard_keys)
        return [
            ReadTask(_SQLRead(self.sql, self.factory, where=f"(({key}) % {parallelism}) = {i}"))
            for i in builtins.range(parallelism)
        ]


def torch_item(value: Any) -> Any:
    """A torch sample with tensors as numpy arrays (tuples and lists kept, dicts kept)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        arr = value.detach().cpu().numpy()
        return arr.item() if arr.ndim == 0 else arr
    if isinstance(value, dict):
        return {k: torch_item(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(torch_item(v) for v in value)
    return value


def read_images_paths_ok(paths: Any) -> None:
    if isinstance(paths, (str, os.PathLike)):
        return
    if not isinstance(paths, (list, tuple)):
        raise TypeError(f"read_images needs a path or a list of paths, got {paths!r}")
