"""Datasinks: Ray's plug point for writing (``Dataset.write_datasink``), and the file sinks
whose subclasses write one row or one block per file."""

from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from . import _block as B
from ._transforms import Transform


@dataclass
class TaskContext:
    """What a ``Datasink.write`` call knows about its task (Ray's ``TaskContext``)."""

    task_idx: int
    op_name: str = "Write"


@dataclass
class WriteResult:
    """What ``on_write_complete`` gets: rows and bytes written, and each write's return."""

    num_rows: int
    size_bytes: int
    write_returns: list[Any] = field(default_factory=list)


class Datasink:
    """Base class for custom writers: override :meth:`write` (run in tasks, one call per
    block); :meth:`on_write_start` / :meth:`on_write_complete` / :meth:`on_write_failed`
    run in the driver."""

    def on_write_start(self) -> None:
        """Before any block is written."""

    def write(self, blocks: Any, ctx: TaskContext) -> Any:
        """Write ``blocks`` (an iterable of ``pyarrow.Table`` s); the return value is passed
        to :meth:`on_write_complete` in ``WriteResult.write_returns``."""
        raise NotImplementedError(f"{type(self).__name__} must implement write(blocks, ctx)")

    def on_write_complete(self, write_result: WriteResult) -> None:
        """After every block was written."""

    def on_write_failed(self, error: Exception) -> None:
        """When a write failed (the error is raised after this returns)."""

    def get_name(self) -> str:
        name = type(self).__name__
        return (
            name[: -len("Datasink")] if name.endswith("Datasink") and name != "Datasink" else name
        )


class _FileDatasink(Datasink):
    def __init__(self, path: str, *, file_format: str = "bin", **kwargs: Any) -> None:
        del kwargs
        path = os.fspath(path)
        if "://" in path and not path.startswith("file://"):
            raise ValueError(f"only local paths are supported, got {path!r}")
        self.path = os.path.abspath(path.removeprefix("file://"))
        self.file_format = file_format
        self.prefix = uuid.uuid4().hex[:12]

    def on_write_start(self) -> None:
        os.makedirs(self.path, exist_ok=True)

    def _open_write(self, name: str, fn: Any) -> str:
        import pyarrow as pa

        target = os.path.join(self.path, name)
        tmp = target + ".tmp"
        with pa.OSFile(tmp, "wb") as f:
            fn(f)
        os.replace(tmp, target)  # a reader never sees half a file
        return target


class RowBasedFileDatasink(_FileDatasink):
    """One file per row, written by ``write_row_to_file(row, file)`` (override it)."""

    def write_row_to_file(self, row: dict[str, Any], file: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write_row_to_file")

    def write(self, blocks: Any, ctx: TaskContext) -> Any:
        written = []
        for b, block in enumerate(blocks):
            for i, row in enumerate(B.iter_rows(block)):
                name = f"{self.prefix}_{ctx.task_idx:06d}_{b:03d}_{i:06d}.{self.file_format}"
                written.append(
                    self._open_write(name, lambda f, r=row: self.write_row_to_file(r, f))
                )
        return written


class BlockBasedFileDatasink(_FileDatasink):
    """One file per block, written by ``write_block_to_file(block, file)`` (override it)."""

    def write_block_to_file(self, block: pa.Table, file: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write_block_to_file")

    def write(self, blocks: Any, ctx: TaskContext) -> Any:
        written = []
        for b, block in enumerate(blocks):
            if block.num_rows == 0:
                continue
            name = f"{self.prefix}_{ctx.task_idx:06d}_{b:03d}.{self.file_format}"
            written.append(
                self._open_write(name, lambda f, blk=block: self.write_block_to_file(blk, f))
            )
        return written


@dataclass
class SinkWrite(Transform):
    """Calls the datasink's ``write`` on a block; the block becomes one row holding the
    pickled return value, its rows and bytes."""

    sink: Datasink
    name: str = "Write"

    def __call__(self, block: B.Block, index: int, env: dict[str, Any]) -> B.Block:
        ctx = TaskContext(index * 1000 + int(env.get("piece", 0)), self.name)
        result = self.sink.write([block], ctx)
        return pa.table(
            {
                "result": pa.array([pickle.dumps(result)], pa.binary()),
                "rows": pa.array([block.num_rows], pa.int64()),
                "bytes": pa.array([block.nbytes], pa.int64()),
            }
        )


def write_datasink(ds: Any, sink: Datasink) -> None:
    """Write every block of ``ds`` through ``sink`` in tasks, with its driver-side hooks."""
    import runtime

    if not isinstance(sink, Datasink):
        raise TypeError(f"write_datasink needs a Datasink, got {type(sink).__name__}")
    sink.on_write_start()
    written = ds._map(SinkWrite(sink, name=f"Write{sink.get_name()}"))
    try:
        tables = [runtime.get(b.ref) for b in written._execute()]
    except Exception as e:
        sink.on_write_failed(e)
        raise
    ds._stats = written._stats
    table = B.concat([t for t in tables if t.num_rows])
    returns = (
        [pickle.loads(v) for v in table.column("result").to_pylist()] if table.num_rows else []
    )
    rows = sum(table.column("rows").to_pylist()) if table.num_rows else 0
    size = sum(table.column("bytes").to_pylist()) if table.num_rows else 0
    sink.on_write_complete(WriteResult(rows, size, returns))
