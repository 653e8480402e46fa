"""Ray's ``ray.data.datasource`` module path: the names a custom source imports from there.

Example::

    from runtime.data.datasource import Datasource, ReadTask
"""

from dataclasses import dataclass

from ._block import BlockMetadata
from ._datasink import (
    BlockBasedFileDatasink,
    Datasink,
    RowBasedFileDatasink,
    TaskContext,
    WriteResult,
)
from ._datasource import Datasource, ReadTask
from ._file_based import FileBasedDatasource

__all__ = [
    "BlockBasedFileDatasink",
    "BlockMetadata",
    "Datasink",
    "Datasource",
    "FileBasedDatasource",
    "Partitioning",
    "ReadTask",
    "RowBasedFileDatasink",
    "TaskContext",
    "WriteResult",
]


@dataclass(frozen=True)
class Partitioning:
    """How file paths encode column values (``read_parquet(partitioning=...)``); only the
    ``"hive"`` style (``key=value`` directories) is read here."""

    style: str = "hive"
    base_dir: str | None = None
    field_names: list[str] | None = None
