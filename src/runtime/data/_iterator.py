"""DataIterator: batches, rows and torch tensors from a stream of blocks, with prefetching.

``Dataset.iter_batches`` and the shards of ``streaming_split`` (what Train workers get from
``get_dataset_shard``) both hand out a DataIterator. Blocks are fetched ``prefetch_batches``
ahead of the consumer (fetches run on the runtime's loop while user code runs), and batches
span block boundaries: every batch has ``batch_size`` rows but possibly the last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from . import _block as B
from ._plan import RefBundle


def _fetched(bundle: RefBundle, future: Any) -> B.Block:
    from ._executor import LOST

    try:
        return future.result()
    except LOST:
        # The block was lost with its node after it was made: make it again from its source.
        if bundle.recover is None:
            raise
        import runtime

        return runtime.get(bundle.recover().ref)


def prefetch_blocks(bundles: Iterator[RefBundle], ahead: int) -> Iterator[B.Block]:
    """Fetch blocks ``ahead`` in advance of the consumer; yield them in order."""
    pending: deque[tuple[RefBundle, Any]] = deque()
    ahead = max(1, ahead)
    for bundle in bundles:
        pending.append((bundle, bundle.ref.future()))
        while len(pending) > ahead:
            yield _fetched(*pending.popleft())
    while pending:
        yield _fetched(*pending.popleft())


def batch_blocks(
    blocks: Iterator[B.Block], batch_size: int | None, drop_last: bool = False
) -> Iterator[B.Block]:
    """Re-cut a block stream into blocks of exactly ``batch_size`` rows (the last may be short)."""
    if batch_size is None:
        for b in blocks:
            if b.num_rows:
                yield b
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    buf: list[B.Block] = []
    have = 0
    for b in blocks:
        if not b.num_rows:
            continue
        buf.append(b)
        have += b.num_rows
        if have < batch_size:
            continue
        merged = B.concat(buf)
        start = 0
        while have - start >= batch_size:
            yield merged.slice(start, batch_size)
            start += batch_size
        rest = merged.slice(start)
        buf, have = ([rest] if rest.num_rows else []), rest.num_rows
    if have and not drop_last:
        yield B.concat(buf)


class DataIterator:
    """Iterates over the blocks of a dataset (or a shard of one) as batches or rows.

    Each call of an ``iter_*`` method starts a new pass (a new epoch) over the data.
    """

    def __init__(self, bundles: Callable[[], Iterator[RefBundle]], name: str = "") -> None:
        self._bundles = bundles
        self._name = name

    def __repr__(self) -> str:
        return f"DataIterator({self._name})"

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "numpy",
        prefetch_batches: int = 1,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[Any]:
        """Batches of ``batch_size`` rows as dicts of numpy arrays / DataFrames / Tables."""
        fmt = B.check_batch_format(batch_format)
        blocks = prefetch_blocks(self._bundles(), prefetch_batches)
        if local_shuffle_buffer_size:
            blocks = _local_shuffle(blocks, local_shuffle_buffer_size, local_shuffle_seed)
        for block in batch_blocks(blocks, batch_size, drop_last):
            yield B.to_batch(block, fmt)

    def iter_rows(self, *, prefetch_batches: int = 1) -> Iterator[dict[str, Any]]:
        """Rows as dicts."""
        for block in prefetch_blocks(self._bundles(), prefetch_batches):
            yield from B.iter_rows(block)

    def iter_torch_batches(
        self,
        *,
        batch_size: int | None = 256,
        dtypes: Any = None,
        device: str = "cpu",
        prefetch_batches: int = 1,
        drop_last: bool = False,
        collate_fn: Callable[[dict[str, Any]], Any] | None = None,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[Any]:
        """Batches as dicts of torch tensors (torch is imported here, not before)."""
        import warnings

        import numpy as np
        import torch

        for batch in self.iter_batches(
            batch_size=batch_size,
            batch_format="numpy",
            prefetch_batches=prefetch_batches,
            drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
        ):
            if collate_fn is not None:
                yield collate_fn(batch)
                continue
            out = {}
            for k, col in batch.items():
                v = col
                dtype = dtypes.get(k) if isinstance(dtypes, dict) else dtypes
                if v.dtype == object and len(v) and isinstance(v[0], np.ndarray):
                    shapes = sorted({a.shape for a in v})
                    raise ValueError(
                        f"column {k!r} holds tensors of different shapes ({shapes[:4]}"
                        f"{'...' if len(shapes) > 4 else ''}); torch needs one shape per "
                        "batch (pad or resize them in map_batches, or pass collate_fn)"
                    )
                if v.dtype == object:
                    raise TypeError(
                        f"column {k!r} holds Python objects; torch needs numeric columns "
                        "(drop or convert it, or pass collate_fn)"
                    )
                with warnings.catch_warnings():
                    # Zero-copy from the block, as Ray does: Arrow memory is read-only, and
                    # torch warns that writing to such a tensor is undefined behaviour.
                    warnings.filterwarnings("ignore", message=".*not writable.*")
                    out[k] = torch.as_tensor(v, dtype=dtype, device=device)
            yield out

    def materialize_bundles(self) -> list[RefBundle]:
        return list(self._bundles())


def _local_shuffle(
    blocks: Iterator[B.Block], buffer_rows: int, seed: int | None
) -> Iterator[B.Block]:
    import numpy as np

    rng = np.random.default_rng(seed)
    buf: list[B.Block] = []
    have = 0
    for b in blocks:
        buf.append(b)
        have += b.num_rows
        if have >= buffer_rows:
            merged = B.concat(buf)
            yield merged.take(rng.permutation(merged.num_rows))
            buf, have = [], 0
    if buf:
        merged = B.concat(buf)
        yield merged.take(rng.permutation(merged.num_rows))
