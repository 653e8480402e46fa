"""Block transforms: the picklable steps a fused task (or a pool actor) applies to a block.

Each map-like operator of a plan becomes one :class:`Transform`. Consecutive transforms are
fused into one list that a single task applies block by block (:func:`run_fused`), so a
``map -> filter -> map_batches`` chain costs one task per block, not three. A user function
that raises fails with its own exception, annotated with the operator and the row or batch.
"""

from __future__ import annotations

import itertools
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _block as B
from ._block import Block, BlockMetadata
from ._warm import warm_arrays


def _describe(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...]"


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def annotate(error: BaseException, note: str) -> None:
    """Add the data context to a user's exception (kept through pickling: it is a note)."""
    if hasattr(error, "add_note"):
        error.add_note(note)


class Transform:
    """One step applied to a block inside a task; ``env`` carries the actor's instance."""

    name: str = "Transform"

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        raise NotImplementedError

    def preserves_rows(self) -> bool:
        return False


class _RowTransform(Transform):
    """A row-wise step: ``fn`` a function, or ``None`` for the pool actor's class instance."""

    fn: Any
    fn_args: tuple[Any, ...]
    fn_kwargs: dict[str, Any]

    def udf(self, env: dict[str, Any]) -> Callable[..., Any]:
        fn = self.fn if self.fn is not None else env["udf"]
        if not self.fn_args and not self.fn_kwargs:
            return fn  # type: ignore[no-any-return]
        args, kwargs = self.fn_args, self.fn_kwargs
        return lambda row: fn(row, *args, **kwargs)


@dataclass
class MapRows(_RowTransform):
    fn: Callable[[dict[str, Any]], dict[str, Any]] | None
    name: str = "Map"
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        out = []
        fn = self.udf(env)
        for row in B.iter_rows(block):
            try:
                result = fn(row)
            except Exception as e:
                annotate(
                    e,
                    f"runtime.data: {self.name}({_fn_name(fn)}) failed on row {_describe(row)}",
                )
                raise
            if not isinstance(result, dict):
                raise TypeError(
                    f"{self.name}({_fn_name(fn)}) must return a dict (a row), "
                    f"got {type(result).__name__} for row {_describe(row)}"
                )
            out.append(result)
        return B.block_from_rows(out) if out else B.empty_block()

    def preserves_rows(self) -> bool:
        return True


@dataclass
class FlatMap(_RowTransform):
    fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None
    name: str = "FlatMap"
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        out: list[Any] = []
        fn = self.udf(env)
        for row in B.iter_rows(block):
            try:
                out.extend(fn(row))
            except Exception as e:
                annotate(
                    e,
                    f"runtime.data: {self.name}({_fn_name(fn)}) failed on row {_describe(row)}",
                )
                raise
        return B.block_from_rows(out) if out else B.empty_block()


@dataclass
class Filter(_RowTransform):
    fn: Callable[[dict[str, Any]], bool] | None
    name: str = "Filter"
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        keep = np.zeros(block.num_rows, dtype=bool)
        fn = self.udf(env)
        for i, row in enumerate(B.iter_rows(block)):
            try:
                keep[i] = bool(fn(row))
            except Exception as e:
                annotate(
                    e,
                    f"runtime.data: {self.name}({_fn_name(fn)}) failed on row {_describe(row)}",
                )
                raise
        return block.filter(keep)


