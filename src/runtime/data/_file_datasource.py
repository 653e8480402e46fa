"""File sources: path expansion (files, directories, globs) and one reader per format.

Paths are checked in the driver before any task runs: a missing path, an empty match or an
unknown format is a clear error at ``read_*`` time. Parquet is split by row group (with
column selection pushed into the reader); other formats are read one file per task.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ._block import Block, BlockMetadata
from ._datasource import Datasource, ReadTask

_EXTENSIONS = {
    "parquet": (".parquet",),
    "csv": (".csv",),
    "json": (".json", ".jsonl"),
    "numpy": (".npy",),
    "text": None,
    "binary": None,
}


def expand_paths(
    paths: str | os.PathLike[str] | list[Any], file_extensions: Any = None
) -> list[str]:
    """Files named by ``paths`` (files, directories walked recursively, glob patterns)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise ValueError(f"paths must be a path or a non-empty list of paths, got {paths!r}")
    files: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if path.startswith("file://"):
            path = path[len("file://") :]
        if "://" in path:
            raise ValueError(
                f"only local paths are supported, got {path!r} (copy remote data locally first)"
            )
        if any(ch in path for ch in "*?["):
            matched = sorted(glob.glob(path, recursive=True))
            if not matched:
                raise FileNotFoundError(f"no files match the pattern {path!r}")
            for m in matched:
                files.extend(_filter(_walk(m), file_extensions) if os.path.isdir(m) else [m])
        elif os.path.isdir(path):
            files.extend(_filter(_walk(path), file_extensions))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path!r}")
    if not files:
        raise FileNotFoundError(f"no files found under {[os.fspath(p) for p in paths]!r}")
    return files


def _filter(files: list[str], extensions: Any) -> list[str]:
    return [f for f in files if f.endswith(tuple(extensions))] if extensions else files


def _walk(directory: str) -> list[str]:
    out: list[str] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        out.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith((".", "_")))
    return out


def _with_path(block: Block, path: str, include_paths: bool) -> Block:
    if include_paths:
        return block.append_column("path", pa.array([path] * block.num_rows, pa.string()))
    return block


def hive_values(path: str, base: str | None) -> dict[str, str]:
    """``{key: value}`` from ``key=value`` directories between ``base`` and the file."""
    rel = os.path.relpath(os.path.dirname(path), base) if base else os.path.dirname(path)
    out = {}
    for part in rel.replace(os.sep, "/").split("/"):
        if "=" in part:
            k, _, v = part.partition("=")
            if k:
                out[k] = v
    return out


def _fragment(path: str, filesystem: Any, row_groups: list[int] | None) -> Any:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    if filesystem is None:
        filesystem, path = pafs.LocalFileSystem(), os.path.abspath(path)
    return pads.ParquetFileFormat().make_fragment(
        path, filesystem=filesystem, row_groups=row_groups
    )


@dataclass
class _ParquetRead:
    path: str
    row_groups: list[int]
    columns: list[str] | None
    include_paths: bool
    partitions: dict[str, str] = field(default_factory=dict)
    filter: Any = None
    filesystem: Any = None
    scan_args: dict[str, Any] = field(default_factory=dict)
    #: The tables it yields are new and referenced by nothing else, so the task's first
    #: ``map_batches`` may hand out writable views of them instead of copies.
    private_blocks = True

    def __call__(self) -> Iterator[Block]:
        """One block per row group, yielded as it is read (a streaming read task sends
        each on before reading the next)."""
        import pyarrow.dataset as pads

        cols = self.columns
        if cols is not None:
            cols = [c for c in cols if c not in self.partitions]
        # One record batch per row group (the scanner's default cuts 131,072 rows), so each
        # column is one chunk and numpy batches are views, not a concatenation.
        args = {"use_threads": False, "batch_size": 1 << 30, **self.scan_args}
        for read in self._tables(cols, args, pads):
            table = read
            for k, v in self.partitions.items():
                if self.columns is None or k in self.columns:
                    table = table.append_column(k, pa.array([v] * table.num_rows, pa.string()))
            if self.columns is not None:
                table = table.select(self.columns)
            if self.filter is not None:
                table = table.filter(self.filter)
            yield _with_path(table, self.path, self.include_paths)

    def _tables(self, cols: list[str] | None, args: dict[str, Any], pads: Any) -> Iterator[Block]:
        """The row groups' tables: without scanner arguments, through one ``ParquetFile``
        (the file opened and its footer read once, not once per row group as fragments do)."""
        if self.scan_args or not self.row_groups:
            for groups in [[g] for g in self.row_groups] or [[]]:
                frag = _fragment(self.path, self.filesystem, groups)
                yield pads.Scanner.from_fragment(frag, columns=cols, **args).to_table()
            return
        import pyarrow.parquet as pq

        with contextlib.ExitStack() as stack:
            if self.filesystem is not None:
                source: Any = stack.enter_context(self.filesystem.open_input_file(self.path))
                pf = stack.enter_context(pq.ParquetFile(source))
            else:
                # A local file is mapped, not read into a buffer first: the pages are decoded
                # straight from the page cache (about half the CPU of a buffered read here).
                pf = stack.enter_context(pq.ParquetFile(self.path, memory_map=True))
            for g in self.row_groups:
                yield pf.read_row_group(g, columns=cols, use_threads=False)


