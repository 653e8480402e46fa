"""The run's folder on any file system: persisted checkpoints, retention, the progress log.

``storage_path`` is a local directory or a URI (``s3://``, ``gs://``, ``file://``, ...), and
``storage_filesystem`` may be any ``pyarrow.fs.FileSystem`` or ``fsspec`` filesystem; every
read and write goes through one ``pyarrow.fs`` filesystem (:class:`StorageContext`, which
pickles, so ranks write to it directly).

Layout::

    storage_path/name/
        checkpoint_000003/     one per report that carried a checkpoint (or the name the
                               report gave with checkpoint_dir_name); every rank that passed
                               a checkpoint uploads its files into it
        progress.jsonl         one line per report of rank 0
        train_state.json       the checkpoints kept, with their metrics, and the error if
                               the run failed: what ``Result.from_path`` reads back
        trainer.pkl            the trainer (without its datasets): what ``restore`` reads
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._checkpoint import Checkpoint
from ._config import CheckpointConfig

STATE_FILE = "train_state.json"
TRAINER_FILE = "trainer.pkl"
PROGRESS_FILE = "progress.jsonl"


def default_storage_path() -> str:
    """``$TRAIN_RESULTS_DIR`` or ``~/runtime_results`` (Ray's is ``~/ray_results``)."""
    return os.environ.get("TRAIN_RESULTS_DIR") or os.path.join(
        os.path.expanduser("~"), "runtime_results"
    )


def resolve_filesystem(storage_path: str, filesystem: Any = None) -> tuple[Any, str]:
    """``(pyarrow filesystem, path on it)`` for a storage path and an optional filesystem.

    Raises:
        TypeError: ``filesystem`` is neither a pyarrow nor an fsspec filesystem.
        ValueError: a URI no filesystem understands.
    """
    import pyarrow.fs as pafs

    if filesystem is not None:
        if isinstance(filesystem, pafs.FileSystem):
            return filesystem, storage_path
        try:
            import fsspec  # type: ignore[import-untyped]  # no stubs ship with fsspec
        except ImportError:
            fsspec = None  # type: ignore[assignment]
        if fsspec is not None and isinstance(filesystem, fsspec.AbstractFileSystem):
            return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), storage_path
        raise TypeError(
            "storage_filesystem must be a pyarrow.fs.FileSystem or an fsspec filesystem, "
            f"got {type(filesystem).__name__}"
        )
    if "://" not in storage_path:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(storage_path))
    try:
        fs, path = pafs.FileSystem.from_uri(storage_path)
        return fs, path
    except Exception as first:  # pyarrow knows no such scheme: try fsspec's registry
        try:
            import fsspec.core  # type: ignore[import-untyped]  # no stubs ship with fsspec

            fsspec_fs, path = fsspec.core.url_to_fs(storage_path)
        except Exception as exc:
            raise ValueError(
                f"no file system understands storage_path {storage_path!r}: {first}; {exc}"
            ) from exc
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), path


def _is_local(fs: Any) -> bool:
    import pyarrow.fs as pafs

    return isinstance(fs, pafs.LocalFileSystem)


