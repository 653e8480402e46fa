"""The control plane, kept by the head node: members, the actor directory, names, a KV store.

It is never on the per-call path: callers ask it where an actor lives once, then talk to
that node directly. Actors are placed here, from one consistent view of free resources.
:class:`Head` keeps the membership, the KV store and persistence, and answers requests; the
actor directory (:mod:`.actors`) and the placement groups (:mod:`.groups`) are its parts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..common.errors import error_code
from ..common.exceptions import NodeRetiredError, RuntimeBaseError
from ..wire import protocol as p
from ..wire.heartbeat import DetectorConfig, FailureDetector
from ..wire.heartbeat import now as heartbeat_now
from .actors import ActorDirectory
from .groups import PlacementGroups
from .head_store import HeadStore
from .kv import KVStore
from .records import (
    ALIVE,
    DEAD,
    PENDING,
    REMOVED,
    ActorRecord,
    GroupRecord,
    HeadHost,
    LocalExecutor,
)
from .views import Membership

if TYPE_CHECKING:
    from ..wire.transport import Connection

log = logging.getLogger("runtime.head")

#: How many pending actors the head places at once (their nodes create them concurrently).
PLACE_TOGETHER = 64


class Head:
    """Control-plane state plus the handlers that change it (on the head's loop)."""

    def __init__(self, worker: HeadHost) -> None:
        self.worker = worker
        self.nodes: dict[str, p.NodeInfo] = {}
        self.kv = KVStore()
        #: The view sent to members as deltas (``control.views``).
        self.views = Membership(worker, self.nodes)
        self._sweep: asyncio.TimerHandle | None = None
        self._placing = False
        self.detector = FailureDetector(DetectorConfig.from_env())
        #: Ids of nodes declared dead: never accepted again (a node rejoins with a new id).
        self.retired: set[str] = set()
        #: The last node processes that died or left, listed by ``runtime.nodes()`` with
        #: ``Alive`` False (as Ray lists dead nodes), their resources gone with them.
        self.dead_nodes: deque[p.NodeInfo] = deque(maxlen=256)
        self.store: HeadStore | None = None
        #: The parts: the actor directory and the placement groups.
        self.directory = ActorDirectory(self)
        self.placement = PlacementGroups(self)
        #: One table per kind: messages from members (no answer), and requests (answered with
        #: a Reply: the handler's value, or the error it raised). A handler may be async.
        self._messages: dict[type, Callable[[Connection | None, Any], None]] = {
            p.ReportResources: lambda conn, msg: self.on_report(msg),
            p.Heartbeat: self._heartbeat,
            p.LogLines: lambda conn, msg: self.forward_logs(msg),
            p.ActorGone: self._actor_gone,
            p.ViewResync: lambda conn, msg: self.views.resync(conn),
        }
        directory, placement = self.directory, self.placement
        self._requests: dict[type, Callable[[Any, Connection | None], Any]] = {
            p.RegisterNode: self._register,
            p.CreateActor: lambda msg, conn: directory.create(msg.spec, msg.get_if_exists),
            p.GetActor: lambda msg, conn: directory.get(
                msg.name, msg.namespace, msg.actor_id, msg.wait, msg.after_restarts
            ),
            p.KillActor: self._kill_actor,
            p.ListState: lambda msg, conn: self._list(msg.what),
            p.KvOp: lambda msg, conn: self.kv.handle(msg),
            p.StopCluster: self._stop_request,
            p.DrainNode: self._drain,
            p.CreatePlacementGroup: lambda msg, conn: placement.create(msg.spec),
            p.WaitPlacementGroup: lambda msg, conn: placement.wait(
                msg.pg_id, msg.name, msg.namespace
            ),
            p.RemovePlacementGroup: self._remove_group,
        }
        if worker.state_dir:
            self.store = HeadStore(os.path.join(worker.state_dir, "head.sqlite"))
            self._load(self.store)
        worker.spawn(self._watch(), name="runtime-failure-detector")

    def _load(self, store: HeadStore) -> None:
        """Take up the state a previous head left in the state directory."""
        self.kv.load(store)
        for spec, state, nodes, reason in store.groups():
            self.placement.groups[spec.pg_id] = GroupRecord(spec, state, dict(nodes), reason=reason)
            if state != REMOVED and spec.name:
                self.placement.names[(spec.namespace, spec.name)] = spec.pg_id
            if state == PENDING:
                self.placement.pending.append(spec.pg_id)
        alive = 0
        for stored in store.actors():
            record = ActorRecord(stored.spec, stored.state, stored.node_id, stored.address,
                                 stored.death_cause, num_restarts=stored.num_restarts)  # fmt: skip
            self.directory.actors[stored.spec.actor_id] = record
            if record.state == DEAD:
                self.directory.dead_order.append(stored.spec.actor_id)
            s = stored.spec
            if record.state != DEAD and s.name:
                self.directory.names[(s.namespace, s.name)] = s.actor_id
            if record.state == PENDING:
                self.directory.pending.append(s.actor_id)
            alive += record.state == ALIVE
        if self.directory.actors or self.kv or self.placement.groups:
            log.info("recovered %d actors (%d alive) and %d KV entries from %s",
                     len(self.directory.actors), alive, len(self.kv), store.path)  # fmt: skip
            self.worker.spawn(self._settle_recovered())

    async def _settle_recovered(self) -> None:
        """Actors whose node has not come back within the dead window are lost with it."""
        await asyncio.sleep(self.detector.config.dead_after)
        for group in self.placement.groups.values():  # bundles on nodes that did not come back
            if group.state != REMOVED:
                self.placement.replace_lost_bundles(
                    group, lambda node_id: node_id not in self.nodes
                )
        if self.placement.pending:
            self.place_pending()
        for record in list(self.directory.actors.values()):
            if record.state == ALIVE and record.node_id not in self.nodes:
                if record.can_restart():
                    self.directory.restart(record, f"its node {record.node_id} did not come back")
                else:
                    self.directory.mark_dead(record, f"its node {record.node_id} did not come back")

    # --- members ---------------------------------------------------------------------------

    def register_local(self, info: p.NodeInfo) -> None:
        self.views.add(info)
        self.worker.set_view(list(self.nodes.values()))

    def on_report(self, msg: p.ReportResources) -> None:
        if self.views.report(msg) and (self.directory.pending or self.placement.pending):
            self.place_pending()

    async def _watch(self) -> None:
        """Declare dead the nodes whose heartbeats stopped (a periodic check, by design)."""
        detector = self.detector
        period = detector.config.interval / 2
        while True:
            due = heartbeat_now() + period
            await asyncio.sleep(period)
            # Late: the head's loop could not run (starved of CPU, paused, or busy), so it
            # could not read the beats sent meanwhile, nor could members beat if the whole
            # machine stalled. That time counts against no member (a real death is found
            # within the bound plus the head's own stalls).
            late = heartbeat_now() - due
            detector.deafened(late)
            if late >= detector.config.suspect_after:
                log.info("the head could not run for %.1f s: not counted as any member's silence",
                         late)  # fmt: skip
            # The loop runs due timers before it reads its sockets: read the heartbeats that
            # came during the stall before judging anyone.
            await asyncio.sleep(0)
            for node_id in detector.check(heartbeat_now()):
                self.evict(node_id, f"no heartbeat for {detector.config.dead_after:g} s")

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

    def _sweep_store(self) -> None:
        self._sweep = None
        self.worker.store.sweep()

    def peer_lost(self, peer: str) -> None:
        self.detector.forget(peer)
        info = self.views.drop(peer)
        if info is None:
            return
        if not info.is_driver:
            self.dead_nodes.append(msgspec.structs.replace(info, alive=False, resources={},
                                   available={}, reserved={}, used={}))  # fmt: skip
        # A member killed on this host leaves its object store files: remove them once it is
        # surely gone (the store sweeps directories of processes that no longer run), once
        # a second at most (members leaving together).
        if self._sweep is None:
            self._sweep = self.worker.loop.call_later(1.0, self._sweep_store)
        for record in list(self.directory.actors.values()):
            if record.state == DEAD:
                continue
            if record.node_id == peer and not info.is_driver:
                if record.can_restart():
                    self.directory.restart(record, f"its node {peer} died")
                else:
                    self.directory.mark_dead(record, f"the actor's node {peer} died")
            elif record.spec.owner_id == peer and not record.spec.detached:
                self.directory.kill(record, f"its owner {peer} exited (the actor is not detached)")
        for group in list(self.placement.groups.values()):
            if group.state == REMOVED:
                continue
            if group.spec.owner_id == peer and not group.spec.detached:
                self.placement.remove(group, f"its owner {peer} exited")
                continue
            self.placement.replace_lost_bundles(group, lambda node_id: node_id == peer)
        if self.placement.pending:
            self.place_pending()
        self.views.changed()

    # --- requests ----------------------------------------------------------------------------

    def on_message(self, conn: Connection | None, msg: p.Message) -> None:
        handler = self._messages.get(type(msg))
        if handler is not None:
            handler(conn, msg)
        elif conn is not None and hasattr(msg, "rid"):
            self.worker.spawn(self._serve(conn, msg))
        else:
            log.warning("head ignores %s", type(msg).__name__)

    def _heartbeat(self, conn: Connection | None, msg: p.Heartbeat) -> None:
        if msg.node_id in self.retired and conn is not None:
            conn.abort()  # a retired incarnation: its heartbeats mean nothing now
        else:
            self.detector.beat(msg.node_id, heartbeat_now())

    def _actor_gone(self, conn: Connection | None, msg: p.ActorGone) -> None:
        record = self.directory.actors.get(msg.actor_id)
        sender = conn.peer_id if conn is not None else self.worker.peer_id
        # Only news of the actor's current placement counts (not of a restarted one's).
        if record is not None and record.state == ALIVE and record.node_id == sender:
            record.death_error = msg.error
            self.directory.mark_dead(record, msg.reason)

    def forward_logs(self, msg: p.LogLines) -> None:
        """Task output from a node, to every driver that asked for it."""
        for info in self.nodes.values():
            if info.is_driver and info.labels.get("log_to_driver") == "1":
                conn = self.worker.conns.get(info.node_id)
                if conn is not None and not conn.closed:
                    conn.send(msg)

    def warn(self, owner_id: str, text: str) -> None:
        """A warning for the member that made something (e.g. an actor waiting for room): in
        the head's log, and on that driver's terminal (every driver's, when a node made it)."""
        log.info("%s", text)  # info: a local mesh's head writes to the driver's terminal too
        msg = p.LogLines(self.worker.peer_id, [("runtime", f"WARNING: {text}", True)])
        owner = self.nodes.get(owner_id)
        conn = self.worker.conns.get(owner_id)
        if owner is not None and owner.is_driver and conn is not None and not conn.closed:
            conn.send(msg)
        else:
            self.forward_logs(msg)

    async def _serve(self, conn: Connection, msg: Any) -> None:
        reply = await self.handle_local(msg, conn)
        conn.send(reply)

    async def handle_local(self, msg: Any, conn: Connection | None = None) -> p.Reply:
        rid = msg.rid
        try:
            value = await self._handle(msg, conn)
            return p.Reply(rid, value=value)
        except (RuntimeBaseError, ValueError, KeyError, TypeError) as exc:
            return p.Reply(
                rid, error=str(exc), error_type=type(exc).__name__, code=error_code(type(exc))
            )

    async def _handle(self, msg: Any, conn: Connection | None) -> Any:
        handler = self._requests.get(type(msg))
        if handler is None:
            raise ValueError(f"the head does not handle {type(msg).__name__}")
        value = handler(msg, conn)
        return await value if inspect.isawaitable(value) else value

    def _register(self, msg: p.RegisterNode, conn: Connection | None) -> bool:
        info = msg.info
        if info.node_id in self.retired:
            raise NodeRetiredError(f"node {info.node_id} was declared dead; join with a new id")
        if conn is not None and conn.closed:
            # It gave up (e.g. timed out) before this ran: its close found no member to
            # drop, and a member added now would have no connection, only a death to come.
            return False
        self.views.add(info)
        if not info.is_driver:
            self.detector.watch(info.node_id, heartbeat_now())
        # The new member gets the whole view now (before its reply); the others the change
        # with the next broadcast, so members joining together cost one delta to each.
        self.worker.set_view([info], (), False)
        if conn is not None:
            self.views.send_whole(conn, info.node_id)
        self.views.changed()
        if self.directory.pending or self.placement.pending:
            self.place_pending()
        return True

    def _kill_actor(self, msg: p.KillActor, conn: Connection | None) -> bool:
        record = self.directory.actors.get(msg.actor_id)
        if record is None:
            raise ValueError(f"no actor {msg.actor_id.hex()}")
        if not msg.no_restart and record.state == ALIVE and record.can_restart():
            self.directory.stop_on_node(record.node_id, msg.actor_id, restarting=True)
            self.directory.restart(record, "it was killed with runtime.kill(no_restart=False)")
        else:
            self.directory.kill(record, msg.reason or "the actor was killed with runtime.kill")
        return True

    def _stop_request(self, msg: p.StopCluster, conn: Connection | None) -> bool:
        self.worker.loop.call_later(0.05, self.stop_cluster)
        return True

    def _drain(self, msg: p.DrainNode, conn: Connection | None) -> bool:
        info = self.nodes.get(msg.node_id)
        if info is not None and not info.draining:
            info.draining = True
            self.views.changed(info.node_id)
        return info is not None

    def _remove_group(self, msg: p.RemovePlacementGroup, conn: Connection | None) -> bool:
        group = self.placement.groups.get(msg.pg_id)
        if group is None:
            raise ValueError(f"no placement group {msg.pg_id.hex()}")
        self.placement.remove(group, "it was removed with remove_placement_group")
        return True

    # --- actors ------------------------------------------------------------------------------

    def place_pending(self) -> None:
        if self._placing:
            return
        self._placing = True
        self.worker.spawn(self._placer())

    async def _placer(self) -> None:
        try:
            for _ in range(len(self.placement.pending)):
                pg_id = self.placement.pending.popleft()
                group = self.placement.groups.get(pg_id)
                if group is None or group.state != PENDING:
                    continue
                if not await self.placement.try_place(group) and group.state == PENDING:
                    self.placement.pending.append(pg_id)
            directory = self.directory
            while directory.pending:
                made_progress = False
                for _ in range(0, len(directory.pending), PLACE_TOGETHER):
                    # Up to PLACE_TOGETHER actors at once (their nodes create them
                    # concurrently), in order; each counts itself before it awaits its node.
                    batch: list[ActorRecord] = []
                    while directory.pending and len(batch) < PLACE_TOGETHER:
                        record = directory.actors.get(directory.pending.popleft())
                        if record is None or record.state != PENDING:
                            continue
                        if not directory.place_alone(record):  # a group's: on its own
                            batch.append(record)
                    counts = directory.alive_counts()
                    placed = await asyncio.gather(*(directory.try_place(r, counts) for r in batch))
                    for record, ok in zip(batch, placed, strict=True):
                        if ok:
                            made_progress = True
                        elif record.state == PENDING:
                            directory.pending.append(record.spec.actor_id)
                if not made_progress:
                    return  # wait for a resource report or a new node
        finally:
            self._placing = False

    # --- placement groups ----------------------------------------------------------------------

    # --- state listing, KV, stop ---------------------------------------------------------------

    def _list(self, what: str) -> Any:
        if what == "nodes":
            gone = [n for n in self.dead_nodes if n.node_id not in self.nodes]
            return [msgspec.to_builtins(n) for n in (*self.nodes.values(), *gone)]
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
                    "required_resources": dict(r.spec.resources),  # Ray's field name
                }
                for r in self.directory.actors.values()
            ]
        if what == "placement_groups":
            return [g.table() for g in self.placement.groups.values()]
        raise ValueError(f"cannot list {what!r}: choose nodes, actors or placement_groups")

    def stop_cluster(self) -> None:
        for node_id in self.nodes:
            conn = self.worker.conns.get(node_id)
            if conn is not None:
                conn.send(p.Shutdown("the cluster was stopped"))
        if self.worker.on_head_lost is not None:
            self.worker.loop.call_later(0.05, self.worker.on_head_lost)


__all__ = ["Head", "HeadHost", "LocalExecutor"]
