"""Writers: each block becomes one file, written by the task that made the block.

The write is one more fused transform, so ``read -> map -> write`` costs one task per block
and no block passes through the driver. Files are named ``<uuid>_<index>.<ext>`` under the
directory, so writers of several datasets into one directory do not collide.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import _block as B
from ._transforms import Transform

if TYPE_CHECKING:
    from ._dataset import Dataset

_EXT = {"parquet": "parquet", "csv": "csv", "json": "json", "numpy": "npy"}


@dataclass
class WriteBlock(Transform):
    path: str
    fmt: str
    prefix: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "Write"

    def __call__(self, block: B.Block, index: int, env: dict[str, Any]) -> B.Block:
        if block.num_rows == 0:
            return pa.table({"path": pa.array([], pa.string())})
        options = dict(self.options)
        partition_cols = list(options.pop("partition_cols", None) or [])
        max_rows = options.pop("max_rows_per_file", None)
        written: list[str] = []
        for directory, part in _partitions(block, partition_cols, self.path):
            pieces = (
                [part.slice(i, max_rows) for i in range(0, part.num_rows, max_rows)]
                if max_rows
                else [part]
            )
            for j, piece in enumerate(pieces):
                suffix = f"_{j:04d}" if len(pieces) > 1 else ""
                # A streaming read task's blocks share its index: its piece number tells them apart.
                part_no = env.get("piece", 0)
                stem = f"{self.prefix}_{index:06d}" + (f"_p{part_no:04d}" if part_no else "")
                name = f"{stem}{suffix}.{_EXT[self.fmt]}"
                written.append(self._write(piece, directory, name, options))
        return pa.table({"path": pa.array(written, pa.string())})

    def _write(self, block: B.Block, directory: str, name: str, options: dict[str, Any]) -> str:
        os.makedirs(directory, exist_ok=True)
        target = os.path.join(directory, name)
        tmp = target + ".tmp"
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(block, tmp, **options)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(block, tmp)
        elif self.fmt == "json":
            block.to_pandas().to_json(tmp, orient="records", lines=True)
        else:
            column = options["column"]
            np.save(tmp, B.to_numpy_batch(block.select([column]))[column], allow_pickle=False)
            os.replace(tmp + ".npy", tmp)
        os.replace(tmp, target)  # a reader never sees half a file
        return target


def _partitions(block: B.Block, cols: list[str], base: str) -> list[tuple[str, B.Block]]:
    """``(directory, rows)`` per distinct value of the partition columns (hive style:
    ``base/k1=v1/k2=v2``), the partition columns left out of the rows."""
    if not cols:
        return [(base, block)]
    missing = [c for c in cols if c not in block.column_names]
    if missing:
        raise KeyError(
            f"write_parquet: no partition column {missing[0]!r} (the dataset has columns "
            f"{block.column_names})"
        )
    keys = block.select(cols).to_pandas()
    out = []
    for values, idx in keys.groupby(cols, sort=True, dropna=False).indices.items():
        vals = values if isinstance(values, tuple) else (values,)
        directory = os.path.join(base, *[f"{c}={v}" for c, v in zip(cols, vals, strict=True)])
        out.append((directory, block.take(pa.array(idx)).drop_columns(cols)))
    return out


def write(ds: Dataset, path: str, fmt: str, options: dict[str, Any]) -> list[str]:
    """Write every block of ``ds`` to its own file in directory ``path``; the files written."""
    import runtime

    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if "://" in path:
        raise ValueError(f"only local paths are supported, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"write_{fmt} needs a directory, but {path!r} is a file")
    os.makedirs(path, exist_ok=True)
    for key in ("min_rows_per_file", "max_rows_per_file"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be an int >= 1, got {value!r}")
    min_rows = options.pop("min_rows_per_file", None)
    if min_rows:
        from . import _shuffle

        ds = ds._all_to_all("CoalesceForWrite", lambda b: _shuffle.coalesce(b, min_rows), True)
    written = ds._map(WriteBlock(os.path.abspath(path), fmt, uuid.uuid4().hex[:12], options))
    files: list[str] = []
    for bundle in written._execute():
        if bundle.meta.num_rows:
            files.extend(runtime.get(bundle.ref).column("path").to_pylist())
    ds._stats = written._stats
    return files
