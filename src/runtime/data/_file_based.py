"""FileBasedDatasource: Ray's base class for custom file formats (``_read_stream``)."""

from __future__ import annotations

import builtins
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from . import _block as B
from ._datasource import Datasource, ReadTask
from ._file_datasource import as_arrow_filesystem, expand_fs_paths, expand_paths


@dataclass
class _StreamRead:
    source: FileBasedDatasource
    files: list[str]

    def __call__(self) -> Iterator[B.Block]:
        import pyarrow.fs as pafs

        fs = self.source._filesystem or pafs.LocalFileSystem()
        for path in self.files:
            target = path if self.source._filesystem is not None else os.path.abspath(path)
            with fs.open_input_stream(target) as f:
                for out in self.source._read_stream(f, path):
                    block = out if isinstance(out, pa.Table) else B.block_from_batch(out)
                    if self.source._include_paths:
                        block = block.append_column(
                            "path", pa.array([path] * block.num_rows, pa.string())
                        )
                    yield block


class FileBasedDatasource(Datasource):
    """Files read by a subclass's ``_read_stream(f, path)``, which yields blocks
    (``pyarrow.Table`` s, dicts of arrays or DataFrames) from an open ``pyarrow`` stream.

    Example::

        class Lines(FileBasedDatasource):
            def _read_stream(self, f, path):
                yield {"line": f.readall().decode().splitlines()}

        ds = data.read_datasource(Lines("logs/", file_extensions=["log"]))
    """

    def __init__(
        self,
        paths: str | list[str],
        *,
        filesystem: Any = None,
        include_paths: bool = False,
        file_extensions: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        del kwargs  # Ray's schema, open_stream_args, meta_provider, ... are not used here
        exts = (
            tuple("." + e.lower().lstrip(".") for e in file_extensions) if file_extensions else None
        )
        self._filesystem = as_arrow_filesystem(filesystem)
        if self._filesystem is not None:
            files, _ = expand_fs_paths(self._filesystem, paths, exts)
        else:
            files = expand_paths(paths, exts)
        self._paths = files
        self._include_paths = include_paths

    def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
        """Yield the blocks of one open file (override this)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _read_stream(f, path)")

    def estimate_inmemory_data_size(self) -> int | None:
        if self._filesystem is not None:
            return None
        return sum(os.path.getsize(p) for p in self._paths)

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        n = max(1, min(parallelism, len(self._paths)))
        bounds = [len(self._paths) * i // n for i in builtins.range(n + 1)]
        return [
            ReadTask(_StreamRead(self, self._paths[a:b]))
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
