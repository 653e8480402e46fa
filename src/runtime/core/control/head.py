"""The control plane, kept by the head node: members, the actor directory, names, a KV store.

It is never on the per-call path: callers ask it where an actor lives once, then talk to
that node directly. Actors are placed here, from one consistent view of free resources.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..common.exceptions import InfeasibleError, RuntimeBaseError
from ..scheduling.scheduler import (
    PG_STRATEGIES,
    bundles_feasible,
    fits,
    pick_actor_node,
    place_bundles,
)
from ..wire import protocol as p
from ..wire.heartbeat import DetectorConfig, FailureDetector
from ..wire.heartbeat import now as heartbeat_now
from .head_store import HeadStore, StoredActor

if TYPE_CHECKING:
    from ..objects.store import ObjectStore
    from ..wire.transport import Connection


class LocalExecutor(Protocol):
    """The head's own node's executor, for actors and bundles placed on the head."""

    def create_actor(self, spec: p.ActorSpec) -> None: ...
    def on_bundles(self, msg: p.ReserveBundles | p.ReleaseBundles) -> None: ...
    def kill_actor(self, actor_id: bytes, reason: str, restarting: bool = False) -> None: ...


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
    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]: ...
    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any: ...
    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection: ...
    def set_view(self, nodes: list[p.NodeInfo], departed: Sequence[str] = ()) -> None: ...
    def peer_lost(self, peer: str) -> None: ...


log = logging.getLogger("runtime.head")

PENDING, ALIVE, DEAD = "PENDING", "ALIVE", "DEAD"
#: After a node turned an actor down (stale view), the head tries again this much later.
_RETRY_S = 0.1
#: How long a lookup by id waits for the creation request of an actor it does not know.
_ANNOUNCE_S = 10.0
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


class Head:
    """Control-plane state plus the handlers that change it (on the head's loop)."""

    def __init__(self, worker: HeadHost) -> None:
        self.worker = worker
        self.nodes: dict[str, p.NodeInfo] = {}
        self.actors: dict[bytes, ActorRecord] = {}
        self._dead_order: deque[bytes] = deque()  # dead actors, oldest first
        self.names: dict[tuple[str, str], bytes] = {}
        self.pending: deque[bytes] = deque()
        self.groups: dict[bytes, GroupRecord] = {}
        self.group_names: dict[tuple[str, str], bytes] = {}
        self.pending_groups: deque[bytes] = deque()
        self.kv: dict[tuple[str, str], bytes] = {}
        #: Lookups of actor ids whose creation request has not arrived yet.
        self.announced: dict[bytes, list[asyncio.Future[None]]] = {}
        self._view_armed = False
        self._placing = False
        self.detector = FailureDetector(DetectorConfig.from_env())
        #: Ids of nodes declared dead: never accepted again (a node rejoins with a new id).
        self.retired: set[str] = set()
        #: Members that left lately, told to everyone with the view (bounded).
        self.departed: deque[str] = deque(maxlen=1024)
        self.store: HeadStore | None = None
        if worker.state_dir:
            self.store = HeadStore(os.path.join(worker.state_dir, "head.sqlite"))
            self._load(self.store)
        worker.spawn(self._watch(), name="runtime-failure-detector")

    def _load(self, store: HeadStore) -> None:
        """Take up the state a previous head left in the state directory."""
        self.kv.update(store.kv())
        for spec, state, nodes, reason in store.groups():
            self.groups[spec.pg_id] = GroupRecord(spec, state, dict(nodes), reason=reason)
            if state != REMOVED and spec.name:
                self.group_names[(spec.namespace, spec.name)] = spec.pg_id
            if state == PENDING:
                self.pending_groups.append(spec.pg_id)
        alive = 0
        for stored in store.actors():
            record = ActorRecord(stored.spec, stored.state, stored.node_id, stored.address,
                                 stored.death_cause, num_restarts=stored.num_restarts)  # fmt: skip
            self.actors[stored.spec.actor_id] = record
            if record.state == DEAD:
                self._dead_order.append(stored.spec.actor_id)
            s = stored.spec
            if record.state != DEAD and s.name:
                self.names[(s.namespace, s.name)] = s.actor_id
            if record.state == PENDING:
                self.pending.append(s.actor_id)
            alive += record.state == ALIVE
        if self.actors or self.kv or self.groups:
            log.info("recovered %d actors (%d alive) and %d KV entries from %s",
                     len(self.actors), alive, len(self.kv), store.path)  # fmt: skip
            self.worker.spawn(self._settle_recovered())

    async def _settle_recovered(self) -> None:
        """Actors whose node has not come back within the dead window are lost with it."""
        await asyncio.sleep(self.detector.config.dead_after)
        for group in self.groups.values():  # bundles on nodes that did not come back
            if group.state != REMOVED:
                self._replace_lost_bundles(group, lambda node_id: node_id not in self.nodes)
        if self.pending_groups:
            self._place_pending()
        for record in list(self.actors.values()):
            if record.state == ALIVE and record.node_id not in self.nodes:
                if record.can_restart():
                    self._restart(record, f"its node {record.node_id} did not come back")
                else:
                    self._mark_dead(record, f"its node {record.node_id} did not come back")

    def _persist_group(self, g: GroupRecord) -> None:
        if self.store is not None:
            self.store.save_group(g.spec, g.state, g.nodes, g.reason)

    def _persist(self, r: ActorRecord) -> None:
        if self.store is not None:
            self.store.save_actor(
                StoredActor(r.spec, r.state, r.node_id, r.address, r.num_restarts, r.death_cause)
            )

    # --- members ---------------------------------------------------------------------------

    def register_local(self, info: p.NodeInfo) -> None:
        self.nodes[info.node_id] = info
        self.worker.set_view(list(self.nodes.values()))

    def _broadcast_view(self) -> None:
        if not self._view_armed:
            self._view_armed = True
            self.worker.loop.call_later(0.01, self._send_view)

    def _send_view(self) -> None:
        self._view_armed = False
        nodes = list(self.nodes.values())
        self.worker.set_view(nodes)
        msg = p.ClusterView(nodes, list(self.departed))
        for node_id in self.nodes:
            conn = self.worker.conns.get(node_id)
            if conn is not None:
                conn.send(msg)

    def on_report(self, msg: p.ReportResources) -> None:
        info = self.nodes.get(msg.node_id)
        if info is not None:
            info.available = msg.available
            info.reserved = msg.reserved
            self._broadcast_view()
            if self.pending or self.pending_groups:
                self._place_pending()

    async def _watch(self) -> None:
        """Declare dead the nodes whose heartbeats stopped (a periodic check, by design)."""
        period = self.detector.config.interval / 2
        while True:
            await asyncio.sleep(period)
            for node_id in self.detector.check(heartbeat_now()):
                self.evict(node_id, f"no heartbeat for {self.detector.config.dead_after:g} s")

    def evict(self, node_id: str, why: str) -> None:
        """Declare a node dead: retire its id, tell it so, and recover what ran there."""
        if node_id in self.retired or node_id not in self.nodes:
            return
        log.warning("declaring node %s dead: %s", node_id, why)
        self.retired.add(node_id)
        conn = self.worker.conns.pop(node_id, None)
        if conn is not None:
            conn.send(p.Shutdown(f"evicted: {why}", evicted=True))
            conn.close()
        self.worker.peer_lost(node_id)

    def peer_lost(self, peer: str) -> None:
        self.detector.forget(peer)
        info = self.nodes.pop(peer, None)
        if info is None:
            return
        self.departed.append(peer)
        # A member killed on this host leaves its object store files: remove them once it is
        # surely gone (the store sweeps directories of processes that no longer run).
        self.worker.loop.call_later(1.0, self.worker.store.sweep)
        for record in list(self.actors.values()):
            if record.state == DEAD:
                continue
            if record.node_id == peer and not info.is_driver:
                if record.can_restart():
                    self._restart(record, f"its node {peer} died")
                else:
                    self._mark_dead(record, f"the actor's node {peer} died")
            elif record.spec.owner_id == peer and not record.spec.detached:
                self._kill(record, f"its owner {peer} exited (the actor is not detached)")
        for group in list(self.groups.values()):
            if group.state == REMOVED:
                continue
            if group.spec.owner_id == peer and not group.spec.detached:
                self._remove_group(group, f"its owner {peer} exited")
                continue
            self._replace_lost_bundles(group, lambda node_id: node_id == peer)
        if self.pending_groups:
            self._place_pending()
        self._broadcast_view()

    # --- requests ----------------------------------------------------------------------------

    def on_message(self, conn: Connection | None, msg: p.Message) -> None:
        match msg:
            case p.ReportResources():
                self.on_report(msg)
            case p.Heartbeat(node_id=node_id):
                if node_id in self.retired and conn is not None:
                    conn.abort()  # a retired incarnation: its heartbeats mean nothing now
                else:
                    self.detector.beat(node_id, heartbeat_now())
            case p.LogLines():
                self.forward_logs(msg)
            case p.ActorGone(actor_id=actor_id, reason=reason, error=error):
                record = self.actors.get(actor_id)
                sender = conn.peer_id if conn is not None else self.worker.peer_id
                # Only news of the actor's current placement counts (not of a restarted one's).
                if record is not None and record.state == ALIVE and record.node_id == sender:
                    record.death_error = error
                    self._mark_dead(record, reason)
            case _ if conn is not None and hasattr(msg, "rid"):
                self.worker.spawn(self._serve(conn, msg))
            case _:
                log.warning("head ignores %s", type(msg).__name__)

    def forward_logs(self, msg: p.LogLines) -> None:
        """Task output from a node, to every driver that asked for it."""
        for info in self.nodes.values():
            if info.is_driver and info.labels.get("log_to_driver") == "1":
                conn = self.worker.conns.get(info.node_id)
                if conn is not None and not conn.closed:
                    conn.send(msg)

    async def _serve(self, conn: Connection, msg: Any) -> None:
        reply = await self.handle_local(msg, conn)
        conn.send(reply)

    async def handle_local(self, msg: Any, conn: Connection | None = None) -> p.Reply:
        rid = msg.rid
        try:
            value = await self._handle(msg, conn)
            return p.Reply(rid, value=value)
        except (RuntimeBaseError, ValueError, KeyError, TypeError) as exc:
            return p.Reply(rid, error=str(exc), error_type=type(exc).__name__)

    async def _handle(self, msg: Any, conn: Connection | None) -> Any:
        match msg:
            case p.RegisterNode(info=info):
                if info.node_id in self.retired:
                    raise ValueError(f"node {info.node_id} was declared dead; join with a new id")
                self.nodes[info.node_id] = info
                if not info.is_driver:
                    self.detector.watch(info.node_id, heartbeat_now())
                self._send_view()
                if self.pending or self.pending_groups:
                    self._place_pending()
                return True
            case p.CreateActor(spec=spec, get_if_exists=get_if_exists):
                return self._create_actor(spec, get_if_exists)
            case p.GetActor(
                name=name, namespace=namespace, actor_id=actor_id, wait=wait, after_restarts=after
            ):
                return await self._get_actor(name, namespace, actor_id, wait, after)
            case p.KillActor(actor_id=actor_id, no_restart=no_restart, reason=reason):
                record = self.actors.get(actor_id)
                if record is None:
                    raise ValueError(f"no actor {actor_id.hex()}")
                if not no_restart and record.state == ALIVE and record.can_restart():
                    self._stop_on_node(record.node_id, actor_id, restarting=True)
                    self._restart(record, "it was killed with runtime.kill(no_restart=False)")
                else:
                    self._kill(record, reason or "the actor was killed with runtime.kill")
                return True
            case p.ListState(what=what):
                return self._list(what)
            case p.KvOp():
                return self._kv(msg)
            case p.StopCluster():
                self.worker.loop.call_later(0.05, self.stop_cluster)
                return True
            case p.CreatePlacementGroup(spec=spec):
                return self._create_group(spec)
            case p.WaitPlacementGroup(pg_id=pg_id, name=name, namespace=namespace):
                return await self._wait_group(pg_id, name, namespace)
            case p.RemovePlacementGroup(pg_id=pg_id):
                group = self.groups.get(pg_id)
                if group is None:
                    raise ValueError(f"no placement group {pg_id.hex()}")
                self._remove_group(group, "it was removed with remove_placement_group")
                return True
            case _:
                raise ValueError(f"the head does not handle {type(msg).__name__}")

    # --- actors ------------------------------------------------------------------------------

    def _create_actor(self, spec: p.ActorSpec, get_if_exists: bool) -> Any:
        known = self.actors.get(spec.actor_id)
        if known is not None:  # the same request again (its reply was lost): one actor
            return known.location()
        if spec.name:
            key = (spec.namespace, spec.name)
            existing = self.names.get(key)
            if existing is not None:
                if get_if_exists:
                    return self.actors[existing].location()
                raise ValueError(
                    f"an actor named {spec.name!r} already exists in namespace {spec.namespace!r}"
                    " (use get_if_exists=True to get it)"
                )
        group_id, index = _in_group(spec.strategy)
        if group_id is not None:
            group = self.groups.get(group_id)
            if group is None or group.state == REMOVED:
                raise ValueError(f"placement group {group_id.hex()} does not exist (removed?)")
            bundles = group.spec.bundles
            if index >= len(bundles):
                raise ValueError(
                    f"placement_group_bundle_index {index} is out of range: the group has "
                    f"{len(bundles)} bundles"
                )
            candidates = bundles if index < 0 else [bundles[index]]
            feasible = any(fits(spec.resources, b) for b in candidates)
        else:
            _, feasible = pick_actor_node(
                self.nodes.values(), spec.resources, {}, **_affinity(spec)
            )
        if not feasible and group_id is not None:
            raise InfeasibleError(
                f"actor {spec.class_name} asks for {dict(spec.resources)}, more than its "
                "placement group bundle holds"
            )
        if not feasible:
            raise InfeasibleError(
                f"no node in the cluster can ever host actor {spec.class_name} with resources "
                f"{dict(spec.resources)}; start a node with those resources or lower the request"
            )
        record = ActorRecord(spec)
        self.actors[spec.actor_id] = record
        self._persist(record)
        for fut in self.announced.pop(spec.actor_id, []):
            if not fut.done():
                fut.set_result(None)
        if spec.name:
            self.names[(spec.namespace, spec.name)] = spec.actor_id
        self.pending.append(spec.actor_id)
        self._place_pending()
        return record.location()

    def _place_pending(self) -> None:
        if self._placing:
            return
        self._placing = True
        self.worker.spawn(self._placer())

    async def _placer(self) -> None:
        try:
            for _ in range(len(self.pending_groups)):
                pg_id = self.pending_groups.popleft()
                group = self.groups.get(pg_id)
                if group is None or group.state != PENDING:
                    continue
                if not await self._try_place_group(group) and group.state == PENDING:
                    self.pending_groups.append(pg_id)
            while self.pending:
                made_progress = False
                for _ in range(len(self.pending)):
                    actor_id = self.pending.popleft()
                    record = self.actors.get(actor_id)
                    if record is None or record.state != PENDING:
                        continue
                    if await self._try_place(record):
                        made_progress = True
                    elif record.state == PENDING:
                        self.pending.append(actor_id)
                if not made_progress:
                    return  # wait for a resource report or a new node
        finally:
            self._placing = False

    async def _try_place(self, record: ActorRecord) -> bool:
        spec = record.spec
        group_id, index = _in_group(spec.strategy)
        if group_id is not None:
            return await self._try_place_in_group(record, group_id, index)
        counts: dict[str, int] = {}
        for r in self.actors.values():
            if r.state == ALIVE:
                counts[r.node_id] = counts.get(r.node_id, 0) + 1
        node_id, feasible = pick_actor_node(
            self.nodes.values(), spec.resources, counts, **_affinity(spec)
        )
        if not feasible:
            self._mark_dead(
                record, f"no node can host the actor's resources {dict(spec.resources)} any more"
            )
            return False
        if node_id is None:
            return False
        return await self._create_on(record, node_id)

    async def _create_on(self, record: ActorRecord, node_id: str, retry: bool = True) -> bool:
        spec = record.spec
        info = self.nodes[node_id]
        try:
            if node_id == self.worker.peer_id:
                assert self.worker.executor is not None
                self.worker.executor.create_actor(spec)
            else:
                conn = await self.worker.connect_peer(node_id, info.address)
                p.unwrap_reply(await self.worker.request(conn, p.CreateActor(0, spec)))
        except Exception as exc:  # no room after all, or the node is gone
            # The view was stale; the node's next report corrects it. Try again shortly.
            log.debug("placing %s on %s failed: %s", spec.class_name, node_id, exc)
            if retry:
                self.worker.loop.call_later(_RETRY_S, self._place_pending)
            return False
        if record.state != PENDING:  # killed while being placed
            self._stop_on_node(node_id, spec.actor_id)
            return True
        # The node reports what it has left (absolute figures); the view is not adjusted here,
        # as a report may already have overtaken this reply.
        record.state, record.node_id, record.address = ALIVE, node_id, info.address
        self._persist(record)
        self._wake(record)
        return True

    async def _try_place_in_group(self, record: ActorRecord, group_id: bytes, index: int) -> bool:
        group = self.groups.get(group_id)
        if group is None or group.state == REMOVED:
            self._mark_dead(record, "its placement group was removed")
            return False
        if group.state != ALIVE:
            return False  # placed once the group is
        if index >= 0:
            nodes = [group.nodes[index]]
        else:  # any bundle: the nodes of the group in bundle order
            nodes = list(dict.fromkeys(group.nodes[i] for i in sorted(group.nodes)))
        for node_id in nodes:
            if node_id in self.nodes and await self._create_on(record, node_id, retry=False):
                return True
            if record.state != PENDING:
                return True
        self.worker.loop.call_later(_RETRY_S, self._place_pending)
        return False

    # --- placement groups ----------------------------------------------------------------------

    def _create_group(self, spec: p.PlacementGroupSpec) -> Any:
        if spec.strategy not in PG_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(PG_STRATEGIES)}")
        if spec.pg_id in self.groups:
            return True  # a retried request
        if spec.name:
            key = (spec.namespace, spec.name)
            if key in self.group_names:
                raise ValueError(f"a placement group named {spec.name!r} already exists")
        self.groups[spec.pg_id] = GroupRecord(spec)
        if bundles_feasible(self.nodes.values(), spec.bundles, spec.strategy) is not None:
            # Nodes may still be joining: give up only if it stays impossible for a while.
            self.worker.loop.call_later(_infeasible_after(), self._fail_if_infeasible, spec.pg_id)
        self._persist_group(self.groups[spec.pg_id])
        if spec.name:
            self.group_names[(spec.namespace, spec.name)] = spec.pg_id
        self.pending_groups.append(spec.pg_id)
        self._place_pending()
        return True

    def _replace_lost_bundles(self, group: GroupRecord, lost: Callable[[str], bool]) -> None:
        """Place the group's bundles on lost nodes again; the rest stay where they run."""
        indices = [i for i, node_id in group.nodes.items() if lost(node_id)]
        if not indices:
            return
        for i in indices:
            del group.nodes[i]
        group.state = PENDING
        self._persist_group(group)
        self.pending_groups.append(group.spec.pg_id)

    def _fail_if_infeasible(self, pg_id: bytes) -> None:
        group = self.groups.get(pg_id)
        if group is None or group.state != PENDING:
            return
        spec = group.spec
        why = bundles_feasible(self.nodes.values(), spec.bundles, spec.strategy)
        if why is None:
            return
        group.infeasible = True
        self._remove_group(
            group,
            f"placement group with bundles {spec.bundles} ({spec.strategy}) can never be "
            f"placed on this cluster: {why}",
        )

    async def _try_place_group(self, group: GroupRecord) -> bool:
        spec = group.spec
        choice = place_bundles(self.nodes.values(), spec.bundles, spec.strategy, group.nodes)
        if choice is None:
            return False
        new = {i: n for i, n in choice.items() if i not in group.nodes}
        per_node: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for i, node_id in new.items():
            per_node.setdefault(node_id, []).append((i, spec.bundles[i]))
        reserved: list[str] = []
        ok = True
        for node_id, bundles in per_node.items():
            if await self._send_to_node(node_id, p.ReserveBundles(0, spec.pg_id, bundles)):
                reserved.append(node_id)
            else:
                ok = False
                break
        if not ok or group.state == REMOVED:
            for node_id in reserved:
                idx = [i for i, _ in per_node[node_id]]
                await self._send_to_node(node_id, p.ReleaseBundles(0, spec.pg_id, idx))
            if ok:  # removed while being placed
                return True
            self.worker.loop.call_later(_RETRY_S, self._place_pending)
            return False
        group.nodes.update(new)
        group.state = ALIVE
        self._persist_group(group)
        self._wake_group(group)
        if self.pending:
            self._place_pending()
        return True

    async def _send_to_node(self, node_id: str, msg: Any) -> bool:
        """A bundle request to one node; False when it refused or cannot be reached."""
        try:
            if node_id == self.worker.peer_id:
                assert self.worker.executor is not None
                self.worker.executor.on_bundles(msg)
                return True
            conn = await self.worker.connect_peer(node_id, self.nodes[node_id].address)
            p.unwrap_reply(await self.worker.request(conn, msg))
            return True
        except Exception as exc:
            level = logging.WARNING if isinstance(msg, p.ReleaseBundles) else logging.DEBUG
            log.log(level, "%s on %s failed: %s", type(msg).__name__, node_id, exc)
            return False

    def _wake_group(self, group: GroupRecord) -> None:
        waiters, group.waiters = group.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _wait_group(self, pg_id: bytes, name: str, namespace: str) -> Any:
        if not pg_id:
            found = self.group_names.get((namespace, name))
            if found is None:
                raise ValueError(f"no placement group named {name!r} in namespace {namespace!r}")
            pg_id = found
        group = self.groups.get(pg_id)
        if group is None:
            raise ValueError(f"no placement group {pg_id.hex()}")
        while group.state == PENDING:
            fut: asyncio.Future[None] = self.worker.loop.create_future()
            group.waiters.append(fut)
            await fut
        if group.infeasible:
            raise InfeasibleError(group.reason)
        if group.state == REMOVED:
            raise ValueError(f"placement group {pg_id.hex()} was removed: {group.reason}")
        return {
            "pg_id": pg_id,
            "bundles": group.spec.bundles,
            "strategy": group.spec.strategy,
            "nodes": [group.nodes[i] for i in range(len(group.spec.bundles))],
        }

    def _remove_group(self, group: GroupRecord, reason: str) -> None:
        if group.state == REMOVED:
            return
        group.state, group.reason = REMOVED, reason
        self._persist_group(group)
        spec = group.spec
        if spec.name and self.group_names.get((spec.namespace, spec.name)) == spec.pg_id:
            del self.group_names[(spec.namespace, spec.name)]
        for record in list(self.actors.values()):
            if record.state != DEAD and _in_group(record.spec.strategy)[0] == spec.pg_id:
                self._kill(record, f"its placement group was removed ({reason})")
        for node_id in set(group.nodes.values()):
            if node_id in self.nodes:
                self.worker.spawn(self._release_on(node_id, spec.pg_id))
        self._wake_group(group)

    async def _release_on(self, node_id: str, pg_id: bytes) -> None:
        """Give a removed group's bundles on ``node_id`` back, retrying a failed request a
        few times while the node lives (a release that is lost leaks the node's room)."""
        for attempt in range(4):
            if await self._send_to_node(node_id, p.ReleaseBundles(0, pg_id)):
                return
            if node_id not in self.nodes:
                return  # the node is gone: so are its bundles
            await asyncio.sleep(_RETRY_S * 2**attempt)
        log.warning("could not release placement group %s on node %s", pg_id.hex(), node_id)

    async def _get_actor(
        self, name: str, namespace: str, actor_id: bytes, wait: bool, after_restarts: int = -1
    ) -> Any:
        if actor_id:
            record = self.actors.get(actor_id)
            if record is None and wait:
                # A handle can reach another process before its creator's request reaches
                # us (they travel on different connections): wait for it, within a bound.
                fut_created: asyncio.Future[None] = self.worker.loop.create_future()
                self.announced.setdefault(actor_id, []).append(fut_created)
                try:
                    async with asyncio.timeout(_ANNOUNCE_S):
                        await fut_created
                except TimeoutError:
                    pass
                finally:
                    waiting = self.announced.get(actor_id)
                    if waiting is not None and fut_created in waiting:
                        waiting.remove(fut_created)
                        if not waiting:
                            del self.announced[actor_id]
                record = self.actors.get(actor_id)
        else:
            aid = self.names.get((namespace, name))
            record = self.actors.get(aid) if aid is not None else None
        if record is None:
            what = f"named {name!r} in namespace {namespace!r}" if name else actor_id.hex()
            raise ValueError(f"no actor {what}")
        try:
            async with asyncio.timeout(_ANNOUNCE_S if after_restarts >= 0 else None):
                while (wait and record.state == PENDING) or (
                    record.state == ALIVE and record.num_restarts <= after_restarts
                ):
                    fut: asyncio.Future[None] = self.worker.loop.create_future()
                    record.waiters.append(fut)
                    await fut
        except TimeoutError:
            pass  # the caller sees the stale placement and gives up
        return record.location()

    def _wake(self, record: ActorRecord) -> None:
        waiters, record.waiters = record.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _mark_dead(self, record: ActorRecord, reason: str) -> None:
        if record.state != DEAD:
            self._dead_order.append(record.spec.actor_id)
        record.state, record.death_cause = DEAD, reason
        self._persist(record)
        s = record.spec
        if s.name and self.names.get((s.namespace, s.name)) == s.actor_id:
            del self.names[(s.namespace, s.name)]
        self._wake(record)
        while len(self._dead_order) > DEAD_ACTORS_KEPT:
            old = self._dead_order.popleft()
            gone = self.actors.get(old)
            if gone is not None and gone.state == DEAD:
                del self.actors[old]
                if self.store is not None:
                    self.store.delete_actor(old)

    def _restart(self, record: ActorRecord, reason: str) -> None:
        """Place the actor again (its constructor runs anew on a live node)."""
        log.info("restarting actor %s: %s", record.spec.class_name, reason)
        record.num_restarts += 1
        record.state, record.node_id, record.address = PENDING, "", ""
        self._persist(record)
        self._wake(record)
        self.pending.append(record.spec.actor_id)
        self._place_pending()

    def _kill(self, record: ActorRecord, reason: str) -> None:
        node_id = record.node_id
        was_alive = record.state == ALIVE
        self._mark_dead(record, reason)
        if was_alive:
            self._stop_on_node(node_id, record.spec.actor_id)

    def _stop_on_node(self, node_id: str, actor_id: bytes, *, restarting: bool = False) -> None:
        if node_id == self.worker.peer_id:
            if self.worker.executor is not None:
                self.worker.executor.kill_actor(actor_id, "the actor was killed", restarting)
            return
        conn = self.worker.conns.get(node_id)
        if conn is not None:
            conn.send(p.KillActor(0, actor_id, no_restart=not restarting))

    # --- state listing, KV, stop ---------------------------------------------------------------

    def _list(self, what: str) -> Any:
        if what == "nodes":
            return [msgspec.to_builtins(n) for n in self.nodes.values()]
        if what == "actors":
            return [
                {
                    "actor_id": r.spec.actor_id.hex(),
                    "class_name": r.spec.class_name,
                    "name": r.spec.name,
                    "namespace": r.spec.namespace,
                    "state": r.state,
                    "node_id": r.node_id,
                    "death_cause": r.death_cause,
                    "detached": r.spec.detached,
                }
                for r in self.actors.values()
            ]
        if what == "placement_groups":
            return [g.table() for g in self.groups.values()]
        raise ValueError(f"cannot list {what!r}: choose nodes, actors or placement_groups")

    def _kv(self, msg: p.KvOp) -> Any:
        key = (msg.namespace, msg.key)
        match msg.op:
            case "put":
                if not msg.overwrite and key in self.kv:
                    return False
                assert msg.value is not None
                self.kv[key] = msg.value
                if self.store is not None:
                    self.store.put(msg.namespace, msg.key, msg.value)
                return True
            case "get":
                return self.kv.get(key)
            case "del":
                if self.store is not None:
                    self.store.delete(msg.namespace, msg.key)
                return self.kv.pop(key, None) is not None
            case "keys":
                return [k for ns, k in self.kv if ns == msg.namespace and k.startswith(msg.key)]
        raise ValueError(f"unknown KV operation {msg.op!r}")

    def stop_cluster(self) -> None:
        for node_id in self.nodes:
            conn = self.worker.conns.get(node_id)
            if conn is not None:
                conn.send(p.Shutdown("the cluster was stopped"))
        if self.worker.on_head_lost is not None:
            self.worker.loop.call_later(0.05, self.worker.on_head_lost)


def _infeasible_after() -> float:
    """Seconds a placement group that no node set could hold waits for nodes to join."""
    return float(os.environ.get("RUNTIME_PG_INFEASIBLE_S", "5"))


def _in_group(strategy: Any) -> tuple[bytes | None, int]:
    """(group id, bundle index) of a placement group strategy, else (None, -1)."""
    if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "pg":
        return bytes(strategy[1]), int(strategy[2])
    return None, -1


def _affinity(spec: p.ActorSpec) -> dict[str, Any]:
    strategy = spec.strategy
    if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "node":
        return {"affinity": strategy[1], "soft": bool(strategy[2])}
    return {}
