"""Utilities over the core API, named as in ``ray.util``.

- :class:`ActorPool`: run many values through a fixed set of actors (``map``,
  ``map_unordered``, ``submit``, ``get_next``, ``get_next_unordered``, ``has_next``).
- :class:`Queue`: a first-in, first-out queue shared across the cluster, held by an async
  actor (sync ``put``/``get`` and async ``put_async``/``get_async``, with timeouts).
- :class:`Empty`, :class:`Full`: what ``Queue.get`` and ``Queue.put`` raise when there is
  no item or no room (subclasses of ``queue.Empty`` and ``queue.Full``).
- :func:`placement_group`: reserve bundles of resources, all or none (``PACK``, ``SPREAD``,
  ``STRICT_PACK``, ``STRICT_SPREAD``); ``pg.ready()`` is a ref, ``pg.wait(timeout)`` blocks;
  :func:`remove_placement_group`, :func:`get_placement_group`,
  :func:`placement_group_table`, :func:`get_current_placement_group` (the group the
  calling task or actor runs in).
- Scheduling strategies for ``.options(scheduling_strategy=...)``:
  :class:`PlacementGroupSchedulingStrategy` (run in a bundle),
  :class:`NodeAffinitySchedulingStrategy` (run on a node; ``soft`` falls back), and the
  strings ``"DEFAULT"`` and ``"SPREAD"``.

- :mod:`runtime.util.state`: Ray's state API (``list_nodes``, ``list_actors``,
  ``list_tasks``, ``list_objects``, ``list_placement_groups``, ``get_actor``).

See ``docs/util.md`` for the details and the differences from Ray.
"""

from runtime.core.api.placement import (
    NodeAffinitySchedulingStrategy,
    PlacementGroup,
    PlacementGroupSchedulingStrategy,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from runtime.util._actor_pool import ActorPool
from runtime.util._queue import Empty, Full, Queue

__all__ = [
    "ActorPool",
    "Empty",
    "Full",
    "NodeAffinitySchedulingStrategy",
    "PlacementGroup",
    "PlacementGroupSchedulingStrategy",
    "Queue",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]

# Ray's module layout and the helpers of ``ray.util`` built on the public API (the compat
# layer, docs/compat.md). The submodule ``placement_group`` is imported here so that its
# name in this package stays the function, as in Ray.
from runtime.util import (  # noqa: F401 - imported so `runtime.util.queue` works, as in Ray
    actor_pool,
    queue,
    scheduling_strategies,
)
from runtime.util._cluster_info import (
    get_node_ip_address,
    list_named_actors,
)
from runtime.util._placement_table import (  # noqa: F811 - also takes one group, as Ray's
    placement_group_table,
)
from runtime.util._serializability import inspect_serializability

# The function again, not the module (which mypy takes the name for).
from runtime.util.placement_group import placement_group  # type: ignore[assignment]  # noqa: F811

__all__ += [
    "get_node_ip_address",
    "inspect_serializability",
    "list_named_actors",
]
__all__.sort()
