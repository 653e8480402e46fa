"""Blocks: the pyarrow Tables that flow through a dataset, and the batch formats users see.

A block is a ``pyarrow.Table``. User functions see rows as dicts and batches as a dict of
numpy arrays (``"numpy"``), a ``pandas.DataFrame`` (``"pandas"``) or a ``pyarrow.Table``
(``"pyarrow"``); this module converts between those and blocks, and nothing else does.
"""

from __future__ import annotations

import contextlib
import json
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


def _column_from_values(values: Any, name: str = "") -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, list) and _all_arrays(values):
        return tensor_array_from_list(values)
    if isinstance(values, np.ndarray) and values.dtype == object and _all_arrays(list(values)):
        return tensor_array_from_list(list(values))
    try:
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"column {name!r}: cannot make an array of its values ({e})") from None
    if arr.ndim > 1 and _tensor_dtype_ok(arr.dtype):
        # A tensor column: pyarrow's fixed_shape_tensor extension type (zero-copy when the
        # array is contiguous).
        return fixed_tensor_array(arr)
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
        cols = {str(k): _column_from_values(v, str(k)) for k, v in batch.items()}
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
        return block_from_pandas(batch)
    raise TypeError(
        "a batch function must return a dict of arrays, a pandas.DataFrame or a "
        f"pyarrow.Table, got {type(batch).__name__}"
    )


