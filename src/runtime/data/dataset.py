"""Ray's ``ray.data.dataset`` module path: ``Dataset``, ``MaterializedDataset``, ``GroupedData``."""

from ._dataset import Dataset, GroupedData, MaterializedDataset

__all__ = ["Dataset", "GroupedData", "MaterializedDataset"]