@dataclass
class MapBatches(Transform):
    """``fn`` on batches of at most ``batch_size`` rows; ``fn=None``: the actor's instance."""

    fn: Callable[..., Any] | None
    batch_size: int | None
    batch_format: str
    fn_args: tuple[Any, ...] = ()
    fn_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = "MapBatches"
    zero_copy_batch: bool = False

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        fn = self.fn if self.fn is not None else env["udf"]
        n = block.num_rows
        size = self.batch_size or max(n, 1)
        if self.batch_format in ("numpy", "default") and not B.pickled_columns(block):
            return self._numpy_batches(fn, block, index, size, env)
        outs: list[Block] = []
        for start in range(0, max(n, 1), size):
            piece = block.slice(start, size) if self.batch_size else block
            result = self._call(
                fn, B.to_batch(piece, self.batch_format), piece.num_rows, start, index
            )
            self._collect(result, outs)
        return B.concat(outs)

    def _call(self, fn: Any, batch: Any, rows: int, start: int, index: int) -> Any:
        try:
            with warm_arrays():
                return fn(batch, *self.fn_args, **self.fn_kwargs)
        except Exception as e:
            annotate(
                e,
                f"runtime.data: {self.name} failed on a batch of {rows} rows (rows "
                f"{start}..{start + rows - 1} of block {index})",
            )
            raise

    @staticmethod
    def _collect(result: Any, outs: list[Block]) -> None:
        if isinstance(result, types.GeneratorType):
            outs.extend(B.block_from_batch(r) for r in result)
        else:
            outs.append(B.block_from_batch(result))

    def _numpy_batches(
        self, fn: Any, block: Block, index: int, size: int, env: dict[str, Any]
    ) -> Block:
        """Numpy batches as views of one conversion of the block; outputs joined per column.

        Converting per batch costs Arrow calls per batch; one conversion per block and numpy
        slicing keep small batches cheap. With ``zero_copy_batch`` (Ray 2.60's default)
        batches are read-only views of the block wherever Arrow allows; without, they are
        writable: views of a reader's own new table, else copies.
        """
        full = B.to_numpy_batch(block)
        if not self.zero_copy_batch:
            full = writable_batch(block, full, bool(env.get("private", False)))
        n = block.num_rows
        dicts: list[dict[str, Any]] = []
        outs: list[Block] = []
        for start in range(0, max(n, 1), size):
            batch = {k: v[start : start + size] for k, v in full.items()}
            rows = min(size, n - start)
            result = self._call(fn, batch, rows, start, index)
            if isinstance(result, dict) and not outs:
                dicts.append(result)
                continue
            if dicts:
                outs.extend(B.block_from_batch(d) for d in dicts)
                dicts = []
            self._collect(result, outs)
        if dicts:
            keys = list(dicts[0])
            if all(list(d) == keys for d in dicts) and all(
                isinstance(d[k], np.ndarray) for d in dicts for k in keys
            ):
                return B.block_from_batch(
                    {
                        k: np.concatenate([d[k] for d in dicts]) if len(dicts) > 1 else dicts[0][k]
                        for k in keys
                    }
                )
            outs.extend(B.block_from_batch(d) for d in dicts)
        return B.concat(outs)


def writable_batch(
    block: Block, full: dict[str, np.ndarray], private: bool
) -> dict[str, np.ndarray]:
    """The columns of ``full`` (numpy views of ``block``) made writable, as Ray's
    ``zero_copy_batch=False`` promises, copying only what must be copied.

    An array numpy made (a column of several chunks, booleans) is already the batch's own.
    A view of the block is copied, unless the block is ``private`` (a reader's new table
    that nothing else references: writing into it can change nothing anyone else sees) and
    the view lies in one mutable Arrow buffer: then it is a writable view of that buffer.
    """
    out: dict[str, np.ndarray] = {}
    for name, v in full.items():
        if v.flags.writeable and v.flags.owndata:
            out[name] = v
            continue
        view = _writable_view(block.column(name), v) if private else None
        out[name] = view if view is not None else np.array(v, copy=True)
    return out


def _writable_view(col: Any, v: np.ndarray) -> np.ndarray | None:
    if (
        col.num_chunks != 1
        or col.null_count
        or v.dtype == object
        or not v.nbytes
        or not v.flags.c_contiguous
    ):
        return None
    buf = col.chunk(0).buffers()[-1]
    if buf is None or not buf.is_mutable:
        return None
    start = v.ctypes.data - buf.address
    if start < 0 or start + v.nbytes > buf.size:
        return None
    raw = np.frombuffer(buf, dtype=np.uint8, count=v.nbytes, offset=start)
    return raw.view(v.dtype).reshape(v.shape)


def check_columns(block: Block, names: Iterable[str], what: str) -> None:
    """A clear error naming the column when ``what`` needs columns the block lacks."""
    if block.num_rows == 0 and block.num_columns == 0:
        return
    missing = [n for n in names if n not in block.column_names]
    if missing:
        raise KeyError(
            f"{what}: no column {missing[0]!r} (the dataset has columns {block.column_names})"
        )


@dataclass
class ColumnOp(Transform):
    """Column-level steps: add (from a batch), with_column (an expression), drop, select,
    rename, query (a filter expression)."""

    kind: str
    arg: Any
    fn: Any = None
    name: str = "ColumnOp"
    batch_format: str = "pandas"

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        import pyarrow as pa

        if self.kind == "drop":
            check_columns(block, self.arg, "drop_columns")
            return block.drop_columns(list(self.arg))
        if self.kind == "select":
            check_columns(block, self.arg, "select_columns")
            return block.select(list(self.arg))
        if self.kind == "rename":
            check_columns(block, list(self.arg), "rename_columns")
            return block.rename_columns([self.arg.get(c, c) for c in block.column_names])
        if self.kind == "rename_all":
            if len(self.arg) != block.num_columns and block.num_columns:
                raise ValueError(
                    f"rename_columns got {len(self.arg)} names for {block.num_columns} columns "
                    f"{block.column_names}"
                )
            return block.rename_columns(list(self.arg)) if block.num_columns else block
        if self.kind == "query":
            if block.num_rows == 0:
                return block
            keep = B.to_pandas(block).eval(self.arg)
            return block.filter(pa.array(np.asarray(keep, dtype=bool)))
        if self.kind == "expr":
            if block.num_rows == 0 and block.num_columns == 0:
                return block
            values = self.fn.eval(block)
            if isinstance(values, pa.Scalar):
                values = pa.array([values.as_py()] * block.num_rows, type=values.type)
            return self._put(block, values)
        assert self.fn is not None
        batch = B.to_batch(block, self.batch_format)
        try:
            values = self.fn(batch)
        except Exception as e:
            annotate(
                e,
                f"runtime.data: add_column({self.arg!r}) failed on a batch of "
                f"{block.num_rows} rows of block {index}",
            )
            raise
        if not isinstance(values, (pa.Array, pa.ChunkedArray)):
            values = B._column_from_values(np.asarray(values), self.arg)
        return self._put(block, values)

    def _put(self, block: Block, col: Any) -> Block:
        if len(col) != block.num_rows:
            raise ValueError(
                f"{self.name}: column {self.arg!r} has {len(col)} values for a block of "
                f"{block.num_rows} rows"
            )
        if self.arg in block.column_names:
            return block.set_column(block.column_names.index(self.arg), self.arg, col)
        return block.append_column(self.arg, col)

    def preserves_rows(self) -> bool:
        return self.kind != "query"


