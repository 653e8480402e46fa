"""AggregateFn: user-defined aggregations (Ray's signature), folded row by row per group.

``AggregateFn(init, merge, accumulate_row=..., finalize=..., name=...)``: ``init(key)``
makes a group's state, ``accumulate_row(state, row)`` (or ``accumulate_block(state,
table)``) folds a block's rows into it in the task that made the block, ``merge(a, b)``
combines the states of one group from different blocks, and ``finalize(state)`` gives the
value. States travel pickled. When an aggregation mixes these with the built-ins, the
built-ins run through this path too (as equivalent folds).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from . import _block as B
from ._block import Block


class AggregateFn:
    """A user-defined aggregation, as Ray's ``AggregateFn``.

    Example::

        longest = data.AggregateFn(
            init=lambda key: "", accumulate_row=lambda s, row: max(s, row["name"], key=len),
            merge=lambda a, b: max(a, b, key=len), name="longest(name)",
        )
        ds.groupby("team").aggregate(longest)
    """

    def __init__(  # noqa: PLR0917 - Ray's signature
        self,
        init: Callable[[Any], Any],
        merge: Callable[[Any, Any], Any],
        accumulate_row: Callable[[Any, dict[str, Any]], Any] | None = None,
        accumulate_block: Callable[[Any, Block], Any] | None = None,
        finalize: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError("give exactly one of accumulate_row and accumulate_block")
        for label, fn in (("init", init), ("merge", merge)):
            if not callable(fn):
                raise TypeError(f"AggregateFn {label} must be callable, got {fn!r}")
        self.init = init
        self.merge = merge
        self.accumulate_row = accumulate_row
        self.accumulate_block = accumulate_block
        self.finalize = finalize or (lambda state: state)
        self.name = name or "aggregate"

    def __repr__(self) -> str:
        return f"AggregateFn({self.name})"


def _not_null(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _welford(state: tuple[int, float, float], x: float) -> tuple[int, float, float]:
    n, mean, m2 = state
    n += 1
    delta = x - mean
    mean += delta / n
    return n, mean, m2 + delta * (x - mean)


def _chan(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    if n == 0:
        return 0, 0.0, 0.0
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


def as_custom(a: Any) -> AggregateFn:
    """A built-in aggregation as an equivalent fold (used when mixed with custom ones)."""
    if isinstance(a, AggregateFn):
        return a
    on, kind = a.on, a.kind

    def value(row: dict[str, Any]) -> Any:
        return row[on]

    def pick(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return lambda x, y: y if x is None else x if y is None else op(x, y)

    if kind == "count":
        row_fn: Callable[[Any, dict[str, Any]], Any] = (
            (lambda s, r: s + 1) if on is None else (lambda s, r: s + _not_null(value(r)))
        )
        return AggregateFn(lambda k: 0, lambda x, y: x + y, row_fn, name=a.name)
    if kind in ("sum", "min", "max"):
        ops: dict[str, Callable[[Any, Any], Any]] = {
            "sum": lambda x, y: x + y,
            "min": min,
            "max": max,
        }
        op = ops[kind]
        return AggregateFn(
            lambda k: None,
            pick(op),
            lambda s, r: pick(op)(s, value(r)) if _not_null(value(r)) else s,
            name=a.name,
        )
    ddof = a.ddof

    def finish(state: tuple[int, float, float]) -> Any:
        n, mean, m2 = state
        if kind == "mean":
            return mean if n else None
        return math.sqrt(m2 / (n - ddof)) if n - ddof > 0 else None

    return AggregateFn(
        lambda k: (0, 0.0, 0.0),
        _chan,
        lambda s, r: _welford(s, float(value(r))) if _not_null(value(r)) else s,
        finalize=finish,
        name=a.name,
    )


def _group_key(key: tuple[Any, ...]) -> Any:
    return key[0] if len(key) == 1 else key


def partial(block: Block, keys: list[str], aggs: list[AggregateFn]) -> Block:
    """One row per group of this block: its keys and its pickled states."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    rows = B.to_rows(block)
    for i, row in enumerate(rows):
        groups.setdefault(tuple(row[k] for k in keys), []).append(i)
    states = []
    for key, idx in groups.items():
        per_agg = []
        for a in aggs:
            state = a.init(_group_key(key))
            if a.accumulate_block is not None:
                state = a.accumulate_block(state, block.take(pa.array(idx)))
            else:
                assert a.accumulate_row is not None
                for i in idx:
                    state = a.accumulate_row(state, rows[i])
            per_agg.append(state)
        states.append(pickle.dumps(per_agg))
    cols: dict[str, Any] = {k: [key[j] for key in groups] for j, k in enumerate(keys)}
    cols["__states__"] = pa.array(states, pa.binary())
    if keys and groups:
        return pa.table({**{k: pa.array(cols[k]) for k in keys}, "__states__": cols["__states__"]})
    return pa.table(cols) if groups else pa.table({})


def merge(partials: list[Block], keys: list[str], aggs: list[AggregateFn]) -> Block:
    """Combine the states of each group, finish them; one row per group, sorted by key."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for p in partials:
        if not p.num_rows:
            continue
        key_cols = [p.column(k).to_pylist() for k in keys]
        for i, blob in enumerate(p.column("__states__").to_pylist()):
            key = tuple(col[i] for col in key_cols)
            states = pickle.loads(blob)
            if key in merged:
                merged[key] = [
                    a.merge(x, y) for a, x, y in zip(aggs, merged[key], states, strict=True)
                ]
            else:
                merged[key] = states
    if not merged and not keys:
        merged[()] = [a.init(None) for a in aggs]
    if not merged:
        return pa.table({})
    try:
        ordered = sorted(merged)
    except TypeError:  # keys that do not compare (None among values): keep first-seen order
        ordered = list(merged)
    out: dict[str, Any] = {k: [key[j] for key in ordered] for j, k in enumerate(keys)}
    for i, a in enumerate(aggs):
        out[a.name] = [a.finalize(merged[key][i]) for key in ordered]
    return B.block_from_rows(
        [dict(zip(out, vals, strict=True)) for vals in zip(*out.values(), strict=True)]
    )
