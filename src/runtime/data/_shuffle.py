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
    elif how == "join":
        keys, side = arg
        if block.num_rows == 0 and block.num_columns == 0:
            parts = [block] * p
        else:
            missing = [k for k in keys if k not in block.column_names]
            if missing:
                raise KeyError(
                    f"{side} has no key column {missing[0]!r} (its columns: {block.column_names})"
                )
            parts = (
                _split_by(block, _hash_parts(block, keys, p), p) if block.num_rows else [block] * p
            )
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
            keys, orders = arg
            spec = [
                (k, "descending" if d else "ascending") for k, d in zip(keys, orders, strict=True)
            ]
            out = table.sort_by(spec) if table.num_rows else table
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
    if key not in block.column_names:
        raise KeyError(f"sort: no column {key!r} (the dataset has columns {block.column_names})")
    idx = np.linspace(0, block.num_rows - 1, num=min(k, block.num_rows)).astype(np.int64)
    return block.column(key).take(pa.array(idx)).to_numpy(zero_copy_only=False)


_sample_task: Any = runtime.remote(max_retries=3)(_sample)


def sort(
    bundles: list[RefBundle], keys: list[str], descending: bool | list[bool]
) -> list[RefBundle]:
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
    orders = descending if isinstance(descending, list) else [descending] * len(keys)
    return exchange(bundles, "range", (keys[0], bounds, orders[0]), "sort", (keys, orders), p)


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


_JOIN_TYPES = {
    "inner": "inner",
    "left_outer": "left outer",
    "left": "left outer",
    "right_outer": "right outer",
    "right": "right outer",
    "full_outer": "full outer",
    "outer": "full outer",
    "left_semi": "left semi",
    "right_semi": "right semi",
    "left_anti": "left anti",
    "right_anti": "right anti",
}


def _join_parts(
    how: str,
    on: list[str],
    right_on: list[str],
    suffixes: tuple[str, str],
    n_left: int,
    *parts: B.Block,
) -> tuple[B.Block, B.BlockMetadata]:
    """Join partition j of the left side with partition j of the right side (Arrow's hash join)."""
    t0 = time.perf_counter()
    left = B.concat([b for b in parts[:n_left] if b.num_columns])
    right = B.concat([b for b in parts[n_left:] if b.num_columns])
    in_rows = left.num_rows + right.num_rows
    if left.num_columns == 0 or right.num_columns == 0:
        keep_left = how in ("left outer", "full outer", "left anti")
        keep_right = how in ("right outer", "full outer", "right anti")
        out = left if keep_left and left.num_columns else right if keep_right else B.empty_block()
        if out.num_columns == 0:
            out = B.empty_block()
    else:
        out = _hash_join(left, right, how, on, right_on, suffixes)
    return out, B.metadata_of(out, time.perf_counter() - t0, in_rows)


def _hash_join(  # noqa: PLR0917 - both sides and how they meet
    left: B.Block,
    right: B.Block,
    how: str,
    on: list[str],
    right_on: list[str],
    suffixes: tuple[str, str],
) -> B.Block:
    """Arrow's hash join on the keys and row numbers only, then ``take`` of the other
    columns: Acero cannot carry tensor (extension or fixed-size list) columns itself."""
    li = left.select(on).append_column("__left_row", pa.array(np.arange(left.num_rows)))
    ri = right.select(right_on).append_column("__right_row", pa.array(np.arange(right.num_rows)))
    j = li.join(ri, keys=on, right_keys=right_on, join_type=how, coalesce_keys=True)
    cols: dict[str, Any] = {}
    if how.startswith("right ") and how != "right outer":  # right semi / anti
        rows = j.column("__right_row")
        return right.take(rows)
    if how.startswith("left ") and how != "left outer":  # left semi / anti
        return left.take(j.column("__left_row"))
    for k in on:
        cols[k] = j.column(k)
    left_rest = [c for c in left.column_names if c not in on]
    right_rest = [c for c in right.column_names if c not in right_on]
    clash = set(left_rest) & set(right_rest) | (set(right_rest) & set(on))
    for c in left_rest:
        name = c + suffixes[0] if c in clash else c
        cols[name] = left.column(c).take(j.column("__left_row"))
    for c in right_rest:
        name = c + suffixes[1] if c in clash else c
        if name in cols:
            raise ValueError(f"join: both sides have a column {c!r}; pass left_suffix/right_suffix")
        cols[name] = right.column(c).take(j.column("__right_row"))
    return pa.table(cols)


_join_task: Any = runtime.remote(num_returns=2, max_retries=3)(_join_parts)


def join(  # noqa: PLR0917 - both sides and how they meet
    left: list[RefBundle],
    right: list[RefBundle],
    join_type: str,
    on: list[str],
    right_on: list[str],
    num_partitions: int,
    suffixes: tuple[str, str],
) -> list[RefBundle]:
    """Hash-partition both sides on their keys into ``num_partitions`` parts, then join part
    i of the left with part i of the right in one task: memory per task is one partition."""
    how = _JOIN_TYPES[join_type]
    p = max(1, num_partitions)

    def split(bundles: list[RefBundle], keys: list[str], side: str) -> list[list[Any]]:
        return [
            _as_list(_map_task.options(num_returns=p).remote(b.ref, "join", p, (keys, side), i), p)
            for i, b in enumerate(bundles)
        ]

    lp = split(left, on, "join: the left dataset")
    rp = split(right, right_on, "join: the right dataset")
    out = [
        _join_task.remote(
            how, on, right_on, suffixes, len(lp), *[x[j] for x in lp], *[x[j] for x in rp]
        )
        for j in range(p)
    ]
    return [b for b in _finish(out) if b.meta.num_rows]


def _slice_concat(spec: list[tuple[int, int]], *blocks: B.Block) -> tuple[B.Block, B.BlockMetadata]:
    parts = [b.slice(s, e - s) for (s, e), b in zip(spec, blocks, strict=True)]
    out = B.concat(parts)
    if len(parts) == 1 and out.num_rows < blocks[0].num_rows:
        out = B.compact(out)  # a slice would pickle its whole block
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


def repartition(
    bundles: list[RefBundle], n: int | None, rows_per_block: int | None = None
) -> list[RefBundle]:
    """``n`` blocks of (nearly) equal rows, in order (or as few blocks as hold at most
    ``rows_per_block`` rows each)."""
    total = sum(b.meta.num_rows for b in bundles)
    if n is None:
        assert rows_per_block is not None
        n = max(1, -(-total // rows_per_block))
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


def coalesce(bundles: list[RefBundle], min_rows: int) -> list[RefBundle]:
    """Consecutive blocks joined until each has at least ``min_rows`` rows, in order (fewer
    only when the whole dataset has fewer)."""
    groups: list[list[RefBundle]] = []
    have = 0
    for b in bundles:
        if not b.meta.num_rows:
            continue
        if not groups or have >= min_rows:
            groups.append([])
            have = 0
        groups[-1].append(b)
        have += b.meta.num_rows
    if len(groups) > 1 and have < min_rows:  # a short tail joins the group before it
        groups[-2].extend(groups.pop())
    out = []
    for g in groups:
        if len(g) == 1:
            out.append(g[0])
        else:
            spec = [(0, b.meta.num_rows) for b in g]
            out.extend(_finish([_slice_task.remote(spec, *[b.ref for b in g])]))
    return out
