"""Ray's ``util.placement_group_table(placement_group=None)``: one group's row, or all."""

from __future__ import annotations

from typing import Any


def placement_group_table(placement_group: Any = None) -> Any:
    """The head's table of placement groups, in Ray's row format (``placement_group_id``,
    ``name``, ``strategy``, ``state``, ``bundles``, ``bundles_to_node_id``).

    Args:
        placement_group: a :class:`PlacementGroup`; given, only its row (a dict; empty when
            the head does not know the group), as Ray returns it.

    Returns:
        The row of ``placement_group``, or the list of every group's row.
    """
    from runtime.util.state import list_placement_groups

    rows = [dict(r) for r in list_placement_groups(limit=1_000_000)]
    if placement_group is None:
        return rows
    wanted = getattr(placement_group, "id", placement_group)
    return next((r for r in rows if r.get("placement_group_id") == wanted), {})
