"""All-to-all operators: shuffle, sort, group-by, repartition, zip and row-range slicing.

Each is a barrier in the plan (``AllToAllOp``): it takes every input block and runs two
rounds of tasks, a map round that splits each block into P parts (random, by key range or by
key hash, with group-by partials computed map-side) and a reduce round that combines part i
of every block. Blocks never pass through the driver; only small samples and metadata do.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pyarrow as pa

import runtime

from . import _aggregate as agg
from . import _block as B
from ._executor import cluster_cpus
from ._plan import RefBundle


def _as_list(refs: Any, n: int) -> list[Any]:
    return [refs] if n == 1 else list(refs)


def _hash_parts(table: B.Block, keys: list[str], p: int) -> np.ndarray:
    import pandas as pd

    if p == 1:
        return np.zeros(table.num_rows, dtype=np.int64)
    df = table.select(keys).to_pandas()
    return (pd.util.hash_pandas_object(df, index=False).to_numpy() % p).astype(np.int64)


def _split_by(table: B.Block, part: np.ndarray, p: int) -> list[B.Block]:
    if p == 1:
        return [table]
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=p)
    sorted_table = table.take(order)
    return B.split_rows(sorted_table, [int(c) for c in counts])


def _map_part(block: B.Block, how: str, p: int, arg: Any, index: int) -> Any:
    if how == "random":
        rng = np.random.default_rng(None if arg is None else [arg, index])
        parts = _split_by(block, rng.integers(0, p, block.num_rows), p)
    elif how == "range":
        key, bounds, descending = arg
        if block.num_rows == 0:
            parts = [block] * p
        else:
            col = block.column(key).to_numpy(zero_copy_only=False)
            idx = (
                np.searchsorted(np.asarray(bounds), col, side="left")
                if len(bounds)
                else (np.zeros(block.num_rows, dtype=np.int64))
            )
            if descending:
                idx = (p - 1) - idx
            parts = _split_by(block, idx.astype(np.int64), p)
    elif how == "hash":
        parts = _split_by(block, _hash_parts(block, arg, p), p) if block.num_rows else [block] * p
    elif how == "agg":
        keys, aggs = arg
        if block.num_rows == 0:
            parts = [pa.table({})] * p
        else:
            partial = agg.partial(block, keys, aggs)
            parts = _split_by(partial, _hash_parts(partial, keys, p), p)
    else:
        raise ValueError(how)
    return parts[0] if p == 1 else tuple(parts)


def _reduce(how: str, arg: Any, index: int, *parts: B.Block) -> tuple[B.Block, B.BlockMetadata]:
    t0 = time.perf_counter()
    in_rows = sum(p.num_rows for p in parts)
    if how == "agg":
        keys, aggs = arg
        out = agg.merge(list(parts), keys, aggs)
    else:
        table = B.concat(list(parts))
        if how == "shuffle":
            rng = np.random.default_rng(None if arg is None else [arg, 1_000_003, index])
            out = table.take(rng.permutation(table.num_rows)) if table.num_rows else table
        elif how == "sort":
            keys, descending = arg
            order = "descending" if descending else "ascending"
            out = table.sort_by([(k, order) for k in keys]) if table.num_rows else table
        elif how == "groups":
            keys, fn, batch_format = arg
            out = _apply_groups(table, keys, fn, batch_format)
        else:
            out = table
    return out, B.metadata_of(out, time.perf_counter() - t0, in_rows)


def _apply_groups(table: B.Block, keys: list[str], fn: Any, batch_format: str) -> B.Block:
    from ._transforms import annotate

    if table.num_rows == 0:
        return table
    table = table.sort_by([(k, "ascending") for k in keys])
    key_df = table.select(keys).to_pandas()
    change = np.ones(len(key_df), dtype=bool)
    change[1:] = (key_df.iloc[1:].to_numpy() != key_df.iloc[:-1].to_numpy()).any(axis=1)
    starts = [*list(np.flatnonzero(change)), table.num_rows]
    outs = []
    for s, e in itertools.pairwise(starts):
        group = table.slice(int(s), int(e - s))
        try:
            result = fn(B.to_batch(group, batch_format))
        except Exception as err:
            annotate(
                err,
                f"runtime.data: map_groups({getattr(fn, '__qualname__', fn)}) failed "
                f"on the group {key_df.iloc[int(s)].to_dict()} ({e - s} rows)",
            )
            raise
        outs.append(B.block_from_batch(result))
    return B.concat(outs)


_map_task: Any = runtime.remote(max_retries=3)(_map_part)
_reduce_task: Any = runtime.remote(num_returns=2, max_retries=3)(_reduce)


def _finish(refs: list[tuple[Any, Any]]) -> list[RefBundle]:
    metas = runtime.get([m for _, m in refs])
    return [RefBundle(b, m) for (b, _), m in zip(refs, metas, strict=True)]


def exchange(  # noqa: PLR0917 - two rounds, each with its kind and argument
    bundles: list[RefBundle],
    map_how: str,
    map_arg: Any,
    reduce_how: str,
    reduce_arg: Any,
    num_partitions: int | None = None,
) -> list[RefBundle]:
    """Two rounds of tasks: split every block into P parts, then combine part i of each."""
    if not bundles:
        return []
    p = num_partitions or len(bundles)
    p = max(1, p)
    parts = [
        _as_list(_map_task.options(num_returns=p).remote(b.ref, map_how, p, map_arg, i), p)
        for i, b in enumerate(bundles)
    ]
    out = [
        _reduce_task.remote(reduce_how, reduce_arg, j, *[parts[i][j] for i in range(len(parts))])
        for j in range(p)
    ]
    return _finish(out)


def default_partitions(bundles: list[RefBundle]) -> int:
    return max(1, min(len(bundles), 4 * cluster_cpus()))


def random_shuffle(bundles: list[RefBundle], seed: int | None) -> list[RefBundle]:
    return exchange(bundles, "random", seed, "shuffle", seed, len(bundles))


def _sample(block: B.Block, key: str, k: int) -> np.ndarray:
    if block.num_rows == 0:
        return np.array([])
    idx = np.linspace(0, block.num_rows - 1, num=min(k, block.num_rows)).astype(np.int64)
    return block.column(key).take(pa.array(idx)).to_numpy(zero_copy_only=False)


_sample_task: Any = runtime.remote(max_retries=3)(_sample)


def sort(bundles: list[RefBundle], keys: list[str], descending: bool) -> list[RefBundle]:
    if not bundles:
        return []
    p = len(bundles)
    samples = runtime.get([_sample_task.remote(b.ref, keys[0], 64) for b in bundles])
    allv = (
        np.sort(np.concatenate([s for s in samples if len(s)]))
        if any(len(s) for s in samples)
        else np.array([])
    )
    if p > 1 and len(allv):
        q = np.linspace(0, len(allv) - 1, num=p + 1)[1:-1].astype(np.int64)
        bounds = np.unique(allv[q])
    else:
        bounds = np.array([])
    return exchange(bundles, "range", (keys[0], bounds, descending), "sort", (keys, descending), p)


def aggregate(bundles: list[RefBundle], keys: list[str], aggs: list[Any]) -> list[RefBundle]:
    out = exchange(bundles, "agg", (keys, aggs), "agg", (keys, aggs), default_partitions(bundles))
    out = [b for b in out if b.meta.num_rows]
    return sort(out, keys, False) if len(out) > 1 else out


def map_groups(
    bundles: list[RefBundle], keys: list[str], fn: Any, batch_format: str
) -> list[RefBundle]:
    return exchange(
        bundles, "hash", keys, "groups", (keys, fn, batch_format), default_partitions(bundles)
    )


def _slice_concat(spec: list[tuple[int, int]], *blocks: B.Block) -> tuple[B.Block, B.BlockMetadata]:
    parts = [b.slice(s, e - s) for (s, e), b in zip(spec, blocks, strict=True)]
    out = B.concat(parts)
    return out, B.metadata_of(out, 0.0, out.num_rows)


_slice_task: Any = runtime.remote(num_returns=2, max_retries=3)(_slice_concat)


def slice_rows(bundles: list[RefBundle], start: int, end: int) -> list[RefBundle]:
    """Rows [start, end) of the blocks, whole blocks reused, partial ones sliced by a task."""
    out, offset = [], 0
    for b in bundles:
        n = b.meta.num_rows
        lo, hi = max(start, offset), min(end, offset + n)
        if lo < hi:
            if lo == offset and hi == offset + n:
                out.append(b)
            else:
                out.extend(_finish([_slice_task.remote([(lo - offset, hi - offset)], b.ref)]))
        offset += n
    return out


def _ranges_of(
    bundles: list[RefBundle], start: int, end: int
) -> tuple[list[tuple[int, int]], list[Any]]:
    spec, refs, offset = [], [], 0
    for b in bundles:
        n = b.meta.num_rows
        lo, hi = max(start, offset), min(end, offset + n)
        if lo < hi:
            spec.append((lo - offset, hi - offset))
            refs.append(b.ref)
        offset += n
    return spec, refs


def repartition(bundles: list[RefBundle], n: int) -> list[RefBundle]:
    """``n`` blocks of (nearly) equal rows, in order."""
    total = sum(b.meta.num_rows for b in bundles)
    bounds = [total * i // n for i in range(n + 1)]
    out = []
    for i in range(n):
        spec, refs = _ranges_of(bundles, bounds[i], bounds[i + 1])
        out.append(_slice_task.remote(spec, *refs))
    return _finish(out)


def _zip_blocks(
    left: B.Block, spec: list[tuple[int, int]], *right: B.Block
) -> tuple[B.Block, B.BlockMetadata]:
    other = B.concat([b.slice(s, e - s) for (s, e), b in zip(spec, right, strict=True)])
    out = left
    for name in other.column_names:
        new = name
        while new in out.column_names:
            new = f"{new}_1"
        out = out.append_column(new, other.column(name))
    return out, B.metadata_of(out, 0.0, left.num_rows)


_zip_task: Any = runtime.remote(num_returns=2, max_retries=3)(_zip_blocks)


def zip_bundles(left: list[RefBundle], right: list[RefBundle]) -> list[RefBundle]:
    nl = sum(b.meta.num_rows for b in left)
    nr = sum(b.meta.num_rows for b in right)
    if nl != nr:
        raise ValueError(f"zip needs datasets with the same number of rows, got {nl} and {nr}")
    out, offset = [], 0
    for b in left:
        n = b.meta.num_rows
        spec, refs = _ranges_of(right, offset, offset + n)
        out.append(_zip_task.remote(b.ref, spec, *refs))
        offset += n
    return _finish(out)
