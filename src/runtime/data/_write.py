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
        os.makedirs(self.path, exist_ok=True)
        target = os.path.join(self.path, f"{self.prefix}_{index:06d}.{_EXT[self.fmt]}")
        tmp = target + ".tmp"
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(block, tmp, **self.options)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(block, tmp)
        elif self.fmt == "json":
            block.to_pandas().to_json(tmp, orient="records", lines=True)
        else:
            column = self.options["column"]
            np.save(tmp, B.to_numpy_batch(block.select([column]))[column], allow_pickle=False)
            os.replace(tmp + ".npy", tmp)
        os.replace(tmp, target)  # a reader never sees half a file
        return pa.table({"path": pa.array([target], pa.string())})


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
    written = ds._map(WriteBlock(os.path.abspath(path), fmt, uuid.uuid4().hex[:12], options))
    files: list[str] = []
    for bundle in written._execute():
        if bundle.meta.num_rows:
            files.extend(runtime.get(bundle.ref).column("path").to_pylist())
    ds._stats = written._stats
    return files
