"""Ray's ``ray.data.aggregate`` module path: the built-in aggregations and ``AggregateFn``."""

from ._aggregate import Count, Max, Mean, Min, Std, Sum
from ._custom_aggregate import AggregateFn

__all__ = ["AggregateFn", "Count", "Max", "Mean", "Min", "Std", "Sum"]
