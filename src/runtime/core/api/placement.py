"""Placement groups and scheduling strategies (``runtime.util``).

A placement group reserves bundles of resources on the nodes of the cluster, all or none
(gang scheduling): ``PACK`` puts the bundles on as few nodes as it can, ``SPREAD`` on as
many, and ``STRICT_PACK`` / ``STRICT_SPREAD`` wait rather than bend. Tasks and actors then run
inside a bundle with ``PlacementGroupSchedulingStrategy``. Removing the group frees its
bundles and stops what runs in them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..common.context import current_task
from ..objects import serialization as ser
from ..objects.refs import ObjectRef
from ..scheduling.scheduler import PG_STRATEGIES
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker
from .state import list_state


class PlacementGroup:
    """A handle to a placement group; it pickles, so tasks and actors can use it too."""

    def __init__(self, pg_id: bytes, bundles: list[dict[str, float]], strategy: str) -> None:
        self._pg_id = pg_id
        self.bundle_specs = bundles
        self.strategy = strategy

    @property
    def id(self) -> str:
        """The group's id (hex)."""
        return self._pg_id.hex()

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef[PlacementGroup]:
        """A ref that resolves to this group once all its bundles are reserved (await it or
        ``runtime.get`` it); it raises if the group is removed first."""
        worker = current_worker()
        ref = worker.new_owned(worker.new_id())
        oid = ref.id
        pg_id = self._pg_id

        async def wait() -> None:
            try:
                await worker.head_request(p.WaitPlacementGroup(0, pg_id))
                value, bufs = ser.serialize(self)
                worker.resolve(oid, value, list(bufs))
            except Exception as exc:
                worker.resolve(oid, ser.error_value(exc, "placement_group.ready"), [])

        worker.inbox.post(worker.spawn, wait())
        return ref

    def wait(self, timeout_seconds: float | None = 30) -> bool:
        """Block until the group is placed: True, or False after ``timeout_seconds``."""
        worker = current_worker()

        async def placed() -> bool:
            try:
                async with asyncio.timeout(timeout_seconds):
                    await worker.head_request(p.WaitPlacementGroup(0, self._pg_id))
                return True
            except TimeoutError:
                return False

        return _blocking(worker, placed())

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlacementGroup, (self._pg_id, self.bundle_specs, self.strategy))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other._pg_id == self._pg_id

    def __hash__(self) -> int:
        return hash(self._pg_id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id}, {self.strategy}, {self.bundle_specs})"


def placement_group(
    bundles: Sequence[Mapping[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
) -> PlacementGroup:
    """Reserve ``bundles`` (dicts such as ``{"CPU": 1}``) on the cluster; returns at once.

    Use ``pg.ready()`` or ``pg.wait(timeout)`` to know when the group is placed. A group
    that can never be placed (a bundle larger than any node, STRICT_SPREAD over more bundles
    than nodes) makes ``ready()`` and ``wait()`` raise InfeasibleError. ``lifetime="detached"``
    keeps the group after its creator exits.
    """
    if strategy not in PG_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(PG_STRATEGIES)}, got {strategy!r}")
    if not bundles:
        raise ValueError("a placement group needs at least one bundle")
    clean: list[dict[str, float]] = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping) or not bundle:
            raise ValueError(f"bundle {i} must be a non-empty dict of resources, got {bundle!r}")
        out: dict[str, float] = {}
        for key, amount in bundle.items():
            if not isinstance(amount, int | float) or amount < 0:
                raise ValueError(f"bundle {i}: {key} must be a number >= 0, got {amount!r}")
            if amount:
                out[str(key)] = float(amount)
        if not out:
            raise ValueError(f"bundle {i} asks for nothing: {bundle!r}")
        clean.append(out)
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    worker = current_worker()
    pg_id = worker.new_id()
    spec = p.PlacementGroupSpec(
        pg_id, clean, strategy, worker.peer_id, name, worker.namespace, lifetime == "detached"
    )

    async def create() -> None:
        # An infeasible group is kept by the head as failed: ready() and wait() raise why.
        with contextlib.suppress(Exception):
            await worker.head_request(p.CreatePlacementGroup(0, spec))

    worker.inbox.post(worker.spawn, create())
    return PlacementGroup(pg_id, clean, strategy)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Free the group's bundles and stop the actors and tasks running in them."""
    worker = current_worker()
    msg = p.RemovePlacementGroup(0, placement_group._pg_id)
    worker.group_nodes.pop(placement_group._pg_id, None)
    if worker.inbox.on_loop():
        worker.spawn(worker.head_request(msg))
    else:
        _blocking(worker, worker.head_request(msg))


