"""runtime.data: lazy, streaming datasets of Arrow blocks with bounded memory (Ray Data's API).

A Dataset is a lazy plan; consuming it runs a streaming executor that moves blocks
(``pyarrow.Table`` s in the object store) through tasks and actor pools, fusing consecutive
map-like steps and bounding the bytes in flight per operator.

Example::

    from runtime import data

    ds = data.range(10_000).map_batches(lambda b: {"sq": b["id"] ** 2})
    print(ds.filter(lambda r: r["sq"] % 3 == 0).count())
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._aggregate import Count, Max, Mean, Min, Std, Sum
    from ._block import BlockMetadata
    from ._context import DataContext
    from ._custom_aggregate import AggregateFn
    from ._dataset import Dataset, GroupedData, MaterializedDataset
    from ._datasource import Datasource, ReadTask
    from ._iterator import DataIterator
    from ._plan import ActorPoolStrategy
    from ._sources import (
        from_arrow,
        from_items,
        from_numpy,
        from_pandas,
        from_torch,
        range,
        range_tensor,
        read_binary_files,
        read_csv,
        read_datasource,
        read_images,
        read_json,
        read_numpy,
        read_parquet,
        read_sql,
        read_text,
    )

__all__ = [
    "ActorPoolStrategy",
    "AggregateFn",
    "BlockMetadata",
    "Count",
    "DataContext",
    "DataIterator",
    "Dataset",
    "Datasource",
    "GroupedData",
    "MaterializedDataset",
    "Max",
    "Mean",
    "Min",
    "ReadTask",
    "Std",
    "Sum",
    "from_arrow",
    "from_items",
    "from_numpy",
    "from_pandas",
    "from_torch",
    "range",
    "range_tensor",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_images",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_sql",
    "read_text",
]

# Public names load on first access. A package that imports its submodules eagerly can
# deadlock Python's per-module import locks when two threads of a worker unpickle objects of
# different submodules at once (one holds the package, the other a submodule): the loser
# then sees a half-initialised module. Loading lazily keeps the package import trivial.
_WHERE = {
    "ActorPoolStrategy": "_plan",
    "AggregateFn": "_custom_aggregate",
    "BlockMetadata": "_block",
    "Count": "_aggregate",
    "DataContext": "_context",
    "DataIterator": "_iterator",
    "Dataset": "_dataset",
    "Datasource": "_datasource",
    "GroupedData": "_dataset",
    "MaterializedDataset": "_dataset",
    "Max": "_aggregate",
    "Mean": "_aggregate",
    "Min": "_aggregate",
    "ReadTask": "_datasource",
    "Std": "_aggregate",
    "Sum": "_aggregate",
    "from_arrow": "_sources",
    "from_items": "_sources",
    "from_numpy": "_sources",
    "from_pandas": "_sources",
    "from_torch": "_sources",
    "read_images": "_sources",
    "read_sql": "_sources",
    "range": "_sources",
    "range_tensor": "_sources",
    "read_binary_files": "_sources",
    "read_csv": "_sources",
    "read_datasource": "_sources",
    "read_json": "_sources",
    "read_numpy": "_sources",
    "read_parquet": "_sources",
    "read_text": "_sources",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"runtime.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
