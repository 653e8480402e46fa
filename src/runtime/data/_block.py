"""Blocks: the pyarrow Tables that flow through a dataset, and the batch formats users see.

A block is a ``pyarrow.Table``. User functions see rows as dicts and batches as a dict of
numpy arrays (``"numpy"``), a ``pandas.DataFrame`` (``"pandas"``) or a ``pyarrow.Table``
(``"pyarrow"``); this module converts between those and blocks, and nothing else does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

Block: TypeAlias = pa.Table

BATCH_FORMATS = ("numpy", "pandas", "pyarrow", "default")


@dataclass(frozen=True)
class BlockMetadata:
    """What the executor knows about a block without fetching it."""

    num_rows: int
    size_bytes: int
    exec_s: float = 0.0
    in_rows: int = 0


def metadata_of(block: Block, exec_s: float = 0.0, in_rows: int = 0) -> BlockMetadata:
    return BlockMetadata(block.num_rows, block.nbytes, exec_s, in_rows)


def check_batch_format(batch_format: str | None) -> str:
    fmt = "numpy" if batch_format in (None, "default") else batch_format
    if fmt not in BATCH_FORMATS:
        raise ValueError(
            f"batch_format must be one of 'numpy', 'pandas', 'pyarrow', got {batch_format!r}"
        )
    return str(fmt)


def empty_block() -> Block:
    return pa.table({})


def _column_from_values(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if arr.ndim > 1 and arr.dtype != object:
        # A tensor column: each row's sub-array as (nested) fixed-size lists.
        out: pa.Array = pa.array(np.ascontiguousarray(arr).reshape(-1))
        for dim in reversed(arr.shape[1:]):
            out = pa.FixedSizeListArray.from_arrays(out, int(dim))
        return out
    if arr.dtype == object:
        return pa.array(list(arr))
    return pa.array(arr)


def block_from_batch(batch: Any) -> Block:
    """A block from what a user's batch function returned (dict, DataFrame or Table)."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):
        cols = {str(k): _column_from_values(v) for k, v in batch.items()}
        lengths = {len(c) for c in cols.values()}
        if len(lengths) > 1:
            raise ValueError(
                "a batch's columns must all have the same length, got lengths "
                + ", ".join(f"{k}={len(v)}" for k, v in cols.items())
            )
        return pa.table(cols)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is part of the data extra
        pd = None
    if pd is not None and isinstance(batch, pd.DataFrame):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(
        "a batch function must return a dict of arrays, a pandas.DataFrame or a "
        f"pyarrow.Table, got {type(batch).__name__}"
    )


def block_from_rows(rows: Iterable[Any]) -> Block:
    """A block from row dicts (a non-dict row ``x`` becomes ``{"item": x}``, as in Ray)."""
    rows = list(rows)
    if not rows:
        return empty_block()
    if not isinstance(rows[0], Mapping):
        rows = [{"item": r} for r in rows]
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"row {i} is a {type(r).__name__}, but earlier rows were dicts")
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Values Arrow cannot type (arbitrary objects, ragged arrays): keep them as pickles.
        keys = list(dict.fromkeys(k for r in rows for k in r))
        cols = {k: [r.get(k) for r in rows] for k in keys}
        return _object_table(cols)


def _object_table(cols: dict[str, list[Any]]) -> Block:
    import pickle

    arrays: dict[str, pa.Array] = {}
    meta: dict[str, str] = {}
    for k, values in cols.items():
        try:
            arrays[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            arrays[k] = pa.array([pickle.dumps(v) for v in values], type=pa.binary())
            meta[k] = "pickled"
    table = pa.table(arrays)
    if meta:
        table = table.replace_schema_metadata({f"runtime.{k}": v for k, v in meta.items()})
    return table


def pickled_columns(block: Block) -> set[str]:
    md = block.schema.metadata or {}
    return {k.decode()[len("runtime.") :] for k, v in md.items() if v == b"pickled"}


def _column_to_numpy(col: pa.ChunkedArray, pickled: bool) -> np.ndarray:
    if pickled:
        import pickle

        return np.array([pickle.loads(v) for v in col.to_pylist()], dtype=object)
    typ = col.type
    if pa.types.is_fixed_size_list(typ):
        shape = [len(col)]
        arr: Any = col.combine_chunks()
        while pa.types.is_fixed_size_list(arr.type):
            shape.append(arr.type.list_size)
            arr = arr.flatten()
        return np.asarray(arr.to_numpy(zero_copy_only=False)).reshape(shape)
    try:
        if col.num_chunks == 1:
            # One chunk of a primitive type without nulls: a zero-copy (read-only) view.
            return col.chunk(0).to_numpy(zero_copy_only=False)
        return col.to_numpy()
    except (pa.ArrowInvalid, NotImplementedError):
        return np.array(col.to_pylist(), dtype=object)


def to_numpy_batch(block: Block) -> dict[str, np.ndarray]:
    pickled = pickled_columns(block)
    return {
        name: _column_to_numpy(block.column(name), name in pickled) for name in block.column_names
    }


def to_batch(block: Block, batch_format: str) -> Any:
    """A block as the user's batch format."""
    if batch_format in ("numpy", "default"):
        return to_numpy_batch(block)
    if batch_format == "pandas":
        if pickled_columns(block):
            import pandas as pd

            return pd.DataFrame(to_numpy_batch(block))
        return block.to_pandas()
    return block


def iter_rows(block: Block) -> Iterator[dict[str, Any]]:
    pickled = pickled_columns(block)
    if pickled:
        batch = to_numpy_batch(block)
        for i in range(block.num_rows):
            yield {k: _scalar(v[i]) for k, v in batch.items()}
        return
    yield from block.to_pylist()


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def to_rows(block: Block) -> list[dict[str, Any]]:
    return list(iter_rows(block))


def concat(blocks: list[Block]) -> Block:
    blocks = [b for b in blocks if b.num_columns > 0 or b.num_rows > 0]
    if not blocks:
        return empty_block()
    if len(blocks) == 1:
        return blocks[0]
    try:
        return pa.concat_tables(blocks, promote_options="default")
    except pa.ArrowInvalid as e:
        raise ValueError(f"cannot combine blocks with different schemas: {e}") from None


def split_rows(block: Block, sizes: list[int]) -> list[Block]:
    out, start = [], 0
    for n in sizes:
        out.append(block.slice(start, n))
        start += n
    return out