@dataclass
class StorageContext:
    """A run folder on a filesystem (picklable: the driver and every rank hold one)."""

    fs: Any
    run_path: str

    @property
    def local(self) -> bool:
        return _is_local(self.fs)

    def join(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.run_path, *parts)
        return posixpath.join(self.run_path, *parts)

    def makedirs(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def delete_dir(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_dir(path)

    def write_text(self, path: str, text: str, append: bool = False) -> None:
        if self.local:
            with open(path, "a" if append else "w") as f:
                f.write(text)
            return
        if append and self.exists(path):
            with self.fs.open_input_stream(path) as f:
                text = f.read().decode() + text
        with self.fs.open_output_stream(path) as out:
            out.write(text.encode())

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def read_bytes(self, path: str) -> bytes | None:
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as f:
            data: bytes = f.read()
        return data

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as f:
            data: bytes = f.read()
        return data.decode()

    def upload(self, local_dir: str, dirname: str) -> str:
        """Put ``local_dir``'s files into ``run_path/dirname`` (merged with what is there);
        the local copy is consumed."""
        target = self.join(dirname)
        if self.local:
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with contextlib.suppress(OSError):  # another rank made it first: merge
                    os.rename(local_dir, target)
                    return target
            shutil.copytree(local_dir, target, dirs_exist_ok=True)
            return target
        import pyarrow.fs as pafs

        self.makedirs(target)
        pafs.copy_files(
            local_dir,
            target,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )
        return target

    def checkpoint(self, dirname: str) -> Checkpoint:
        """The checkpoint stored as ``run_path/dirname``."""
        path = self.join(dirname)
        if self.local:
            return Checkpoint(path)
        return FileSystemCheckpoint(path, self.fs)


class FileSystemCheckpoint(Checkpoint):
    """A checkpoint stored on a non-local filesystem (``.filesystem``); reading it downloads
    it to a local temporary directory."""

    def __init__(self, path: str, filesystem: Any) -> None:
        super().__init__(path)
        self.filesystem = filesystem

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        import pyarrow.fs as pafs

        target = tempfile.mkdtemp(prefix="runtime-ckpt-") if path is None else os.fspath(path)
        os.makedirs(target, exist_ok=True)
        pafs.copy_files(
            self.path,
            target,
            source_filesystem=self.filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """A local copy of the checkpoint, deleted when the block ends."""
        local = self.to_directory()
        try:
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def to_dict(self) -> dict[str, Any]:
        with self.as_directory() as d:
            return Checkpoint(d).to_dict()

    def __repr__(self) -> str:
        return f"Checkpoint(filesystem={self.filesystem.type_name}, path={self.path!r})"


Kept = tuple[int, str, Checkpoint, dict[str, Any]]  # (report index, dirname, checkpoint, metrics)


class RunStorage:
    """The driver's side: registers persisted checkpoints, keeps what ``CheckpointConfig``
    asks for, logs progress and the run's state for ``Result.from_path``."""

    def __init__(self, context: StorageContext, config: CheckpointConfig) -> None:
        self.context = context
        self.path = context.run_path
        self.config = config
        self.kept: list[Kept] = []
        context.makedirs(context.run_path)

    def load_previous(self) -> tuple[list[dict[str, Any]], int]:
        """Take over what an earlier run in this folder left (``Trainer.restore``): its kept
        checkpoints; returns its metrics history and the next report index."""
        run = read_run(self.context)
        kept = run["state"]["checkpoints"]
        self.kept = [
            (c["index"], c["dir"], self.context.checkpoint(c["dir"]), dict(c["metrics"]))
            for c in kept
        ]
        last = max([c["index"] for c in kept] + [len(run["history"])])
        return list(run["history"]), last + 1

    def register(self, index: int, dirname: str, metrics: dict[str, Any]) -> Checkpoint:
        """Report ``index`` is complete on every rank: its checkpoint ``dirname`` counts."""
        checkpoint = self.context.checkpoint(dirname)
        self.kept = [k for k in self.kept if k[1] != dirname]  # a name reused replaces
        self.kept.append((index, dirname, checkpoint, dict(metrics)))
        self._prune()
        self.save_state()
        return checkpoint

    def discard(self, dirnames: set[str]) -> None:
        """Delete uploads of reports that never completed on every rank."""
        registered = {k[1] for k in self.kept}
        for dirname in dirnames - registered:
            self.context.delete_dir(self.context.join(dirname))

    def _prune(self) -> None:
        keep_n = self.config.num_to_keep
        if keep_n is None or len(self.kept) <= keep_n:
            return
        latest = self.kept[-1]
        attr = self.config.checkpoint_score_attribute
        if attr is None:
            best = self.kept[-keep_n:]
        else:
            sign = 1.0 if self.config.checkpoint_score_order == "max" else -1.0

            def score(entry: Kept) -> tuple[int, float, int]:
                value = entry[3].get(attr)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return (1, sign * float(value), entry[0])
                return (0, 0.0, entry[0])  # a report without the attribute ranks lowest

            best = sorted(self.kept, key=score, reverse=True)[:keep_n]
        keep = {entry[0] for entry in best} | {latest[0]}
        for index, dirname, _, _ in self.kept:
            if index not in keep:
                self.context.delete_dir(self.context.join(dirname))
        self.kept = [entry for entry in self.kept if entry[0] in keep]

    def latest(self) -> Checkpoint | None:
        return self.kept[-1][2] if self.kept else None

    def log(self, metrics: dict[str, Any]) -> None:
        line = json.dumps(metrics, default=str) + "\n"
        self.context.write_text(self.context.join(PROGRESS_FILE), line, append=True)

    def save_state(self, error: BaseException | None = None) -> None:
        state = {
            "checkpoints": [
                {"index": index, "dir": dirname, "metrics": metrics}
                for index, dirname, _, metrics in self.kept
            ],
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        text = json.dumps(state, default=str)
        self.context.write_text(self.context.join(STATE_FILE), text)


def read_run(context: StorageContext) -> dict[str, Any]:
    """What a finished (or interrupted) run left: state, checkpoints, metrics history.

    Raises:
        FileNotFoundError: there is no run folder at that path.
    """
    state_text = context.read_text(context.join(STATE_FILE))
    progress = context.read_text(context.join(PROGRESS_FILE))
    if state_text is None and progress is None:
        raise FileNotFoundError(
            f"no Train run at {context.run_path!r} ({STATE_FILE} and {PROGRESS_FILE} missing)"
        )
    state = json.loads(state_text) if state_text else {"checkpoints": [], "error": None}
    history = [json.loads(line) for line in (progress or "").splitlines() if line.strip()]
    return {"state": state, "history": history}