def block_from_pandas(df: Any) -> Block:
    """A block from a DataFrame; object columns of ndarrays become tensor columns."""
    tensors = {
        str(c): tensor_array_from_list(list(df[c]))
        for c in df.columns
        if df[c].dtype == object and len(df) and _all_arrays(list(df[c]))
    }
    if not tensors:
        return pa.Table.from_pandas(df, preserve_index=False)
    rest = pa.Table.from_pandas(df.drop(columns=list(tensors)), preserve_index=False)
    cols = {
        str(c): tensors[str(c)] if str(c) in tensors else rest.column(str(c)) for c in df.columns
    }
    return pa.table(cols)


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
    if any(isinstance(v, np.ndarray) and v.ndim >= 1 for v in rows[0].values()):
        # Rows holding arrays: build column by column so arrays become tensor columns.
        keys = list(dict.fromkeys(k for r in rows for k in r))
        cols = {k: [r.get(k) for r in rows] for k in keys}
        if all(_all_arrays(v) or not _has_array(v) for v in cols.values()):
            try:
                return pa.table(
                    {
                        k: tensor_array_from_list(v) if _all_arrays(v) else pa.array(v)
                        for k, v in cols.items()
                    }
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                pass
        return _object_table(cols)
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Values Arrow cannot type (arbitrary objects, ragged arrays): keep them as pickles.
        keys = list(dict.fromkeys(k for r in rows for k in r))
        cols = {k: [r.get(k) for r in rows] for k in keys}
        return _object_table(cols)


def _has_array(values: list[Any]) -> bool:
    return any(isinstance(v, np.ndarray) for v in values)


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
    if col.num_chunks > 1 and _joinable(col):
        # A batch across blocks: its pieces' views joined in numpy, in memory that the
        # process touched before (see _warm) rather than fresh pages from Arrow's pool.
        from ._warm import warm_arrays

        parts = [_column_to_numpy(pa.chunked_array([c], typ), False) for c in col.chunks]
        with warm_arrays():
            return np.concatenate(parts)
    if is_tensor_type(typ):
        return tensor_to_numpy(col)
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


def _joinable(col: pa.ChunkedArray) -> bool:
    """Whether each chunk of ``col`` is a numpy view and joining the views gives what Arrow's
    own conversion gives: numbers or fixed-shape tensors of them, without nulls."""
    typ = col.type
    if isinstance(typ, pa.FixedShapeTensorType):
        typ = typ.value_type
    return (pa.types.is_integer(typ) or pa.types.is_floating(typ)) and col.null_count == 0


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
        if pickled_columns(block) or tensor_columns(block):
            return to_pandas(block)
        return block.to_pandas()
    return block


def iter_rows(block: Block) -> Iterator[dict[str, Any]]:
    pickled = pickled_columns(block)
    special = pickled | set(tensor_columns(block))
    if special:
        # Tensor cells come back as ndarrays (views of the block), as in Ray.
        arrays = {k: _column_to_numpy(block.column(k), k in pickled) for k in special}
        names = block.column_names
        plain = block.drop_columns(list(special)).to_pylist()
        for i in range(block.num_rows):
            base = plain[i] if plain else {}
            yield {k: (_scalar(arrays[k][i]) if k in arrays else base[k]) for k in names}
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
    blocks = unify_tensor_columns(blocks)
    try:
        return pa.concat_tables(blocks, promote_options="default")
    except pa.ArrowInvalid as e:
        raise ValueError(f"cannot combine blocks with different schemas: {e}") from None


def to_pandas(block: Block) -> Any:
    """A DataFrame; tensor columns become object columns of ndarrays (one per row)."""
    import pandas as pd

    if not tensor_columns(block) and not pickled_columns(block):
        return block.to_pandas()
    batch = to_numpy_batch(block)
    cols: dict[str, Any] = {}
    for k, v in batch.items():
        if v.ndim > 1:
            cell = np.empty(len(v), dtype=object)
            for i in range(len(v)):
                cell[i] = v[i]
            cols[k] = cell
        else:
            cols[k] = v
    return pd.DataFrame(cols)


def compact(block: Block) -> Block:
    """A slice's rows in buffers of their own. Pickling a slice writes the whole buffers it
    views (every row of the block it was cut from), so slices are compacted before they
    leave a task."""
    arrays = [_compact_column(c) for c in block.columns]
    return pa.Table.from_arrays(arrays, schema=block.schema)


def _compact_column(col: pa.ChunkedArray) -> pa.Array:
    if col.num_chunks == 1:
        rebased = _rebased(col.chunk(0))
        if rebased is not None:
            return rebased
    return pa.concat_arrays(list(col.chunks)) if col.num_chunks else pa.array([], col.type)


def _rebased(arr: pa.Array) -> pa.Array | None:
    """A slice of a fixed-width column without nulls (numbers, fixed-size lists of them,
    tensor columns) over slices of its buffers, at offset 0: nothing is copied, and
    pickling it writes only its own rows. ``None`` for other columns (they are copied)."""
    if arr.null_count:
        return None
    typ = arr.type
    if isinstance(typ, pa.BaseExtensionType):
        storage = _rebased(arr.storage)
        return None if storage is None else pa.ExtensionArray.from_storage(typ, storage)
    if pa.types.is_fixed_size_list(typ):
        values = _rebased(arr.flatten())
        return None if values is None else pa.FixedSizeListArray.from_arrays(values, type=typ)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        width = typ.bit_width // 8
        data = arr.buffers()[1]
        if data is None:
            return None
        piece = data.slice(arr.offset * width, len(arr) * width)
        return pa.Array.from_buffers(typ, len(arr), [None, piece])
    return None


def split_rows(block: Block, sizes: list[int]) -> list[Block]:
    out, start = [], 0
    for n in sizes:
        out.append(block.slice(start, n))
        start += n
    return out


# --- tensor columns -------------------------------------------------------------------------

#: The extension name of ragged tensor columns (pyarrow has no Python variable-shape type).
VARIABLE_SHAPE_TENSOR = "runtime.variable_shape_tensor"


class VariableShapeTensorType(pa.ExtensionType):
    """A column of n-dimensional arrays whose shapes differ from row to row.

    Storage: ``struct<data: large_list<value_type>, shape: fixed_size_list<int64>[ndim]>``,
    each row's values flattened in C order. Fixed-shape columns use pyarrow's canonical
    ``arrow.fixed_shape_tensor``; this one is used when shapes differ (Ray's variable-shaped
    tensor type plays the same part).
    """

    def __init__(self, value_type: pa.DataType, ndim: int) -> None:
        self._value_type = value_type
        self._ndim = int(ndim)
        storage = pa.struct(
            [
                pa.field("data", pa.large_list(value_type)),
                pa.field("shape", pa.list_(pa.int64(), self._ndim)),
            ]
        )
        super().__init__(storage, VARIABLE_SHAPE_TENSOR)

    @property
    def value_type(self) -> pa.DataType:
        return self._value_type

    @property
    def ndim(self) -> int:
        return self._ndim

    def __arrow_ext_serialize__(self) -> bytes:
        return json.dumps({"ndim": self._ndim}).encode()

    @classmethod
    def __arrow_ext_deserialize__(
        cls, storage_type: pa.DataType, serialized: bytes
    ) -> VariableShapeTensorType:
        ndim = json.loads(serialized.decode())["ndim"]
        return cls(storage_type.field("data").type.value_type, ndim)

    def __reduce__(self) -> tuple[Any, ...]:
        return VariableShapeTensorType, (self._value_type, self._ndim)


with contextlib.suppress(pa.ArrowKeyError):  # registered once per process
    pa.register_extension_type(VariableShapeTensorType(pa.float64(), 1))


def _tensor_dtype_ok(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "biuf" or dtype == np.bool_


def is_tensor_type(typ: pa.DataType) -> bool:
    return isinstance(typ, (pa.FixedShapeTensorType, VariableShapeTensorType))


def tensor_columns(block: Block) -> list[str]:
    return [f.name for f in block.schema if is_tensor_type(f.type)]


def fixed_tensor_array(arr: np.ndarray) -> pa.Array:
    """Rows of ``arr`` (ndim >= 2) as a ``fixed_shape_tensor`` column, zero-copy when contiguous."""
    arr = np.ascontiguousarray(arr)
    shape = [int(d) for d in arr.shape[1:]]
    typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(arr.dtype), shape)
    size = int(np.prod(shape)) if shape else 1
    storage = pa.FixedSizeListArray.from_arrays(_flat_values(arr), size)
    return pa.ExtensionArray.from_storage(typ, storage)


def _flat_values(arr: np.ndarray) -> pa.Array:
    """A contiguous numeric array's values as an Arrow array over the same memory (no copy;
    ``pa.array`` copies). Booleans are bit-packed by Arrow, so they are converted."""
    flat = arr.reshape(-1)
    if flat.dtype.kind in "iuf" and flat.dtype.isnative:
        return pa.Array.from_buffers(
            pa.from_numpy_dtype(flat.dtype), len(flat), [None, pa.py_buffer(flat)]
        )
    return pa.array(flat)


def variable_tensor_array(values: list[np.ndarray]) -> pa.Array:
    """Arrays of one dtype and ndim but different shapes as a variable-shape tensor column."""
    ndims = {v.ndim for v in values}
    if len(ndims) != 1:
        raise ValueError(
            "a tensor column's arrays must all have the same number of dimensions, got "
            f"shapes {sorted({v.shape for v in values})[:5]}"
        )
    dtype = np.result_type(*[v.dtype for v in values]) if values else np.dtype("float64")
    flat = [np.ascontiguousarray(v, dtype=dtype).reshape(-1) for v in values]
    lengths = np.fromiter((len(f) for f in flat), dtype=np.int64, count=len(flat))
    offsets = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data_values = _flat_values(np.concatenate(flat) if flat else np.zeros(0, dtype=dtype))
    data = pa.LargeListArray.from_arrays(pa.array(offsets), data_values)
    ndim = ndims.pop()
    shapes = np.array([v.shape for v in values], dtype=np.int64).reshape(-1)
    shape_arr = pa.FixedSizeListArray.from_arrays(pa.array(shapes), ndim)
    typ = VariableShapeTensorType(pa.from_numpy_dtype(dtype), ndim)
    storage = pa.StructArray.from_arrays([data, shape_arr], fields=list(typ.storage_type))
    return pa.ExtensionArray.from_storage(typ, storage)


def tensor_array_from_list(values: list[Any]) -> pa.Array:
    """A tensor column from a list of arrays: fixed-shape if they share a shape, else ragged."""
    arrays = [np.asarray(v) for v in values]
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1:
        return fixed_tensor_array(np.stack(arrays) if arrays else np.zeros((0, 0)))
    return variable_tensor_array(arrays)


def _all_arrays(values: list[Any]) -> bool:
    return bool(values) and all(
        isinstance(v, np.ndarray) and v.ndim >= 1 and _tensor_dtype_ok(v.dtype) for v in values
    )


def tensor_to_numpy(col: pa.ChunkedArray | pa.Array, name: str = "") -> np.ndarray:
    """A tensor column as one ndarray (fixed shape: a zero-copy view of a single chunk) or,
    ragged, an object array of ndarrays."""
    if isinstance(col, pa.ChunkedArray):
        # One chunk: a view of it; several: one copy into a single array.
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    else:
        arr = col
    typ = arr.type
    if isinstance(typ, pa.FixedShapeTensorType):
        if len(arr) == 0:
            dtype = typ.value_type.to_pandas_dtype()
            return np.zeros((0, *typ.shape), dtype=dtype)
        return arr.to_numpy_ndarray()
    storage = arr.storage
    data = storage.field("data")
    shapes = storage.field("shape").flatten().to_numpy().reshape(len(arr), typ.ndim)
    offsets = data.offsets.to_numpy()
    flat = data.values.to_numpy(zero_copy_only=False)
    out = np.empty(len(arr), dtype=object)
    for i in range(len(arr)):
        out[i] = flat[offsets[i] : offsets[i + 1]].reshape(shapes[i])
    return out


def _as_variable(col: pa.ChunkedArray) -> pa.Array:
    return variable_tensor_array(list(tensor_to_numpy(col)))


def unify_tensor_columns(blocks: list[Block]) -> list[Block]:
    """Blocks whose tensor columns disagree on shape get the variable-shape type for them."""
    names: dict[str, set[pa.DataType]] = {}
    for b in blocks:
        for f in b.schema:
            if is_tensor_type(f.type):
                names.setdefault(f.name, set()).add(f.type)
    ragged = [n for n, types in names.items() if len(types) > 1]
    if not ragged:
        return blocks
    out = []
    for block in blocks:
        fixed = block
        for n in ragged:
            if n in fixed.column_names and not isinstance(
                fixed.schema.field(n).type, VariableShapeTensorType
            ):
                fixed = fixed.set_column(
                    fixed.column_names.index(n), n, _as_variable(fixed.column(n))
                )
        out.append(fixed)
    return out
