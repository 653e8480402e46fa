"""Checkpoint: a directory of files a run or trial persists and resumes from.

One class for Tune and Train (as ``ray.tune.Checkpoint`` is ``ray.train.Checkpoint``), so a
Train checkpoint reported to Tune is the same object. ``Checkpoint.from_directory(d)`` wraps a
directory a trainable or rank wrote; ``tune.report``/``train.report(..., checkpoint=...)``
copy it into the experiment's or run's folder, so it outlives the temporary directory it was
written in, on a file system every node reads.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

_DICT_FILE = "_dict_checkpoint.pkl"


class Checkpoint:
    """A checkpoint held as a directory (``.path``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Wrap an existing directory (reporting it copies it; it is never moved)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """A checkpoint of a picklable dict, written to a fresh temporary directory."""
        if not isinstance(data, dict):
            raise TypeError(f"from_dict needs a dict, got {type(data).__name__}")
        path = tempfile.mkdtemp(prefix="runtime-ckpt-")
        with open(os.path.join(path, _DICT_FILE), "wb") as f:
            pickle.dump(data, f)
        return cls(path)

    def to_dict(self) -> dict[str, Any]:
        """The dict of a ``from_dict`` checkpoint (else ValueError)."""
        file = os.path.join(self.path, _DICT_FILE)
        if not os.path.exists(file):
            raise ValueError(
                f"checkpoint {self.path} was not made by from_dict; read its files with "
                "as_directory() or to_directory()"
            )
        with open(file, "rb") as f:
            data: dict[str, Any] = pickle.load(f)
        return data

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Copy the checkpoint's files into ``path`` (default: a new temporary directory)."""
        target = tempfile.mkdtemp(prefix="runtime-ckpt-") if path is None else os.fspath(path)
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """The checkpoint as a local directory, for reading (no copy: it is already local)."""
        yield self.path

    def get_metadata(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