@dataclass
class RandomSample(Transform):
    fraction: float
    seed: int | None
    name: str = "RandomSample"

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        return block.filter(rng.random(block.num_rows) < self.fraction)


@dataclass
class Slice(Transform):
    start: int
    length: int
    name: str = "Limit"

    def __call__(self, block: Block, index: int, env: dict[str, Any]) -> Block:
        return block.slice(self.start, self.length)


def apply_all(block: Block, index: int, transforms: list[Transform], env: dict[str, Any]) -> Block:
    for t in transforms:
        block = t(block, index, env)
        # Only the first step gets the reader's own block; a step's output may alias what
        # the user's function keeps.
        env.pop("private", None)
    return block


def read_block(source: Any) -> Block:
    """Run a read task (a callable returning blocks) and combine what it returned."""
    blocks = list(source())
    return B.concat([b if isinstance(b, B.pa.Table) else B.block_from_batch(b) for b in blocks])


def run_fused(
    source: Any, index: int, transforms: list[Transform], *blocks: Block
) -> tuple[Block, BlockMetadata]:
    """The body of a fused task: read (or take) a block, apply every transform, describe it.

    ``source`` is a read task, or ``None`` when the input block is passed in ``blocks``
    (a top-level ref argument, so the runtime fetches it before the call).
    """
    t0 = time.perf_counter()
    block = read_block(source) if source is not None else B.concat(list(blocks))
    in_rows = block.num_rows
    block = apply_all(block, index, transforms, {})
    return block, B.metadata_of(block, time.perf_counter() - t0, in_rows)


def iter_source(source: Any) -> Any:
    """The blocks a read task yields, one at a time (batches become blocks)."""
    for b in source():
        yield b if isinstance(b, B.pa.Table) else B.block_from_batch(b)


def split_by_bytes(block: Block, max_bytes: int) -> list[Block]:
    """``block`` cut into row ranges of at most about ``max_bytes`` each."""
    size = block.nbytes
    if block.num_rows <= 1 or max_bytes <= 0 or size <= max_bytes:
        return [block]
    parts = min(block.num_rows, -(-size // max_bytes))
    bounds = [block.num_rows * i // parts for i in range(parts + 1)]
    return [block.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def run_fused_streaming(
    source: Any, index: int, transforms: list[Transform], max_block_bytes: int, *blocks: Block
) -> Iterable[Any]:
    """The body of a fused streaming task: yields ``block, metadata, block, metadata, ...``.

    Each block a read task yields goes through every transform as soon as it is read, and
    the result is cut into blocks of at most ``max_block_bytes`` (the context's
    ``target_max_block_size``), each sent to the caller as soon as it is made: the first
    block leaves before a big file is read to the end, and a task holds about one piece at a
    time. ``source`` is a read task, or ``None`` when the input block is in ``blocks``.
    """
    t0 = time.perf_counter()
    inputs = iter_source(source) if source is not None else iter([B.concat(list(blocks))])
    sent = 0
    read_fn = getattr(source, "read_fn", None)
    private = bool(getattr(read_fn, "private_blocks", False))
    for piece, block in enumerate(inputs):
        in_rows = block.num_rows
        out = apply_all(block, index, transforms, {"piece": piece, "private": private})
        parts = split_by_bytes(out, max_block_bytes)
        for part in parts:
            if part.num_rows == 0 and sent:
                continue
            yield B.compact(part) if len(parts) > 1 else part
            yield B.metadata_of(part, time.perf_counter() - t0, in_rows)
            in_rows, sent, t0 = 0, sent + 1, time.perf_counter()
    if not sent:
        empty = B.empty_block()
        yield empty
        yield B.metadata_of(empty, time.perf_counter() - t0, 0)