@dataclass
class _FileRead:
    path: str
    fmt: str
    include_paths: bool
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> list[Block]:
        return [
            _with_path(_read_file(self.path, self.fmt, self.options), self.path, self.include_paths)
        ]


def _read_file(path: str, fmt: str, options: dict[str, Any]) -> Block:
    try:
        if fmt == "csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path, **options)
        if fmt == "json":
            import pyarrow.json as pjson

            return pjson.read_json(path, **options)
        if fmt == "numpy":
            from ._block import block_from_batch

            return block_from_batch(
                {options.get("column", "data"): np.load(path, allow_pickle=False)}
            )
        if fmt == "text":
            with open(path, encoding=options.get("encoding", "utf-8")) as fh:
                lines = fh.read().splitlines()
            if options.get("drop_empty_lines", True):
                lines = [ln for ln in lines if ln.strip()]
            return pa.table({"text": pa.array(lines, pa.string())})
        if fmt == "binary":
            with open(path, "rb") as fh:
                return pa.table({"bytes": pa.array([fh.read()], pa.binary())})
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise type(e)(f"reading {path!r} as {fmt}: {e}") from e
    raise ValueError(f"unsupported format {fmt!r}")


def as_arrow_filesystem(filesystem: Any) -> Any:
    """A ``pyarrow.fs.FileSystem`` (an fsspec filesystem is wrapped), or None for local."""
    if filesystem is None:
        return None
    import pyarrow.fs as pafs

    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    if hasattr(filesystem, "open") and hasattr(filesystem, "find"):
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    raise TypeError(
        "filesystem must be a pyarrow.fs.FileSystem or an fsspec filesystem, got "
        f"{type(filesystem).__name__}"
    )


def expand_fs_paths(fs: Any, paths: Any, extensions: Any) -> tuple[list[str], str | None]:
    """Files under ``paths`` on a pyarrow filesystem (directories walked), and their base."""
    import pyarrow.fs as pafs

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such file or directory: {path!r} (on {fs.type_name})")
        if info.type == pafs.FileType.Directory:
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            names = sorted(
                i.path
                for i in found
                if i.type == pafs.FileType.File
                and not any(p.startswith((".", "_")) for p in i.path[len(path) :].split("/"))
            )
            files.extend(_filter(names, extensions))
        else:
            files.append(path)
    if not files:
        raise FileNotFoundError(f"no files found under {paths!r}")
    base = os.fspath(paths[0]) if len(paths) == 1 else None
    return files, base


def _base_dir(paths: Any) -> str | None:
    if isinstance(paths, (str, os.PathLike)) and os.path.isdir(os.fspath(paths)):
        return os.fspath(paths)
    return None


def _partition_style(partitioning: Any) -> str | None:
    if partitioning is None:
        return None
    style = getattr(partitioning, "style", partitioning)
    if style != "hive":
        raise ValueError(f"only hive partitioning is supported, got {partitioning!r}")
    return "hive"