def get_placement_group(name: str, namespace: str | None = None) -> PlacementGroup:
    """The placed group named ``name`` (waits while it is being placed)."""
    worker = current_worker()
    ns = worker.namespace if namespace is None else namespace
    info = _blocking(worker, worker.head_request(p.WaitPlacementGroup(0, b"", name, ns)))
    return PlacementGroup(bytes(info["pg_id"]), list(info["bundles"]), str(info["strategy"]))


#: The groups this process made or looked up, by id (get_current_placement_group on the loop).
_known: dict[bytes, PlacementGroup] = {}


def get_current_placement_group() -> PlacementGroup | None:
    """The placement group the calling task or actor runs in (Ray's
    ``util.get_current_placement_group``); None in the driver and in code placed outside any
    group. Inside an async method or task (on the node's loop) it answers only for a group
    this process already knows (it cannot wait for the head there): use it from ``def`` code.
    """
    ctx = current_task.get()
    if ctx is None or ctx.bundle is None:
        return None
    pg_id = ctx.bundle[0]
    known = _known.get(pg_id)
    if known is not None:
        return known
    worker = current_worker()
    info = _blocking(worker, worker.head_request(p.WaitPlacementGroup(0, pg_id)))
    group = PlacementGroup(pg_id, list(info["bundles"]), str(info["strategy"]))
    if len(_known) > 1024:
        _known.clear()
    _known[pg_id] = group
    return group


def placement_group_table() -> list[dict[str, Any]]:
    """Every placement group the head knows, with its state and where its bundles are."""
    return list_state("placement_groups")


class PlacementGroupSchedulingStrategy:
    """Run a task or actor inside bundle ``placement_group_bundle_index`` (-1: any).

    With ``placement_group_capture_child_tasks=True``, the tasks and actors a task placed
    this way submits with no strategy of their own go to the same group (any bundle), and
    so do theirs (Ray's capture; from a captured actor's methods they do not: see
    docs/core.md). ``placement_group=None`` places outside any group, even when the
    submitter captures its children.
    """

    def __init__(
        self,
        placement_group: PlacementGroup | None,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        self.placement_group_capture_child_tasks = bool(placement_group_capture_child_tasks)
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group = placement_group
        if placement_group is None:
            return
        if not isinstance(placement_group, PlacementGroup):
            raise TypeError("placement_group must be a PlacementGroup or None")
        if placement_group_bundle_index < -1 or (
            placement_group_bundle_index >= placement_group.bundle_count
        ):
            raise ValueError(
                f"placement_group_bundle_index {placement_group_bundle_index} is out of range "
                f"for a group of {placement_group.bundle_count} bundles"
            )

    def _to_wire(self) -> list[Any] | None:
        if self.placement_group is None:
            return None  # the default strategy, not captured (remote.py: may_be_captured)
        return ["pg", self.placement_group._pg_id, self.placement_group_bundle_index]


class NodeAffinitySchedulingStrategy:
    """Run on node ``node_id``; ``soft=True`` falls back to another node if it cannot."""

    def __init__(self, node_id: str, soft: bool = False) -> None:
        self.node_id = node_id
        self.soft = soft

    def _to_wire(self) -> list[Any]:
        return ["node", self.node_id, self.soft]


__all__ = [
    "NodeAffinitySchedulingStrategy",
    "PlacementGroup",
    "PlacementGroupSchedulingStrategy",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
