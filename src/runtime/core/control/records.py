"""What the control plane keeps: actor and placement group records, and what it needs of
the head's worker (HeadHost) and of its own node's executor (LocalExecutor).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..wire import protocol as p

if TYPE_CHECKING:
    from collections import deque

    from ..objects.store import ObjectStore
    from ..wire.transport import Connection
    from .head_store import HeadStore


PENDING, ALIVE, DEAD = "PENDING", "ALIVE", "DEAD"
#: After a node turned an actor down (stale view), the head tries again this much later.
RETRY_S = 0.1
#: How long a lookup by id waits for the creation request of an actor it does not know.
ANNOUNCE_S = 10.0
#: Dead actors remembered (to answer their callers with the death cause); the oldest are
#: forgotten past this, so a cluster that makes and drops actors all day stays bounded.
#: Ray keeps a bounded cache of destroyed actors in its GCS for the same reason.
DEAD_ACTORS_KEPT = int(os.environ.get("RUNTIME_DEAD_ACTORS_KEPT", "10000"))


@dataclass(slots=True)
class ActorRecord:
    spec: p.ActorSpec
    state: str = PENDING
    node_id: str = ""
    address: str = ""
    death_cause: str | None = None
    death_error: p.Value | None = None
    num_restarts: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    def location(self) -> p.ActorLocation:
        s = self.spec
        return p.ActorLocation(
            s.actor_id,
            self.node_id,
            self.address,
            self.state,
            s.class_name,
            s.name,
            s.namespace,
            s.max_concurrency,
            s.is_async,
            self.death_cause,
            self.death_error,
            s.max_restarts,
            s.max_task_retries,
            self.num_restarts,
        )

    def can_restart(self) -> bool:
        limit = self.spec.max_restarts
        return limit == -1 or self.num_restarts < limit


REMOVED = "REMOVED"


@dataclass(slots=True)
class GroupRecord:
    """A placement group: its bundles, and the node holding each one once placed."""

    spec: p.PlacementGroupSpec
    state: str = PENDING  # PENDING (or placing again after a node died), ALIVE, REMOVED
    nodes: dict[int, str] = field(default_factory=dict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    reason: str = ""
    infeasible: bool = False

    def table(self) -> dict[str, Any]:
        s = self.spec
        return {
            "placement_group_id": s.pg_id.hex(),
            "name": s.name,
            "strategy": s.strategy,
            "state": {PENDING: "PENDING", ALIVE: "CREATED", REMOVED: "REMOVED"}[self.state],
            "bundles": {i: dict(b) for i, b in enumerate(s.bundles)},
            "bundles_to_node_id": {i: n for i, n in sorted(self.nodes.items())},
        }


class LocalExecutor(Protocol):
    """The head's own node's executor, for actors and bundles placed on the head."""

    def create_actor(self, spec: p.ActorSpec) -> object: ...
    def create_actors(self, msg: p.CreateActors) -> object: ...
    def on_bundles(self, msg: p.ReserveBundles | p.ReleaseBundles) -> None: ...
    def kill_actor(self, actor_id: bytes, reason: str, restarting: bool = False) -> None: ...


class PlacedListener(Protocol):
    """Where the head's own process hears that actors it created are placed."""

    def on_placed(self, msg: p.ActorsPlaced) -> None: ...


class HeadHost(Protocol):
    """What the control plane needs of the head's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def conns(self) -> dict[str, Connection]: ...
    @property
    def store(self) -> ObjectStore: ...
    @property
    def executor(self) -> LocalExecutor | None: ...
    @property
    def on_head_lost(self) -> Callable[[], None] | None: ...
    @property
    def creations(self) -> PlacedListener: ...
    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]: ...
    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any: ...
    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection: ...
    def set_view(
        self, nodes: list[p.NodeInfo], departed: Sequence[str] = (), whole: bool = True
    ) -> None: ...
    def peer_lost(self, peer: str) -> None: ...


def infeasible_after() -> float:
    """Seconds a new actor, task or placement group that no live node (set) could hold waits
    for nodes to join (``RUNTIME_INFEASIBLE_S``; ``RUNTIME_PG_INFEASIBLE_S``, its older name)."""
    value = os.environ.get("RUNTIME_INFEASIBLE_S") or os.environ.get("RUNTIME_PG_INFEASIBLE_S")
    return float(value or "5")


def in_group(strategy: Any) -> tuple[bytes | None, int]:
    """(group id, bundle index) of a placement group strategy, else (None, -1)."""
    if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "pg":
        return bytes(strategy[1]), int(strategy[2])
    return None, -1


def affinity(spec: p.ActorSpec) -> dict[str, Any]:
    strategy = spec.strategy
    if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "node":
        return {"affinity": strategy[1], "soft": bool(strategy[2])}
    if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "labels":
        return {"labels": dict(strategy[1]), "spread": bool(strategy[2])}
    return {}


class ActorsView(Protocol):
    """What the placement groups need of the actor directory."""

    @property
    def actors(self) -> dict[bytes, ActorRecord]: ...
    @property
    def pending(self) -> deque[bytes]: ...
    def kill(self, record: ActorRecord, reason: str) -> None: ...


class GroupsView(Protocol):
    """What the actor directory needs of the placement groups."""

    @property
    def groups(self) -> dict[bytes, GroupRecord]: ...


class HeadCore(Protocol):
    """What the head's parts need of the head (the head is one)."""

    @property
    def worker(self) -> HeadHost: ...
    @property
    def nodes(self) -> dict[str, p.NodeInfo]: ...
    @property
    def store(self) -> HeadStore | None: ...
    @property
    def directory(self) -> ActorsView: ...
    @property
    def placement(self) -> GroupsView: ...
    def place_pending(self) -> None: ...
    def warn(self, owner_id: str, text: str) -> None: ...
