"""The actor directory the head keeps: records, names, placement of pending actors,
restarts and deaths, lookups that wait for an actor to be created or restarted.

An actor no node has room for waits as PENDING (placed when a node reports room or joins),
with a warning to its creator after :func:`~.waiting.warn_after` seconds naming what it waits
for. Only a new actor that no live node could ever hold (its shape, not its load) fails, after
:func:`~.records.infeasible_after` seconds (nodes may still be joining): with InfeasibleError,
as a placement group does. A restart never fails that way: the node it had is gone, and
another like it may join, so it waits (as Ray's actors do).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from typing import Any

import msgspec

from ..common.errors import ErrorCode, error_item
from ..common.exceptions import ActorDiedError, InfeasibleError, RuntimeBaseError
from ..objects.serialization import system_error_value
from ..scheduling.scheduler import (
    fits,
    pick_actor_node,
)
from ..wire import protocol as p
from .head_store import StoredActor
from .records import (
    ALIVE,
    ANNOUNCE_S,
    DEAD,
    DEAD_ACTORS_KEPT,
    PENDING,
    REMOVED,
    RETRY_S,
    ActorRecord,
    HeadCore,
    HeadHost,
    affinity,
    in_group,
    infeasible_after,
)
from .waiting import Waiting

#: Bound on the ids remembered as aliases of an existing named actor (oldest forgotten).
MAX_ALIASES = 10_000
#: How many pending actors the head places at once: each node they go to gets one
#: CreateActors for its share, and creates them concurrently with the other nodes.
PLACE_TOGETHER = 256
#: How many such batches are out at once.
PLACE_IN_FLIGHT = 4

log = logging.getLogger("runtime.head")


class ActorDirectory:
    """The head's actors (a part of :class:`~runtime.core.control.head.Head`)."""

    def __init__(self, head: HeadCore) -> None:
        self.head = head
        self.worker: HeadHost = head.worker
        self.actors: dict[bytes, ActorRecord] = {}
        self.dead_order: deque[bytes] = deque()  # dead actors, oldest first
        self.names: dict[tuple[str, str], bytes] = {}
        self.pending: deque[bytes] = deque()
        #: Lookups of actor ids whose creation request has not arrived yet.
        self.announced: dict[bytes, list[asyncio.Future[None]]] = {}
        #: Ids made for a named actor that ``get_if_exists`` found already: id -> its id.
        self.aliases: dict[bytes, bytes] = {}
        #: Actors waiting for a node with room, and since when.
        self.waiting = Waiting(self.worker.loop, head.warn)
        #: Placement group actors being created now, each on its own (see place_alone).
        self.placing: set[bytes] = set()
        #: Locations of new actors that left PENDING, to tell their creators (by creator),
        #: sent once per loop iteration (see _announce).
        self._placed: dict[str, list[p.ActorLocation]] = {}

    def create(self, spec: p.ActorSpec, get_if_exists: bool) -> Any:
        known = self.actors.get(spec.actor_id)
        if known is not None:  # the same request again (its reply was lost): one actor
            return known.location()
        if spec.name:
            key = (spec.namespace, spec.name)
            existing = self.names.get(key)
            if existing is not None:
                if get_if_exists:
                    # The asker may already have handed out a handle with the id it made
                    # (an actor created on its loop asks in the background): that id now
                    # names the existing actor.
                    self.aliases[spec.actor_id] = existing
                    while len(self.aliases) > MAX_ALIASES:
                        del self.aliases[next(iter(self.aliases))]
                    for fut in self.announced.pop(spec.actor_id, []):
                        if not fut.done():
                            fut.set_result(None)
                    return self.actors[existing].location()
                raise ValueError(
                    f"an actor named {spec.name!r} already exists in namespace {spec.namespace!r}"
                    " (use get_if_exists=True to get it)"
                )
        group_id, index = in_group(spec.strategy)
        if group_id is not None:
            group = self.head.placement.groups.get(group_id)
            if group is None or group.state == REMOVED:
                raise ValueError(f"placement group {group_id.hex()} does not exist (removed?)")
            bundles = group.spec.bundles
            if index >= len(bundles):
                raise ValueError(
                    f"placement_group_bundle_index {index} is out of range: the group has "
                    f"{len(bundles)} bundles"
                )
            candidates = bundles if index < 0 else [bundles[index]]
            if not any(fits(spec.resources, b) for b in candidates):
                raise InfeasibleError(
                    f"actor {spec.class_name} asks for {dict(spec.resources)}, more than its "
                    "placement group bundle holds"
                )
        # No live node can hold it at all: it waits a while for one to join (try_place).
        record = ActorRecord(spec)
        self.actors[spec.actor_id] = record
        self._persist(record)
        for fut in self.announced.pop(spec.actor_id, []):
            if not fut.done():
                fut.set_result(None)
        if spec.name:
            self.names[(spec.namespace, spec.name)] = spec.actor_id
        self.pending.append(spec.actor_id)
        self.head.place_pending()
        return record.location()

    def create_many(self, msg: p.CreateActors) -> list[Any]:
        """CreateActors: :meth:`create` for each spec; its location, or the error it raised
        (as :func:`~..common.errors.error_item`), in order."""
        out: list[Any] = []
        flags = msg.get_if_exists
        for i, spec in enumerate(msg.specs):
            try:
                if not spec.cls_blob:  # its class's blob came once for all (shared here)
                    spec.cls_blob = msg.blobs[spec.cls_id]
                out.append(self.create(spec, i < len(flags) and flags[i]))
            except (RuntimeBaseError, ValueError, KeyError, TypeError) as exc:
                out.append(error_item(exc))
        return out

    def alive_counts(self) -> dict[str, int]:
        """Live actors per node (what placement spreads by)."""
        counts: dict[str, int] = {}
        for r in self.actors.values():
            if r.state == ALIVE:
                counts[r.node_id] = counts.get(r.node_id, 0) + 1
        return counts

    async def try_place(self, record: ActorRecord, counts: dict[str, int] | None = None) -> bool:
        """Place one pending actor. ``counts``: live actors per node, shared by the actors
        placed together (each adds itself before it awaits its node), else counted here."""
        spec = record.spec
        group_id, index = in_group(spec.strategy)
        if group_id is not None:
            return await self._try_place_in_group(record, group_id, index)
        if counts is None:
            counts = self.alive_counts()
        node_id, feasible = pick_actor_node(
            self.head.nodes.values(), spec.resources, counts, **affinity(spec)
        )
        if node_id is None:
            self._wait(record, feasible)
            return False
        counts[node_id] = counts.get(node_id, 0) + 1
        self.waiting.done(spec.actor_id)
        return await self._create_on(record, node_id)

    async def place_all(self) -> None:
        """Place the pending actors, PLACE_TOGETHER at a time with up to PLACE_IN_FLIGHT
        batches out at once (their nodes work while the head picks the next), until none
        can be (the head's placer; a resource report or a new node starts it again)."""
        # Counted once per call (each placement adds itself), not per pass: 100,000 actors
        # arriving while others are placed would make every pass walk all of them.
        counts = self.alive_counts()
        while self.pending:
            progress: list[bool] = []
            out: set[asyncio.Future[None]] = set()
            for _ in range(0, len(self.pending), PLACE_TOGETHER):
                batch: list[ActorRecord] = []
                while self.pending and len(batch) < PLACE_TOGETHER:
                    record = self.actors.get(self.pending.popleft())
                    if record is None or record.state != PENDING:
                        continue
                    if not self.place_alone(record):  # a group's: on its own
                        batch.append(record)
                if len(out) >= PLACE_IN_FLIGHT:
                    done, out = await asyncio.wait(out, return_when=asyncio.FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
                # Nodes are picked now, in order (each counts itself before the next).
                out.add(asyncio.ensure_future(self._place_some(batch, counts, progress)))
            if out:
                for fut in (await asyncio.wait(out))[0]:
                    fut.result()
            if not progress:
                return

    async def _place_some(
        self, batch: list[ActorRecord], counts: dict[str, int], progress: list[bool]
    ) -> None:
        placed = await self.place_batch(batch, counts)
        for record, ok in zip(batch, placed, strict=True):
            if ok:
                progress.append(True)
            elif record.state == PENDING:
                self.pending.append(record.spec.actor_id)

    async def place_batch(self, batch: list[ActorRecord], counts: dict[str, int]) -> list[bool]:
        """Place actors (none of a placement group): pick each one's node in order (each counts
        itself, so spreading sees the ones before it), then one CreateActors per node, the
        nodes concurrently. True for each placed (or dead for good)."""
        by_node: dict[str, list[ActorRecord]] = {}
        nodes = self.head.nodes.values()
        for record in batch:
            spec = record.spec
            node_id, feasible = pick_actor_node(nodes, spec.resources, counts, **affinity(spec))
            if node_id is None:
                self._wait(record, feasible)
                continue
            counts[node_id] = counts.get(node_id, 0) + 1
            self.waiting.done(spec.actor_id)
            by_node.setdefault(node_id, []).append(record)
        done: set[bytes] = set()
        for placed in await asyncio.gather(
            *(self._create_many_on(node_id, records) for node_id, records in by_node.items())
        ):
            done.update(placed)
        return [r.spec.actor_id in done for r in batch]

    async def _create_many_on(self, node_id: str, records: list[ActorRecord]) -> list[bytes]:
        """Start ``records`` on one node with one request; the ids of those placed."""
        info = self.head.nodes[node_id]
        specs = [r.spec for r in records]
        try:
            if node_id == self.worker.peer_id:
                assert self.worker.executor is not None
                answers = self.worker.executor.create_actors(p.CreateActors(0, specs))
                if inspect.isawaitable(answers):
                    answers = await answers
            else:
                blobs: dict[bytes, bytes] = {}
                for spec in specs:
                    blobs.setdefault(spec.cls_id, spec.cls_blob)
                light = [msgspec.structs.replace(s, cls_blob=b"") for s in specs]
                conn = await self.worker.connect_peer(node_id, info.address)
                reply = await self.worker.request(conn, p.CreateActors(0, light, blobs))
                answers = p.unwrap_reply(reply)
            if not isinstance(answers, list) or len(answers) != len(records):
                raise ValueError("the node's answer to CreateActors does not match")
        except Exception as exc:  # no room after all, or the node is gone: try again soon
            log.debug("placing %d actors on %s failed: %s", len(records), node_id, exc)
            self.worker.loop.call_later(RETRY_S, self.head.place_pending)
            return []
        placed = []
        for record, answer in zip(records, answers, strict=True):
            if isinstance(answer, dict):  # that one failed
                if answer.get("code") == ErrorCode.ACTOR_DIED:  # its process failed
                    self._failed(record, str(answer.get("error")))
                    placed.append(record.spec.actor_id)
                else:
                    self.worker.loop.call_later(RETRY_S, self.head.place_pending)
                continue
            where = answer if isinstance(answer, list) else None
            self._started(record, node_id, info.address, where)
            placed.append(record.spec.actor_id)
        return placed

    def place_alone(self, record: ActorRecord) -> bool:
        """Place an actor of a placement group in a task of its own and return True (False
        for any other actor). Its bundle fixes its node, so nothing is counted; and a slow
        creation (a dedicated process importing torch, seconds) holds up no other actor: the
        ranks of a Train group start side by side, not one after another."""
        if in_group(record.spec.strategy)[0] is None:
            return False
        actor_id = record.spec.actor_id
        if actor_id not in self.placing:  # else in flight: it comes back if it fails
            self.placing.add(actor_id)
            self.worker.spawn(self._place_alone(record))
        return True

    async def _place_alone(self, record: ActorRecord) -> None:
        try:
            placed = await self.try_place(record)
        finally:
            self.placing.discard(record.spec.actor_id)
        if not placed and record.state == PENDING:
            self.pending.append(record.spec.actor_id)  # retried when the head places again
        elif placed and self.pending:
            self.head.place_pending()

    def _wait(self, record: ActorRecord, feasible: bool) -> None:
        """No node has room for the actor now: it stays PENDING. A new actor that no live
        node could ever hold fails after infeasible_after(); a restart waits for good."""
        actor_id = record.spec.actor_id
        first = actor_id not in self.waiting.since
        since = self.waiting.start(actor_id, record.spec.owner_id, lambda: self._why(actor_id))
        now = time.monotonic()
        if not feasible and record.num_restarts == 0 and first:
            self.worker.loop.call_later(infeasible_after() + 0.05, self.head.place_pending)
        if not feasible and record.num_restarts == 0 and now - since >= infeasible_after():
            spec = record.spec
            why = (
                f"no node in the cluster can ever host actor {spec.class_name} with resources "
                f"{dict(spec.resources)} (none joined within {infeasible_after():g} s); start a "
                "node with those resources or lower the request"
            )
            record.death_error = system_error_value(InfeasibleError, why)
            self.mark_dead(record, why)

    def _why(self, actor_id: bytes) -> str | None:
        """What a waiting actor waits for (None: it no longer waits)."""
        record = self.actors.get(actor_id)
        if record is None or record.state != PENDING:
            return None
        spec = record.spec
        nodes = self.head.nodes.values()
        _, feasible = pick_actor_node(nodes, spec.resources, {}, **affinity(spec))
        what = "restart of actor" if record.num_restarts else "actor"
        why = (
            "every node that could hold it is busy"
            if feasible
            else "no live node can hold it; start one with those resources"
        )
        return f"the {what} {spec.class_name} ({actor_id.hex()}) waits for a node with " + (
            f"{dict(spec.resources)}: {why}"
        )

    async def _create_on(self, record: ActorRecord, node_id: str, retry: bool = True) -> bool:
        spec = record.spec
        info = self.head.nodes[node_id]
        address = info.address
        try:
            if node_id == self.worker.peer_id:
                assert self.worker.executor is not None
                where = self.worker.executor.create_actor(spec)
                if inspect.isawaitable(where):
                    where = await where
            else:
                conn = await self.worker.connect_peer(node_id, info.address)
                where = p.unwrap_reply(await self.worker.request(conn, p.CreateActor(0, spec)))
        except ActorDiedError as exc:  # the node cannot start it at all (its process failed)
            self._failed(record, str(exc))
            return True
        except Exception as exc:  # no room after all, or the node is gone
            # The view was stale; the node's next report corrects it. Try again shortly.
            log.debug("placing %s on %s failed: %s", spec.class_name, node_id, exc)
            if retry:
                self.worker.loop.call_later(RETRY_S, self.head.place_pending)
            return False
        self._started(record, node_id, address, where)
        return True

    def _failed(self, record: ActorRecord, why: str) -> None:
        """Its node could not start it at all (the process for it failed): dead for good."""
        record.death_error = system_error_value(ActorDiedError, why)
        self.mark_dead(record, why)

    def _started(self, record: ActorRecord, node_id: str, address: str, where: Any) -> None:
        """Its node started it (``where``: [node id, address] of a process of its own)."""
        if isinstance(where, list):
            node_id, address = str(where[0]), str(where[1])
        if record.state != PENDING:  # killed while being placed
            self.stop_on_node(node_id, record.spec.actor_id)
            return
        # The node reports what it has left (absolute figures); the view is not adjusted here,
        # as a report may already have overtaken this reply.
        record.state, record.node_id, record.address = ALIVE, node_id, address
        self._persist(record)
        self.wake(record)
        self._announce(record)

    def _announce(self, record: ActorRecord) -> None:
        """Tell a new actor's creator where it is now (its first placement, or its death
        before one), with the others of this loop iteration: its calls need not ask."""
        if record.num_restarts:
            return
        if not self._placed:
            self.worker.loop.call_soon(self._send_placed)
        self._placed.setdefault(record.spec.owner_id, []).append(record.location())

    def _send_placed(self) -> None:
        placed, self._placed = self._placed, {}
        for owner, locations in placed.items():
            msg = p.ActorsPlaced(locations)
            if owner == self.worker.peer_id:
                self.worker.creations.on_placed(msg)
            elif (conn := self.worker.conns.get(owner)) is not None and not conn.closed:
                conn.send(msg)

    async def _try_place_in_group(self, record: ActorRecord, group_id: bytes, index: int) -> bool:
        group = self.head.placement.groups.get(group_id)
        if group is None or group.state == REMOVED:
            self.mark_dead(record, "its placement group was removed")
            return False
        if group.state != ALIVE:
            return False  # placed once the group is
        if index >= 0:
            nodes = [group.nodes[index]]
        else:  # any bundle: the nodes of the group in bundle order
            nodes = list(dict.fromkeys(group.nodes[i] for i in sorted(group.nodes)))
        for node_id in nodes:
            if node_id in self.head.nodes and await self._create_on(record, node_id, retry=False):
                return True
            if record.state != PENDING:
                return True
        self.worker.loop.call_later(RETRY_S, self.head.place_pending)
        return False

    async def get(
        self, name: str, namespace: str, actor_id: bytes, wait: bool, after_restarts: int = -1
    ) -> Any:
        if actor_id:
            actor_id = self.aliases.get(actor_id, actor_id)
            record = self.actors.get(actor_id)
            if record is None and wait:
                # A handle can reach another process before its creator's request reaches
                # us (they travel on different connections): wait for it, within a bound.
                fut_created: asyncio.Future[None] = self.worker.loop.create_future()
                self.announced.setdefault(actor_id, []).append(fut_created)
                try:
                    async with asyncio.timeout(ANNOUNCE_S):
                        await fut_created
                except TimeoutError:
                    pass
                finally:
                    waiting = self.announced.get(actor_id)
                    if waiting is not None and fut_created in waiting:
                        waiting.remove(fut_created)
                        if not waiting:
                            del self.announced[actor_id]
                actor_id = self.aliases.get(actor_id, actor_id)
                record = self.actors.get(actor_id)
        else:
            aid = self.names.get((namespace, name))
            record = self.actors.get(aid) if aid is not None else None
        if record is None:
            what = f"named {name!r} in namespace {namespace!r}" if name else actor_id.hex()
            raise ValueError(f"no actor {what}")
        try:
            async with asyncio.timeout(ANNOUNCE_S if after_restarts >= 0 else None):
                while (wait and record.state == PENDING) or (
                    record.state == ALIVE and record.num_restarts <= after_restarts
                ):
                    fut: asyncio.Future[None] = self.worker.loop.create_future()
                    record.waiters.append(fut)
                    await fut
        except TimeoutError:
            pass  # the caller sees the stale placement and gives up
        return record.location()

    def wake(self, record: ActorRecord) -> None:
        waiters, record.waiters = record.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def mark_dead(self, record: ActorRecord, reason: str) -> None:
        self.waiting.done(record.spec.actor_id)
        if record.state != DEAD:
            self.dead_order.append(record.spec.actor_id)
        never_placed = record.state == PENDING
        record.state, record.death_cause = DEAD, reason
        if never_placed:
            self._announce(record)
        self._persist(record)
        s = record.spec
        if s.name and self.names.get((s.namespace, s.name)) == s.actor_id:
            del self.names[(s.namespace, s.name)]
        self.wake(record)
        while len(self.dead_order) > DEAD_ACTORS_KEPT:
            old = self.dead_order.popleft()
            gone = self.actors.get(old)
            if gone is not None and gone.state == DEAD:
                del self.actors[old]
                if self.head.store is not None:
                    self.head.store.delete_actor(old)

    def restart(self, record: ActorRecord, reason: str) -> None:
        """Place the actor again (its constructor runs anew on a live node)."""
        log.info("restarting actor %s: %s", record.spec.class_name, reason)
        record.num_restarts += 1
        record.state, record.node_id, record.address = PENDING, "", ""
        self._persist(record)
        self.wake(record)
        self.pending.append(record.spec.actor_id)
        self.head.place_pending()

    def kill(self, record: ActorRecord, reason: str) -> None:
        node_id = record.node_id
        was_alive = record.state == ALIVE
        self.mark_dead(record, reason)
        if was_alive:
            self.stop_on_node(node_id, record.spec.actor_id)

    def stop_on_node(self, node_id: str, actor_id: bytes, *, restarting: bool = False) -> None:
        if node_id == self.worker.peer_id:
            if self.worker.executor is not None:
                self.worker.executor.kill_actor(actor_id, "the actor was killed", restarting)
            return
        conn = self.worker.conns.get(node_id)
        if conn is not None:
            conn.send(p.KillActor(0, actor_id, no_restart=not restarting))

    def _persist(self, r: ActorRecord) -> None:
        if self.head.store is not None:
            self.head.store.save_actor(
                StoredActor(r.spec, r.state, r.node_id, r.address, r.num_restarts, r.death_cause)
            )
