"""An fsspec local filesystem whose every file write is slow: storage that takes its time
to upload to (importable by the ranks, so it pickles by reference)."""

from __future__ import annotations

import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem


class SlowFS(LocalFileSystem):  # type: ignore[misc]
    """Each file opened for writing first waits ``delay_s`` seconds."""

    def __init__(self, delay_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:
            time.sleep(self.delay_s)
        return super()._open(path, mode=mode, **kwargs)