class FileDatasource(Datasource):
    """Files of one format, one read task per file (Parquet: per group of row groups)."""

    def __init__(
        self,
        paths: Any,
        fmt: str,
        *,
        columns: list[str] | None = None,
        include_paths: bool = False,
        file_extensions: Any = None,
        options: dict[str, Any] | None = None,
        filter: Any = None,
        partitioning: Any = "hive",
        filesystem: Any = None,
    ) -> None:
        if fmt not in _EXTENSIONS:
            raise ValueError(f"unsupported format {fmt!r}; one of {sorted(_EXTENSIONS)}")
        self.fmt = fmt
        self.filesystem = as_arrow_filesystem(filesystem)
        if self.filesystem is not None:
            self.files, self.base = expand_fs_paths(
                self.filesystem, paths, file_extensions or _EXTENSIONS[fmt]
            )
        else:
            self.files = expand_paths(paths, file_extensions or _EXTENSIONS[fmt])
            self.base = _base_dir(paths)
        self.columns = columns
        self.include_paths = include_paths
        self.options = options or {}
        self.filter = filter
        self.partitioning = _partition_style(partitioning)
        if fmt == "parquet":
            self._check_parquet()

    def get_name(self) -> str:
        return {"json": "ReadJSON", "csv": "ReadCSV", "numpy": "ReadNumpy"}.get(
            self.fmt, "Read" + self.fmt.capitalize()
        )

    def _check_parquet(self) -> None:
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        self._pq_meta = []
        self._partitions = [
            hive_values(f, self.base) if self.partitioning == "hive" else {} for f in self.files
        ]
        for f, parts in zip(self.files, self._partitions, strict=True):
            try:
                if self.filesystem is not None:
                    with self.filesystem.open_input_file(f) as fh:
                        meta = pq.ParquetFile(fh).metadata
                else:
                    meta = pq.ParquetFile(f).metadata
            except (pa.ArrowInvalid, OSError) as e:
                raise ValueError(f"{f!r} is not a readable Parquet file: {e}") from e
            if self.columns is not None:
                names = set(meta.schema.names) | set(parts)
                missing = [c for c in self.columns if c not in names]
                if missing:
                    raise ValueError(f"columns {missing} are not in {f!r} (it has {sorted(names)})")
            self._pq_meta.append(meta)
        if self.files:
            # pyarrow answers for the pass-through arguments here, before anything runs (an
            # unknown keyword is its TypeError), as it does under Ray.
            pads.Scanner.from_fragment(
                _fragment(self.files[0], self.filesystem, None), **self.options
            )

    def _reader(self, path: str, groups: list[int], parts: dict[str, str]) -> _ParquetRead:
        return _ParquetRead(
            path,
            groups,
            self.columns,
            self.include_paths,
            parts,
            self.filter,
            self.filesystem,
            self.options,
        )

    def estimate_inmemory_data_size(self) -> int | None:
        if self.fmt == "parquet":
            return sum(
                m.row_group(i).total_byte_size
                for m in self._pq_meta
                for i in range(m.num_row_groups)
            )
        return sum(os.path.getsize(f) for f in self.files)

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        if self.fmt != "parquet":
            return [
                ReadTask(_FileRead(f, self.fmt, self.include_paths, self.options))
                for f in self.files
            ]
        tasks = []
        total_groups = sum(m.num_row_groups for m in self._pq_meta)
        # Split row groups so there are about `parallelism` tasks, at least one per file.
        per_task = max(1, total_groups // max(parallelism, 1))
        for f, meta, parts in zip(self.files, self._pq_meta, self._partitions, strict=True):
            groups = list(range(meta.num_row_groups))
            for i in range(0, len(groups), per_task):
                chunk = groups[i : i + per_task]
                rows = sum(meta.row_group(g).num_rows for g in chunk)
                size = sum(meta.row_group(g).total_byte_size for g in chunk)
                if self.columns is not None and meta.num_columns:
                    size = size * len(self.columns) // meta.num_columns
                tasks.append(
                    ReadTask(
                        self._reader(f, chunk, parts),
                        BlockMetadata(rows, size) if self.filter is None else None,
                    )
                )
            if not groups:
                tasks.append(ReadTask(self._reader(f, [], parts), BlockMetadata(0, 0)))
        return tasks
