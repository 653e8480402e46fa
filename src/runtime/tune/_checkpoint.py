"""A checkpoint: a directory of files a trial can restore from.

``Checkpoint.from_directory(d)`` wraps a directory a trainable wrote; when reported with
``tune.report(..., checkpoint=...)`` Tune copies it into the trial's folder under the
experiment's storage path, so it outlives the temporary directory it was written in.
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
    """A checkpoint held as a directory on a file system every node can read."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Wrap an existing directory (it is copied when reported, not moved)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
        return cls(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """A checkpoint of a picklable dict, written to a fresh temporary directory."""
        if not isinstance(data, dict):
            raise TypeError(f"from_dict needs a dict, got {type(data).__name__}")
        path = tempfile.mkdtemp(prefix="tune-ckpt-")
        with open(os.path.join(path, _DICT_FILE), "wb") as f:
            pickle.dump(data, f)
        return cls(path)

    def to_dict(self) -> dict[str, Any]:
        """The dict a ``from_dict`` checkpoint holds."""
        file = os.path.join(self.path, _DICT_FILE)
        if not os.path.exists(file):
            raise ValueError(f"checkpoint {self.path!r} was not made by Checkpoint.from_dict")
        with open(file, "rb") as f:
            data: dict[str, Any] = pickle.load(f)
        return data

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Copy the checkpoint's files into ``path`` (a fresh temporary directory if None)."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="tune-ckpt-")
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """The checkpoint's directory, to read in place (do not write to it)."""
        yield self.path

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
