"""Dataset: a lazy plan of block operators, and every way to transform and consume it.

Transforms return a new Dataset (nothing runs); consuming methods run the plan through the
streaming executor. ``materialize()`` runs it once and keeps the blocks in the object store.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import runtime

from . import _aggregate as agg
from . import _block as B
from . import _shuffle as shuffle
from ._custom_aggregate import AggregateFn
from ._executor import ExecutionStats, execute
from ._iterator import DataIterator, prefetch_blocks
from ._plan import (
    ActorPoolStrategy,
    AllToAllOp,
    InputDataOp,
    LimitOp,
    LogicalOp,
    MapOp,
    RefBundle,
    UnionOp,
    known_row_count,
    plan_string,
)
from ._transforms import ColumnOp, Filter, FlatMap, MapBatches, MapRows, RandomSample, Transform


def _check_fn(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} needs a callable, got {type(fn).__name__}")


def _remote_args(
    num_cpus: float | None, num_gpus: float | None, extra: dict[str, Any]
) -> dict[str, Any]:
    out = dict(extra)
    if num_cpus is not None:
        out["num_cpus"] = num_cpus
    if num_gpus is not None:
        out["num_gpus"] = num_gpus
    return out


def _columns_list(cols: str | list[str], what: str) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
        raise TypeError(f"{what} needs a column name or a list of names, got {cols!r}")
    return list(cols)


class Dataset:
    """A distributed collection of rows in Arrow blocks, transformed lazily and streamed.

    Example::

        from runtime import data
        ds = data.range(1000).map_batches(lambda b: {"y": b["id"] * 2})
        print(ds.sum("y"))
    """

    def __init__(self, op: LogicalOp) -> None:
        self._op = op
        self._stats = ExecutionStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({plan_string(self._op)})"

    # --- execution -----------------------------------------------------------------------

    def _execute(self) -> Iterator[RefBundle]:
        self._stats = ExecutionStats()
        return execute(self._op, self._stats)

    def _with(self, op: LogicalOp) -> Dataset:
        return Dataset(op)

    def _map(self, transform: Transform, remote_args: dict[str, Any] | None = None) -> Dataset:
        return self._with(MapOp(self._op, transform, remote_args or {}, name=transform.name))

    def _all_to_all(
        self, name: str, fn: Callable[[list[RefBundle]], list[RefBundle]], preserves_rows: bool
    ) -> Dataset:
        return self._with(AllToAllOp(self._op, fn, name, preserves_rows))

    # --- map-like transforms -------------------------------------------------------------

    def _udf_op(
        self,
        transform: Transform,
        fn: Any,
        what: str,
        *,
        compute: ActorPoolStrategy | None,
        concurrency: int | tuple[int, int] | None,
        fn_constructor_args: tuple[Any, ...] | None,
        fn_constructor_kwargs: dict[str, Any] | None,
        remote_args: dict[str, Any],
    ) -> Dataset:
        """A map-like op: a function runs in fused tasks, a callable class on an actor pool."""
        if not inspect.isclass(fn):
            if fn_constructor_args or fn_constructor_kwargs:
                raise ValueError(
                    f"{what}: fn_constructor_args/kwargs only apply when fn is a callable class"
                )
            if isinstance(concurrency, int):
                if concurrency < 1:
                    raise ValueError(f"{what}: concurrency must be >= 1, got {concurrency}")
                remote_args["_concurrency"] = concurrency
            elif concurrency is not None:
                raise ValueError(
                    f"{what}: a function takes concurrency=n (tasks in flight); a (min, max) "
                    "range is for callable classes"
                )
            return self._map(transform, remote_args)
        if compute is None:
            if concurrency is None:
                compute = ActorPoolStrategy(min_size=1, max_size=4)
            elif isinstance(concurrency, int) and not isinstance(concurrency, bool):
                compute = ActorPoolStrategy(size=concurrency)
            elif isinstance(concurrency, tuple) and len(concurrency) == 2:
                compute = ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
            else:
                raise ValueError(
                    f"{what}: concurrency must be an int or (min, max), got {concurrency!r}"
                )
        return self._with(
            MapOp(
                self._op,
                transform,
                remote_args,
                compute,
                fn,
                tuple(fn_constructor_args or ()),
                dict(fn_constructor_kwargs or {}),
                name=transform.name,
            )
        )

    @staticmethod
    def _check_udf(fn: Any, what: str) -> bool:
        """True for a callable class (run on an actor pool), after checking it is usable."""
        if inspect.isclass(fn):
            if not callable(getattr(fn, "__call__", None)):  # noqa: B004
                raise TypeError(f"{fn.__name__} must define __call__ to be used in {what}")
            return True
        _check_fn(fn, what)
        return False

    def map(
        self,
        fn: Any,
        *,
        compute: ActorPoolStrategy | None = None,
        fn_args: tuple[Any, ...] | None = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: tuple[Any, ...] | None = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to each row (a dict), which returns the new row (a dict).

        ``fn`` may be a callable class: each actor of a pool (``concurrency=n`` or
        ``(min, max)``) constructs it once with ``fn_constructor_args/kwargs``.
        """
        is_class = self._check_udf(fn, "map")
        name = f"Map({getattr(fn, '__name__', 'fn')})"
        transform = MapRows(
            None if is_class else fn, name, tuple(fn_args or ()), dict(fn_kwargs or {})
        )
        return self._udf_op(
            transform,
            fn,
            "map",
            compute=compute,
            concurrency=concurrency,
            fn_constructor_args=fn_constructor_args,
            fn_constructor_kwargs=fn_constructor_kwargs,
            remote_args=_remote_args(num_cpus, num_gpus, ray_remote_args),
        )

    def map_batches(
        self,
        fn: Any,
        *,
        batch_size: int | str | None = None,
        compute: ActorPoolStrategy | None = None,
        batch_format: str | None = "default",
        zero_copy_batch: bool = True,
        fn_args: tuple[Any, ...] | None = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: tuple[Any, ...] | None = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches of rows; ``fn`` a function or a callable class.

        Args:
            fn: ``batch -> batch`` (a dict of arrays, DataFrame or Table), or a class whose
                instances are such callables: then it runs on an actor pool, each actor
                constructing the class once (``fn_constructor_args``).
            batch_size: rows per batch; ``None`` (the default, as in Ray 2.60; ``"auto"``
                and ``"default"`` mean the same): whole blocks. A batch never spans two
                blocks, so it may be smaller.
            batch_format: "numpy" (default), "pandas" or "pyarrow".
            zero_copy_batch: ``True`` (the default, as in Ray 2.60): numpy batches are views
                of the block, read-only where it lies in the object store; ``False``: each
                batch is writable, a copy where it must be.
            concurrency: pool size ``n`` or ``(min, max)`` for a class; for a function, the
                most tasks in flight.
            num_cpus / num_gpus: resources per task or per pool actor.

        Raises:
            TypeError: ``fn`` is not callable, or a class without ``__call__``.
        """
        fmt = B.check_batch_format(batch_format)
        if batch_size in ("default", "auto"):
            batch_size = None
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
        is_class = self._check_udf(fn, "map_batches")
        transform = MapBatches(
            None if is_class else fn,
            batch_size,
            fmt,
            tuple(fn_args or ()),
            dict(fn_kwargs or {}),
            name=f"MapBatches({getattr(fn, '__name__', 'fn')})",
            zero_copy_batch=bool(zero_copy_batch),
        )
        return self._udf_op(
            transform,
            fn,
            "map_batches",
            compute=compute,
            concurrency=concurrency,
            fn_constructor_args=fn_constructor_args,
            fn_constructor_kwargs=fn_constructor_kwargs,
            remote_args=_remote_args(num_cpus, num_gpus, ray_remote_args),
        )

    def flat_map(
        self,
        fn: Any,
        *,
        compute: ActorPoolStrategy | None = None,
        fn_args: tuple[Any, ...] | None = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: tuple[Any, ...] | None = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to each row; it returns a list of rows (zero or more).

        ``fn`` may be a callable class (see :meth:`map`).
        """
        is_class = self._check_udf(fn, "flat_map")
        name = f"FlatMap({getattr(fn, '__name__', 'fn')})"
        transform = FlatMap(
            None if is_class else fn, name, tuple(fn_args or ()), dict(fn_kwargs or {})
        )
        return self._udf_op(
            transform,
            fn,
            "flat_map",
            compute=compute,
            concurrency=concurrency,
            fn_constructor_args=fn_constructor_args,
            fn_constructor_kwargs=fn_constructor_kwargs,
            remote_args=_remote_args(num_cpus, num_gpus, ray_remote_args),
        )

    def filter(
        self,
        fn: Any = None,
        *,
        expr: str | None = None,
        compute: ActorPoolStrategy | None = None,
        fn_args: tuple[Any, ...] | None = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: tuple[Any, ...] | None = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Keep the rows for which ``fn(row)`` is true (``fn`` may be a callable class).

        ``expr``: instead of ``fn``, a pandas query string such as ``"x > 3 and y == 'a'"``,
        evaluated per batch (vectorised).
        """
        if expr is not None:
            if fn is not None:
                raise ValueError("filter takes fn or expr, not both")
            if not isinstance(expr, str):
                raise TypeError(f"filter's expr must be a string, got {type(expr).__name__}")
            return self._map(ColumnOp("query", expr, name=f"Filter({expr})"))
        is_class = self._check_udf(fn, "filter")
        name = f"Filter({getattr(fn, '__name__', 'fn')})"
        transform = Filter(
            None if is_class else fn, name, tuple(fn_args or ()), dict(fn_kwargs or {})
        )
        return self._udf_op(
            transform,
            fn,
            "filter",
            compute=compute,
            concurrency=concurrency,
            fn_constructor_args=fn_constructor_args,
            fn_constructor_kwargs=fn_constructor_kwargs,
            remote_args=_remote_args(num_cpus, num_gpus, ray_remote_args),
        )

    def add_column(
        self,
        col: str,
        fn: Callable[[Any], Any],
        *,
        batch_format: str | None = "pandas",
        compute: Any = None,
        concurrency: int | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Add (or replace) column ``col`` computed by ``fn(batch) -> values``.

        ``batch_format``: what ``fn`` sees ("pandas" by default, as in Ray).
        """
        _check_fn(fn, "add_column")
        del compute
        fmt = B.check_batch_format(batch_format)
        args = dict(ray_remote_args)
        if concurrency is not None:
            args["_concurrency"] = concurrency
        return self._map(ColumnOp("add", col, fn, name="AddColumn", batch_format=fmt), args)

    def with_column(self, column_name: str, expr: Any, **ray_remote_args: Any) -> Dataset:
        """Add (or replace) ``column_name`` computed by an expression of other columns
        (``runtime.data.expressions.col("a") * 2``), vectorised with ``pyarrow.compute``."""
        from .expressions import Expr

        if not isinstance(expr, Expr):
            raise TypeError(
                "with_column needs an expression such as col('a') + 1 (runtime.data."
                f"expressions), got {type(expr).__name__}; use add_column for a function"
            )
        return self._map(
            ColumnOp("expr", column_name, expr, name=f"WithColumn({column_name})"),
            dict(ray_remote_args),
        )

    def drop_columns(self, cols: list[str] | str, **ray_remote_args: Any) -> Dataset:
        """Drop the named columns (a column that does not exist is an error naming it)."""
        return self._map(
            ColumnOp("drop", _columns_list(cols, "drop_columns"), name="DropColumns"),
            dict(ray_remote_args),
        )

    def select_columns(self, cols: list[str] | str, **ray_remote_args: Any) -> Dataset:
        """Keep only the named columns, in that order."""
        return self._map(
            ColumnOp("select", _columns_list(cols, "select_columns"), name="SelectColumns"),
            dict(ray_remote_args),
        )

    def rename_columns(self, names: dict[str, str] | list[str], **ray_remote_args: Any) -> Dataset:
        """Rename columns by a ``{old: new}`` mapping (or a list: new names for all columns)."""
        if isinstance(names, list):
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"rename_columns needs a list of names, got {names!r}")
            new_names = list(names)
            return self._map(
                ColumnOp("rename_all", new_names, name="RenameColumns"), dict(ray_remote_args)
            )
        if not isinstance(names, dict):
            raise TypeError(f"rename_columns needs a dict of old -> new names, got {names!r}")
        return self._map(
            ColumnOp("rename", dict(names), name="RenameColumns"), dict(ray_remote_args)
        )

    def random_sample(self, fraction: float, *, seed: int | None = None) -> Dataset:
        """Each row kept with probability ``fraction``."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        return self._map(RandomSample(fraction, seed))

    def limit(self, limit: int) -> Dataset:
        """The first ``limit`` rows (only the blocks needed are computed)."""
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        return self._with(LimitOp(self._op, limit))

    # --- all-to-all ----------------------------------------------------------------------

    def repartition(
        self,
        num_blocks: int | None = None,
        target_num_rows_per_block: int | None = None,
        *,
        shuffle: bool = False,
        keys: str | list[str] | None = None,
        sort: bool = False,
    ) -> Dataset:
        """Re-cut the rows into blocks.

        ``num_blocks``: that many blocks of nearly equal rows, in order (``shuffle=True``: rows
        shuffled too; ``keys=``: rows hash-partitioned on those columns, so equal keys share a
        block, ``sort=True`` sorting each block by them). ``target_num_rows_per_block``: as
        few blocks as hold at most that many rows each, in order.
        """
        if (num_blocks is None) == (target_num_rows_per_block is None):
            raise ValueError(
                "repartition takes exactly one of num_blocks, target_num_rows_per_block"
            )
        if num_blocks is not None and (not isinstance(num_blocks, int) or num_blocks < 1):
            raise ValueError(f"num_blocks must be an int >= 1, got {num_blocks!r}")
        if target_num_rows_per_block is not None:
            if not isinstance(target_num_rows_per_block, int) or target_num_rows_per_block < 1:
                raise ValueError(
                    "target_num_rows_per_block must be an int >= 1, got "
                    f"{target_num_rows_per_block!r}"
                )
            if shuffle or keys is not None:
                raise ValueError(
                    "target_num_rows_per_block cannot be combined with shuffle or keys"
                )
            rows = target_num_rows_per_block
            return self._all_to_all(
                "Repartition", lambda b: shuffle_mod.repartition(b, None, rows), True
            )
        n = int(num_blocks)  # type: ignore[arg-type]
        if keys is not None:
            cols = _columns_list(keys, "repartition")
            return self._all_to_all(
                "Repartition",
                lambda b: shuffle_mod.exchange(
                    b,
                    "join",
                    (cols, "repartition: the dataset"),
                    "sort" if sort else "concat",
                    (cols, [False] * len(cols)) if sort else None,
                    n,
                ),
                True,
            )
        if shuffle:
            return self._all_to_all(
                "Repartition",
                lambda b: shuffle_mod.exchange(b, "random", None, "shuffle", None, n),
                True,
            )
        return self._all_to_all("Repartition", lambda b: shuffle_mod.repartition(b, n), True)

    def random_shuffle(self, *, seed: int | None = None, **kwargs: Any) -> Dataset:
        """Rows in a random order (a full shuffle across blocks; ``seed``: reproducible)."""
        if kwargs:
            raise TypeError(f"random_shuffle got unexpected arguments {sorted(kwargs)}")
        return self._all_to_all(
            "RandomShuffle", lambda b: shuffle_mod.random_shuffle(b, seed), True
        )

    def sort(self, key: str | list[str], descending: bool | list[bool] = False) -> Dataset:
        """Rows sorted by ``key`` (a column or columns; ``descending`` one flag or one per key)."""
        keys = _columns_list(key, "sort")
        if isinstance(descending, list):
            if len(descending) != len(keys):
                raise ValueError(
                    f"sort got {len(descending)} descending flags for {len(keys)} keys"
                )
            order: bool | list[bool] = [bool(d) for d in descending]
        else:
            order = bool(descending)
        return self._all_to_all("Sort", lambda b: shuffle_mod.sort(b, keys, order), True)

    def join(  # noqa: PLR0917 - Ray's signature
        self,
        ds: Dataset,
        join_type: str,
        num_partitions: int,
        on: tuple[str, ...] | list[str] = ("id",),
        right_on: tuple[str, ...] | list[str] | None = None,
        left_suffix: str | None = None,
        right_suffix: str | None = None,
        **kwargs: Any,
    ) -> Dataset:
        """Join with ``ds`` on key columns, hash-partitioned into ``num_partitions`` parts.

        ``join_type``: "inner", "left_outer", "right_outer", "full_outer" (also "left",
        "right", "outer"), "left_semi", "right_semi", "left_anti", "right_anti". Each
        partition is joined by one task (Arrow's hash join), so memory per task is about one
        partition of each side. A key missing on either side is an error naming it.
        """
        if not isinstance(ds, Dataset):
            raise TypeError(f"join needs a Dataset, got {type(ds).__name__}")
        if join_type not in shuffle_mod._JOIN_TYPES:
            raise ValueError(
                f"join_type must be one of {sorted(shuffle_mod._JOIN_TYPES)}, got {join_type!r}"
            )
        if not isinstance(num_partitions, int) or num_partitions < 1:
            raise ValueError(f"num_partitions must be an int >= 1, got {num_partitions!r}")
        unknown = set(kwargs) - {
            "partition_size_hint",
            "aggregator_ray_remote_args",
            "validate_schemas",
        }
        if unknown:
            raise TypeError(f"join got unexpected arguments {sorted(unknown)}")
        left_keys = _columns_list(list(on), "join")
        right_keys = _columns_list(list(right_on), "join") if right_on is not None else left_keys
        if len(left_keys) != len(right_keys):
            raise ValueError(
                f"join needs as many right_on keys as on keys, got {left_keys} and {right_keys}"
            )
        right = ds._op
        suffixes = (left_suffix or "", right_suffix or "")
        kind = join_type
        return self._all_to_all(
            f"Join({join_type})",
            lambda b: shuffle_mod.join(
                b, list(execute(right)), kind, left_keys, right_keys, num_partitions, suffixes
            ),
            False,
        )

    def groupby(self, key: str | list[str]) -> GroupedData:
        """Group rows by ``key`` for aggregations or ``map_groups``."""
        return GroupedData(self, _columns_list(key, "groupby"))

    def union(self, *others: Dataset) -> Dataset:
        """This dataset's rows followed by each other's."""
        for o in others:
            if not isinstance(o, Dataset):
                raise TypeError(f"union needs Datasets, got {type(o).__name__}")
        return self._with(UnionOp([self._op, *[o._op for o in others]]))

    def zip(self, other: Dataset) -> Dataset:
        """Columns of both, row by row (same row counts; clashing names get a ``_1`` suffix)."""
        if not isinstance(other, Dataset):
            raise TypeError(f"zip needs a Dataset, got {type(other).__name__}")
        right = other._op
        return self._all_to_all(
            "Zip", lambda b: shuffle_mod.zip_bundles(b, list(execute(right))), True
        )

    def unique(self, column: str) -> list[Any]:
        """The distinct values of ``column``."""
        rows = self.select_columns([column]).groupby(column).count().take_all()
        return [r[column] for r in rows]

    # --- splitting -----------------------------------------------------------------------

    def split(self, n: int, *, equal: bool = False) -> list[MaterializedDataset]:
        """``n`` disjoint datasets (``equal=True``: the same number of rows each)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"split needs n >= 1, got {n!r}")
        bundles = self.materialize()._bundles
        total = sum(b.meta.num_rows for b in bundles)
        if equal:
            per = total // n
            return [
                MaterializedDataset(shuffle.slice_rows(bundles, i * per, (i + 1) * per))
                for i in range(n)
            ]
        bounds = [total * i // n for i in range(n + 1)]
        return [
            MaterializedDataset(shuffle.slice_rows(bundles, bounds[i], bounds[i + 1]))
            for i in range(n)
        ]

    def split_at_indices(self, indices: list[int]) -> list[MaterializedDataset]:
        """Datasets of rows [0, i0), [i0, i1), ..., [ik, end)."""
        if any(b < a for a, b in itertools.pairwise(indices)) or any(i < 0 for i in indices):
            raise ValueError(f"indices must be sorted and >= 0, got {indices}")
        bundles = self.materialize()._bundles
        total = sum(b.meta.num_rows for b in bundles)
        bounds = [0, *[min(i, total) for i in indices], total]
        return [
            MaterializedDataset(shuffle.slice_rows(bundles, a, b))
            for a, b in itertools.pairwise(bounds)
        ]

    def train_test_split(
        self, test_size: float | int, *, shuffle: bool = False, seed: int | None = None
    ) -> tuple[MaterializedDataset, MaterializedDataset]:
        """(train, test): the last ``test_size`` rows (a fraction or a count) are the test set."""
        ds: Dataset = self.random_shuffle(seed=seed) if shuffle else self
        mat = ds.materialize()
        total = mat.count()
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(f"a fractional test_size must be in (0, 1), got {test_size}")
            n_test = round(total * test_size)
        elif isinstance(test_size, int) and 0 < test_size < total:
            n_test = test_size
        else:
            raise ValueError(
                f"test_size must be a fraction in (0, 1) or an int in (0, {total}), "
                f"got {test_size!r}"
            )
        train, test = mat.split_at_indices([total - n_test])
        return train, test

    def streaming_split(
        self, n: int, *, equal: bool = False, locality_hints: list[Any] | None = None
    ) -> list[DataIterator]:
        """``n`` iterators that share one streaming execution, each getting disjoint blocks.

        Meant for ``n`` consumers in other processes (Train workers): a coordinator actor runs
        the pipeline and hands each block to whichever consumer asks next. Every consumer must
        iterate for an epoch to advance.
        """
        from ._split import streaming_split

        del locality_hints
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"streaming_split needs n >= 1, got {n!r}")
        return streaming_split(self, n, equal)

    # --- consumption ---------------------------------------------------------------------

    def iterator(self) -> DataIterator:
        """A DataIterator over this dataset (each iteration is a new execution)."""
        return DataIterator(self._execute, plan_string(self._op))

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "default",
        prefetch_batches: int = 1,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[Any]:
        """Stream the dataset as batches (blocks are fetched ``prefetch_batches`` ahead)."""
        return self.iterator().iter_batches(
            batch_size=batch_size,
            batch_format=batch_format,
            prefetch_batches=prefetch_batches,
            drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
        )

    def iter_rows(self, *, prefetch_batches: int = 1) -> Iterator[dict[str, Any]]:
        """Stream the dataset row by row (dicts)."""
        return self.iterator().iter_rows(prefetch_batches=prefetch_batches)

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
        """Stream batches as dicts of torch tensors (torch is imported only here)."""
        return self.iterator().iter_torch_batches(
            batch_size=batch_size,
            dtypes=dtypes,
            device=device,
            prefetch_batches=prefetch_batches,
            drop_last=drop_last,
            collate_fn=collate_fn,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
        )

    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        """The first ``limit`` rows."""
        if limit <= 0:
            return []
        limited = self.limit(limit)
        out = list(limited.iter_rows())
        self._stats = limited._stats
        return out

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row (``limit``: raise if there are more)."""
        rows = list(self.iter_rows())
        if limit is not None and len(rows) > limit:
            raise ValueError(f"the dataset has more than {limit} rows")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        """The first ``batch_size`` rows as one batch."""
        fmt = B.check_batch_format(batch_format)
        limited = self.limit(batch_size)
        blocks = list(prefetch_blocks(limited._execute(), 2))
        self._stats = limited._stats
        return B.to_batch(B.concat(blocks), fmt)

    def show(self, limit: int = 20) -> None:
        """Print the first ``limit`` rows."""
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """The number of rows (from metadata when the plan allows, else by running it)."""
        known = known_row_count(self._op)
        if known is not None:
            return known
        return sum(b.meta.num_rows for b in self._execute())

    def schema(self) -> Any:
        """The ``pyarrow.Schema`` of the rows (runs the plan up to its first block)."""
        for bundle in self.limit(1)._execute():
            return runtime.get(bundle.ref).schema
        return None

    def columns(self) -> list[str]:
        """The column names."""
        schema = self.schema()
        return [] if schema is None else list(schema.names)

    def _aggregate(self, aggs: list[Any]) -> dict[str, Any]:
        partial = self._map(agg.PartialAggregate([], aggs))
        blocks = [runtime.get(b.ref) for b in partial._execute()]
        self._stats = partial._stats
        merged = agg.merge([b for b in blocks if b.num_rows], [], aggs)
        row = B.to_rows(merged)[0] if merged.num_rows else {a.name: None for a in aggs}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}

    def aggregate(self, *aggs: Any) -> dict[str, Any]:
        """Whole-dataset aggregations, e.g. ``ds.aggregate(Sum("x"), Mean("y"))``."""
        return self._aggregate(list(aggs))

    def _one(self, kind: str, on: str | list[str], **kw: Any) -> Any:
        cols = _columns_list(on, kind)
        aggs = [agg.BuiltinAggregate(kind, c, **kw) for c in cols]
        result = self._aggregate(aggs)
        values = [result[a.name] for a in aggs]
        return values[0] if isinstance(on, str) else dict(zip(cols, values, strict=True))

    def sum(self, on: str | list[str]) -> Any:
        """Sum of a column (a dict for a list of columns); None when empty."""
        return self._one("sum", on)

    def min(self, on: str | list[str]) -> Any:
        """Minimum of a column."""
        return self._one("min", on)

    def max(self, on: str | list[str]) -> Any:
        """Maximum of a column."""
        return self._one("max", on)

    def mean(self, on: str | list[str]) -> Any:
        """Mean of a column."""
        return self._one("mean", on)

    def std(self, on: str | list[str], ddof: int = 1) -> Any:
        """Standard deviation of a column (``ddof=1`` as in Ray)."""
        return self._one("std", on, ddof=ddof)

    def to_pandas(self, limit: int | None = None) -> Any:
        """All rows as one pandas DataFrame."""
        blocks = list(prefetch_blocks(self._execute(), 2))
        table = B.concat(blocks)
        if limit is not None and table.num_rows > limit:
            raise ValueError(f"the dataset has more than {limit} rows")
        return B.to_batch(table, "pandas")

    def to_arrow_refs(self) -> list[Any]:
        """Refs to the blocks (pyarrow Tables) in the object store."""
        return [b.ref for b in self._execute()]

    def materialize(self) -> MaterializedDataset:
        """Run the plan and keep every block in the object store."""
        bundles = list(self._execute())
        out = MaterializedDataset(bundles)
        out._stats = self._stats
        return out

    def num_blocks(self) -> int:
        """Blocks the dataset has (running the plan unless it is materialized)."""
        return len(self.materialize()._bundles)

    def stats(self) -> str:
        """Time, rows and tasks per operator of the latest execution of this dataset."""
        if not self._stats.all_ops():
            return f"{plan_string(self._op)}: not executed yet"
        return self._stats.summary()

    # --- writing -------------------------------------------------------------------------

    def write_parquet(
        self,
        path: str,
        *,
        partition_cols: list[str] | None = None,
        min_rows_per_file: int | None = None,
        max_rows_per_file: int | None = None,
        **arrow_parquet_args: Any,
    ) -> None:
        """Parquet files under directory ``path``, written by tasks (one per block).

        ``partition_cols``: rows go to ``path/col=value/...`` directories (hive style, what
        ``read_parquet`` reads back as columns); ``min_rows_per_file``: consecutive blocks are
        joined so each file has at least that many rows; ``max_rows_per_file``: a block
        larger than that is written as several files. Other keyword arguments go to
        ``pyarrow.parquet.write_table``.
        """
        from ._write import write

        opts = dict(arrow_parquet_args)
        if partition_cols:
            opts["partition_cols"] = _columns_list(partition_cols, "write_parquet")
        opts["min_rows_per_file"] = min_rows_per_file
        opts["max_rows_per_file"] = max_rows_per_file
        write(self, path, "parquet", opts)

    def write_datasink(self, datasink: Any, **kwargs: Any) -> None:
        """Write every block through a ``Datasink`` (``runtime.data.datasource``): its
        ``write`` runs in tasks, one call per block; its hooks run here."""
        from ._datasink import write_datasink

        del kwargs  # Ray's ray_remote_args / concurrency: the fused tasks' defaults apply
        write_datasink(self, datasink)

    def write_csv(self, path: str, **kwargs: Any) -> None:
        """One CSV file per block under ``path``."""
        from ._write import write

        write(self, path, "csv", kwargs)

    def write_json(self, path: str, **kwargs: Any) -> None:
        """One JSON-lines file per block under ``path``."""
        from ._write import write

        write(self, path, "json", kwargs)

    def write_numpy(self, path: str, *, column: str, **kwargs: Any) -> None:
        """One ``.npy`` file per block of ``column`` under ``path``."""
        from ._write import write

        write(self, path, "numpy", {"column": column, **kwargs})


shuffle_mod = shuffle


class MaterializedDataset(Dataset):
    """A dataset whose blocks are computed and held in the object store."""

    def __init__(self, bundles: list[RefBundle]) -> None:
        super().__init__(InputDataOp(bundles, name="Materialized"))
        self._bundles = bundles

    def materialize(self) -> MaterializedDataset:
        return self

    def num_blocks(self) -> int:
        return len(self._bundles)


class GroupedData:
    """Rows grouped by key columns: aggregations (sorted by key) and ``map_groups``."""

    def __init__(self, ds: Dataset, keys: list[str]) -> None:
        self._ds = ds
        self._keys = keys

    def __repr__(self) -> str:
        return f"GroupedData(keys={self._keys})"

    def aggregate(self, *aggs: Any) -> Dataset:
        """One row per group with a column per aggregation (``Count()``, ``Sum("x")``, ...)."""
        if not aggs:
            raise ValueError("aggregate needs at least one aggregation (Count(), Sum(col), ...)")
        for a in aggs:
            if not isinstance(a, (agg.BuiltinAggregate, AggregateFn)):
                raise TypeError(
                    "aggregate takes Count/Sum/Min/Max/Mean/Std or AggregateFn objects, "
                    f"got {type(a).__name__}"
                )
        keys, aggs_l = self._keys, list(aggs)
        return self._ds._all_to_all(
            "Aggregate", lambda b: shuffle_mod.aggregate(b, keys, aggs_l), False
        )

    def count(self) -> Dataset:
        """Rows per group, in column ``count()``."""
        return self.aggregate(agg.Count())

    def _each(self, kind: str, on: str | list[str] | None, **kw: Any) -> Dataset:
        if on is None:
            raise ValueError(f"{kind} needs a column")
        return self.aggregate(
            *[agg.BuiltinAggregate(kind, c, **kw) for c in _columns_list(on, kind)]
        )

    def sum(self, on: str | list[str] | None = None) -> Dataset:
        """Sum per group, in column ``sum(on)``."""
        return self._each("sum", on)

    def min(self, on: str | list[str] | None = None) -> Dataset:
        """Minimum per group, in column ``min(on)``."""
        return self._each("min", on)

    def max(self, on: str | list[str] | None = None) -> Dataset:
        """Maximum per group, in column ``max(on)``."""
        return self._each("max", on)

    def mean(self, on: str | list[str] | None = None) -> Dataset:
        """Mean per group, in column ``mean(on)``."""
        return self._each("mean", on)

    def std(self, on: str | list[str] | None = None, ddof: int = 1) -> Dataset:
        """Standard deviation per group, in column ``std(on)``."""
        return self._each("std", on, ddof=ddof)

    def map_groups(
        self, fn: Callable[[Any], Any], *, batch_format: str | None = "default"
    ) -> Dataset:
        """``fn(group batch) -> batch`` for each group (groups are not split across calls)."""
        _check_fn(fn, "map_groups")
        fmt = B.check_batch_format(batch_format)
        keys = self._keys
        return self._ds._all_to_all(
            "MapGroups", lambda b: shuffle_mod.map_groups(b, keys, fn, fmt), False
        )
