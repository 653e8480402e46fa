"""Aggregations: Count/Sum/Min/Max/Mean/Std as partial states per block, merged per group.

Each block is reduced in the task that made it (a partial: counts, sums, min, max, means and
variances per group), so only small partials travel; partials merge in pandas. Nulls are
ignored, as in Ray. ``std`` uses ``ddof=1`` by default, as Ray does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._block import Block
from ._transforms import Transform

_PARTS = {
    "count": ("count",),
    "sum": ("sum",),
    "min": ("min",),
    "max": ("max",),
    "mean": ("count", "mean"),
    "std": ("count", "mean", "variance"),
}


@dataclass(frozen=True)
class BuiltinAggregate:
    """A built-in aggregation of one column (``on=None`` with Count: rows), vectorised."""

    kind: str
    on: str | None = None
    ddof: int = 1
    alias_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _PARTS:
            raise ValueError(f"unknown aggregation {self.kind!r}; one of {sorted(_PARTS)}")
        if self.on is None and self.kind != "count":
            raise ValueError(f"{self.kind} needs a column (on=...)")

    @property
    def name(self) -> str:
        if self.alias_name:
            return self.alias_name
        return f"{self.kind}({self.on or ''})"


def Count(on: str | None = None, alias_name: str | None = None) -> BuiltinAggregate:
    """Rows per group (non-null values of ``on`` when given)."""
    return BuiltinAggregate("count", on, alias_name=alias_name)


def Sum(on: str, alias_name: str | None = None) -> BuiltinAggregate:
    """Sum of a column."""
    return BuiltinAggregate("sum", on, alias_name=alias_name)


def Min(on: str, alias_name: str | None = None) -> BuiltinAggregate:
    """Minimum of a column."""
    return BuiltinAggregate("min", on, alias_name=alias_name)


def Max(on: str, alias_name: str | None = None) -> BuiltinAggregate:
    """Maximum of a column."""
    return BuiltinAggregate("max", on, alias_name=alias_name)


def Mean(on: str, alias_name: str | None = None) -> BuiltinAggregate:
    """Mean of a column."""
    return BuiltinAggregate("mean", on, alias_name=alias_name)


def Std(on: str, ddof: int = 1, alias_name: str | None = None) -> BuiltinAggregate:
    """Standard deviation of a column (``ddof=1``: the sample std, as in Ray)."""
    return BuiltinAggregate("std", on, ddof=ddof, alias_name=alias_name)


def _needed(aggs: list[BuiltinAggregate]) -> list[tuple[str | None, str]]:
    out: dict[tuple[str | None, str], None] = {}
    for a in aggs:
        for part in _PARTS[a.kind]:
            out[(a.on, part)] = None
    return list(out)


def _pname(col: str | None, part: str) -> str:
    return f"__{part}__{col or ''}"


def partial(block: Block, keys: list[str], aggs: list[Any]) -> Block:
    """The partial state of ``aggs`` over one block, one row per group."""
    if not all(isinstance(a, BuiltinAggregate) for a in aggs):
        from . import _custom_aggregate as custom

        return custom.partial(block, keys, [custom.as_custom(a) for a in aggs])
    needed = _needed(aggs)
    for col, _ in needed:
        if col is not None and col not in block.column_names:
            raise KeyError(f"no column {col!r} to aggregate; columns are {block.column_names}")
    if keys:
        specs: list[Any] = []
        names = []
        for col, part in needed:
            if col is None:
                specs.append(([], "count_all"))
            elif part == "variance":
                specs.append((col, "variance", pc.VarianceOptions(ddof=0)))
            elif part == "count":
                specs.append((col, "count"))
            else:
                specs.append((col, part))
            names.append(_pname(col, part))
        table = _cast_numeric(block, needed).group_by(keys, use_threads=False).aggregate(specs)
        # pyarrow names outputs "<col>_<fn>" (count_all: "count_all"); map them to ours.
        out = {k: table.column(k) for k in keys}
        for (col, part), name in zip(needed, names, strict=True):
            src = "count_all" if col is None else f"{col}_{part}"
            out[name] = table.column(src)
        return pa.table(out)
    cols: dict[str, Any] = {}
    block = _cast_numeric(block, needed)
    for col, part in needed:
        name = _pname(col, part)
        if col is None:
            cols[name] = [block.num_rows]
            continue
        arr = block.column(col)
        if part == "count":
            cols[name] = [pc.count(arr).as_py()]
        elif part == "sum":
            cols[name] = [pc.sum(arr).as_py()]
        elif part == "min":
            cols[name] = [pc.min(arr).as_py()]
        elif part == "max":
            cols[name] = [pc.max(arr).as_py()]
        elif part == "mean":
            cols[name] = [pc.mean(arr).as_py()]
        else:
            cols[name] = [pc.variance(arr, ddof=0).as_py()]
    return pa.table(cols)


def _cast_numeric(block: Block, needed: list[tuple[str | None, str]]) -> Block:
    # Booleans sum and average as integers.
    for col, _ in needed:
        if col is not None and pa.types.is_boolean(block.schema.field(col).type):
            idx = block.column_names.index(col)
            block = block.set_column(idx, col, pc.cast(block.column(col), pa.int64()))
    return block


def merge(partials: list[Block], keys: list[str], aggs: list[Any]) -> Block:
    """Merge partial states and finish: one row per group (sorted by key), one column per agg."""
    if not all(isinstance(a, BuiltinAggregate) for a in aggs):
        from . import _custom_aggregate as custom

        return custom.merge(partials, keys, [custom.as_custom(a) for a in aggs])
    import pandas as pd

    partials = [p for p in partials if p.num_rows]
    if not partials:
        if keys:
            return pa.table({})
        partials = []
    df = (
        pd.concat([p.to_pandas() for p in partials], ignore_index=True)
        if partials
        else pd.DataFrame({_pname(c, p): [] for c, p in _needed(aggs)})
    )
    needed = _needed(aggs)
    for col, part in needed:
        name = _pname(col, part)
        if part == "mean":
            n = df[_pname(col, "count")]
            df["__w__" + (col or "")] = df[name] * n
        if part == "variance":
            n = df[_pname(col, "count")]
            m = df[_pname(col, "mean")]
            df["__s2__" + (col or "")] = df[name] * n + n * m * m
    sums = [c for c in df.columns if c.startswith(("__count__", "__sum__", "__w__", "__s2__"))]
    if keys:
        g = df.groupby(keys, sort=True, dropna=False)
        merged = g[sums].sum(min_count=1) if sums else g.size().to_frame("__size")
        for col, part in needed:
            if part in ("min", "max"):
                merged[_pname(col, part)] = getattr(g[_pname(col, part)], part)()
        merged = merged.reset_index()
    else:
        row = {c: df[c].sum(min_count=1) for c in sums}
        for col, part in needed:
            if part in ("min", "max"):
                row[_pname(col, part)] = getattr(df[_pname(col, part)], part)()
        merged = pd.DataFrame({k: [v] for k, v in row.items()})
    out: dict[str, Any] = {k: merged[k].to_numpy() for k in keys}
    for a in aggs:
        c = a.on
        if a.kind == "count":
            out[a.name] = merged[_pname(c, "count")].fillna(0).astype("int64").to_numpy()
        elif a.kind in ("sum", "min", "max"):
            out[a.name] = merged[_pname(c, a.kind)].to_numpy()
        else:
            n = merged[_pname(c, "count")].astype("float64")
            mean = merged["__w__" + (c or "")] / n
            if a.kind == "mean":
                out[a.name] = mean.to_numpy()
            else:
                m2 = (merged["__s2__" + (c or "")] - n * mean * mean).clip(lower=0)
                denom = (n - a.ddof).where(n - a.ddof > 0)
                out[a.name] = np.sqrt(m2 / denom).to_numpy()
    return pa.table({k: _arrow(v) for k, v in out.items()})


def _arrow(values: Any) -> pa.Array:
    arr = np.asarray(values)
    if arr.dtype == object:
        return pa.array(list(arr), from_pandas=True)
    return pa.array(arr, from_pandas=True)


class PartialAggregate(Transform):
    """A terminal transform: a block becomes its partial aggregate (fused into the last task)."""

    name = "Aggregate"

    def __init__(self, keys: list[str], aggs: list[Any]) -> None:
        self.keys = keys
        self.aggs = aggs

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        if block.num_rows == 0 and block.num_columns == 0:
            return pa.table({})
        return partial(block, self.keys, self.aggs)
