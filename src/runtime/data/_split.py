"""streaming_split: one execution shared by n consumers, each block handed to one of them.

A coordinator actor runs the streaming executor (it submits the tasks, so it owns the blocks)
and hands the next block to whichever consumer asks; consumers in other processes (Train
workers) fetch the blocks from the nodes that hold them. Each consumer's iteration is one
epoch; the coordinator starts a new execution when the first consumer asks for the next epoch
after the current one is used up. ``equal=True`` runs the epoch to completion first and gives
each consumer the same number of rows (Ray streams this case; we trade streaming for exactness).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import runtime

from ._context import DataContext
from ._executor import execute
from ._iterator import DataIterator
from ._plan import LogicalOp, RefBundle

if TYPE_CHECKING:
    from ._dataset import Dataset


class _SplitCoordinator:
    """The actor behind streaming_split (a sync actor: its methods run in threads)."""

    def __init__(self, op: LogicalOp, n: int, equal: bool, ctx: DataContext) -> None:
        DataContext._current = ctx  # the driver's settings, in this process
        self.op = op
        self.n = n
        self.equal = equal
        self.lock = threading.Lock()
        self.epoch = -1
        self.stream: Iterator[RefBundle] | None = None
        self.equal_parts: list[list[RefBundle]] = []

    def _start(self, epoch: int) -> None:
        self.epoch = epoch
        self.stream = execute(self.op)
        if self.equal:
            from . import _shuffle

            bundles = list(self.stream)
            total = sum(b.meta.num_rows for b in bundles)
            per = total // self.n
            self.equal_parts = [
                list(reversed(_shuffle.slice_rows(bundles, i * per, (i + 1) * per)))
                for i in range(self.n)
            ]

    def next_block(self, index: int, epoch: int) -> list[RefBundle]:
        """The next block for consumer ``index`` in ``epoch`` ([] when the epoch is done)."""
        with self.lock:
            if epoch > self.epoch:
                self._start(epoch)
            if epoch < self.epoch or self.stream is None:
                return []
            if self.equal:
                part = self.equal_parts[index]
                return [part.pop()] if part else []
            for bundle in self.stream:
                return [bundle]
            return []


class _SplitBundles:
    """The picklable source of one consumer's blocks: asks the coordinator, epoch by epoch."""

    def __init__(self, coordinator: Any, index: int) -> None:
        self.coordinator = coordinator
        self.index = index
        self.epoch = 0

    def __call__(self) -> Iterator[RefBundle]:
        epoch = self.epoch
        self.epoch += 1
        while True:
            got = runtime.get(self.coordinator.next_block.remote(self.index, epoch))
            if not got:
                return
            yield got[0]


def streaming_split(ds: Dataset, n: int, equal: bool) -> list[DataIterator]:
    coordinator = (
        runtime.remote(_SplitCoordinator)
        .options(max_concurrency=n + 1)
        .remote(ds._op, n, equal, DataContext.get_current())
    )
    return [DataIterator(_SplitBundles(coordinator, i), f"split {i} of {n}") for i in range(n)]
