"""Ray's module path ``ray.util.scheduling_strategies``: the strategies for ``.options()``.

The names are the ones :mod:`runtime.util` exports; this module only mirrors Ray's layout
so ``from runtime.util.scheduling_strategies import PlacementGroupSchedulingStrategy``
works as it does in Ray.
"""

from runtime.util import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

#: Ray's names for the two built-in string strategies.
DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "PlacementGroupSchedulingStrategy",
]
