"""runtime.data: lazy, streaming datasets of Arrow blocks with bounded memory (Ray Data's API).

A Dataset is a lazy plan; consuming it runs a streaming executor that moves blocks
(``pyarrow.Table`` s in the object store) through tasks and actor pools, fusing consecutive
map-like steps and bounding the bytes in flight per operator.

Example::

    from runtime import data

    ds = data.range(10_000).map_batches(lambda b: {"sq": b["id"] ** 2})
    print(ds.filter(lambda r: r["sq"] % 3 == 0).count())
"""

from ._aggregate import AggregateFn, Count, Max, Mean, Min, Std, Sum
from ._block import BlockMetadata
from ._context import DataContext
from ._dataset import Dataset, GroupedData, MaterializedDataset
from ._datasource import Datasource, ReadTask
from ._iterator import DataIterator
from ._plan import ActorPoolStrategy
from ._sources import (
    from_arrow,
    from_items,
    from_numpy,
    from_pandas,
    range,
    range_tensor,
    read_binary_files,
    read_csv,
    read_datasource,
    read_json,
    read_numpy,
    read_parquet,
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
    "range",
    "range_tensor",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_text",
]
