"""Dataset shards for the ranks: ``streaming_split`` parts kept in step epoch by epoch.

``Dataset.streaming_split(n)`` shares one execution among ``n`` consumers, and a consumer
that asks for epoch ``k + 1`` starts a new execution, ending epoch ``k`` for the others.
So each rank's shard waits, before its next epoch, until every rank has finished (or left)
the previous one: a small async barrier actor per split dataset. DDP ranks are in step
anyway; this makes it hold for any loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import runtime


class EpochBarrier:
    """An async actor: ``arrive(epoch)`` returns once all ``n`` ranks have arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived: dict[int, set[int]] = {}
        self.events: dict[int, asyncio.Event] = {}

    async def arrive(self, epoch: int, rank: int) -> None:
        ranks = self.arrived.setdefault(epoch, set())
        ranks.add(rank)
        event = self.events.setdefault(epoch, asyncio.Event())
        if len(ranks) >= self.n:
            event.set()
        await event.wait()


class ShardIterator:
    """One rank's part of a split dataset (the ``DataIterator`` API, epochs kept in step)."""

    def __init__(self, inner: Any, barrier: Any, rank: int) -> None:
        self._inner = inner
        self._barrier = barrier
        self._rank = rank
        self._epoch = 0

    def _next_epoch(self) -> None:
        epoch = self._epoch
        self._epoch += 1
        if epoch > 0:
            runtime.get(self._barrier.arrive.remote(epoch - 1, self._rank))

    def iter_batches(self, **kwargs: Any) -> Iterator[Any]:
        """Batches of this rank's shard (one epoch per call); see ``DataIterator``."""
        self._next_epoch()
        yield from self._inner.iter_batches(**kwargs)

    def iter_torch_batches(self, **kwargs: Any) -> Iterator[Any]:
        """Batches as dicts of torch tensors (one epoch per call)."""
        self._next_epoch()
        yield from self._inner.iter_torch_batches(**kwargs)

    def iter_rows(self, **kwargs: Any) -> Iterator[Any]:
        """Rows as dicts (one epoch per call)."""
        self._next_epoch()
        yield from self._inner.iter_rows(**kwargs)

    def __repr__(self) -> str:
        return f"ShardIterator(rank {self._rank}, {self._inner!r})"


def make_shards(
    datasets: dict[str, Any], split: Any, equal: bool, n: int
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per rank, a dict name -> iterator; and the actors to kill when the group ends."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    actors: list[Any] = []
    for name, ds in datasets.items():
        if split(name):
            parts = ds.streaming_split(n, equal=equal)
            barrier = (
                runtime.remote(EpochBarrier).options(num_cpus=0, max_concurrency=n + 1).remote(n)
            )
            actors.append(barrier)
            for rank in range(n):
                out[rank][name] = ShardIterator(parts[rank], barrier, rank)
        else:
            for rank in range(n):
                out[rank][name] = ds.iterator()
    return out, actors
