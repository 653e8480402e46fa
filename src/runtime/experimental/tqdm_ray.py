"""Ray's ``ray.experimental.tqdm_ray``: a progress bar that works inside tasks and actors.

Ray draws the bars of every worker on the driver's terminal. Here each bar writes one
line to its process's stderr (which the runtime forwards to the driver like any other
output of a task) when it starts, at most every ``flush_interval_s`` while it advances,
and when it closes: ``desc: n/total [elapsed, rate it/s]``. No terminal control codes, so
the lines read the same in a log file.

Example::

    from runtime.experimental.tqdm_ray import tqdm

    @runtime.remote
    def work(name):
        for _ in tqdm(range(100), desc=name):
            ...
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TextIO, TypeVar

T = TypeVar("T")

_print_lock = threading.Lock()


def safe_print(*args: Any, **kwargs: Any) -> None:
    """``print`` that does not interleave with the bars' lines (Ray's name)."""
    with _print_lock:
        print(*args, **kwargs)


class tqdm(Generic[T]):
    """A progress bar over ``iterable`` (or updated by hand with :meth:`update`).

    ``total`` defaults to ``len(iterable)`` when it has one; ``position`` and ``unit`` are
    kept for Ray's signature (``unit`` names what is counted in the line).
    """

    def __init__(  # noqa: PLR0917 -- Ray's (and tqdm's) signature
        self,
        iterable: Iterable[T] | None = None,
        desc: str | None = None,
        total: int | None = None,
        unit: str | None = None,
        position: int | None = None,
        flush_interval_s: float = 1.0,
        file: TextIO | None = None,
    ) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, not {flush_interval_s}")
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.desc = desc or ""
        self.total = total
        self.unit = unit or "it"
        self.position = position
        self.n = 0
        self.closed = False
        self._flush_interval_s = flush_interval_s
        self._file = file
        self._start = time.monotonic()
        self._last_flush = self._start
        self._emit()

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this tqdm has no iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        """Advance the bar by ``n``."""
        if self.closed:
            return
        self.n += n
        now = time.monotonic()
        if now - self._last_flush >= self._flush_interval_s:
            self._last_flush = now
            self._emit()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""
        if refresh:
            self._emit()

    def refresh(self) -> None:
        self._emit()

    def close(self) -> None:
        """Write the final line; later updates are ignored."""
        if not self.closed:
            self._emit()
            self.closed = True

    def line(self) -> str:
        """The bar as text: ``desc: n/total [elapsed, rate unit/s]``."""
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{count} [{elapsed:.1f}s, {rate:.2f} {self.unit}/s]"

    def _emit(self) -> None:
        with _print_lock:
            print(self.line(), file=self._file or sys.stderr, flush=True)

    def __enter__(self) -> tqdm[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["safe_print", "tqdm"]
