"""Ray's module path ``ray.util.placement_group``: placement groups and their helpers.

The same objects as :mod:`runtime.util` exports (``runtime.util.placement_group`` stays
the function there, as in Ray).
"""

# `placement_group` here is the function of runtime.util, not this module (which mypy and
# ruff take it for).
from runtime.util import (  # type: ignore[no-redef]
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,  # noqa: PLW0406
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
