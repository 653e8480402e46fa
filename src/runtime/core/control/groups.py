"""The placement groups the head keeps: bundles reserved on nodes (all or none), placed
again when a node is lost, released when the group is removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ..common.exceptions import InfeasibleError
from ..scheduling.scheduler import (
    PG_STRATEGIES,
    bundles_feasible,
    place_bundles,
)
from ..wire import protocol as p
from .records import (
    ALIVE,
    DEAD,
    PENDING,
    REMOVED,
    RETRY_S,
    GroupRecord,
    HeadCore,
    HeadHost,
    in_group,
    infeasible_after,
)
from .waiting import Waiting

log = logging.getLogger("runtime.head")


class PlacementGroups:
    """The head's placement groups (a part of :class:`~runtime.core.control.head.Head`)."""

    def __init__(self, head: HeadCore) -> None:
        self.head = head
        self.worker: HeadHost = head.worker
        self.groups: dict[bytes, GroupRecord] = {}
        self.names: dict[tuple[str, str], bytes] = {}
        self.pending: deque[bytes] = deque()
        #: Groups waiting for room, and since when (their creators are warned after a while).
        self.waiting = Waiting(self.worker.loop, head.warn)

    def create(self, spec: p.PlacementGroupSpec) -> Any:
        if spec.strategy not in PG_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(PG_STRATEGIES)}")
        if spec.pg_id in self.groups:
            return True  # a retried request
        if spec.name:
            key = (spec.namespace, spec.name)
            if key in self.names:
                raise ValueError(f"a placement group named {spec.name!r} already exists")
        self.groups[spec.pg_id] = GroupRecord(spec)
        if bundles_feasible(self.head.nodes.values(), spec.bundles, spec.strategy) is not None:
            # Nodes may still be joining: give up only if it stays impossible for a while.
            self.worker.loop.call_later(infeasible_after(), self._fail_if_infeasible, spec.pg_id)
        self._persist(self.groups[spec.pg_id])
        if spec.name:
            self.names[(spec.namespace, spec.name)] = spec.pg_id
        self.pending.append(spec.pg_id)
        self.head.place_pending()
        return True

    def replace_lost_bundles(self, group: GroupRecord, lost: Callable[[str], bool]) -> None:
        """Place the group's bundles on lost nodes again; the rest stay where they run."""
        indices = [i for i, node_id in group.nodes.items() if lost(node_id)]
        if not indices:
            return
        for i in indices:
            del group.nodes[i]
        group.state = PENDING
        self._persist(group)
        self.pending.append(group.spec.pg_id)

    def _fail_if_infeasible(self, pg_id: bytes) -> None:
        group = self.groups.get(pg_id)
        if group is None or group.state != PENDING:
            return
        spec = group.spec
        why = bundles_feasible(self.head.nodes.values(), spec.bundles, spec.strategy)
        if why is None:
            return
        group.infeasible = True
        self.remove(
            group,
            f"placement group with bundles {spec.bundles} ({spec.strategy}) can never be "
            f"placed on this cluster: {why}",
        )

    async def try_place(self, group: GroupRecord) -> bool:
        spec = group.spec
        choice = place_bundles(self.head.nodes.values(), spec.bundles, spec.strategy, group.nodes)
        if choice is None:
            self.waiting.start(spec.pg_id, spec.owner_id, lambda: self._why(spec.pg_id))
            return False
        self.waiting.done(spec.pg_id)
        new = {i: n for i, n in choice.items() if i not in group.nodes}
        per_node: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for i, node_id in new.items():
            per_node.setdefault(node_id, []).append((i, spec.bundles[i]))
        reserved: list[str] = []
        ok = True
        for node_id, bundles in per_node.items():
            if await self.send_to_node(node_id, p.ReserveBundles(0, spec.pg_id, bundles)):
                reserved.append(node_id)
            else:
                ok = False
                break
        if not ok or group.state == REMOVED:
            for node_id in reserved:
                idx = [i for i, _ in per_node[node_id]]
                await self.send_to_node(node_id, p.ReleaseBundles(0, spec.pg_id, idx))
            if ok:  # removed while being placed
                return True
            self.worker.loop.call_later(RETRY_S, self.head.place_pending)
            return False
        group.nodes.update(new)
        group.state = ALIVE
        self._persist(group)
        self.wake(group)
        if self.head.directory.pending:
            self.head.place_pending()
        return True

    def _why(self, pg_id: bytes) -> str | None:
        """What a waiting group waits for (None: it no longer waits)."""
        group = self.groups.get(pg_id)
        if group is None or group.state != PENDING:
            return None
        s = group.spec
        left = [dict(b) for i, b in enumerate(s.bundles) if i not in group.nodes]
        return f"placement group {s.name or pg_id.hex()} ({s.strategy}) waits for room for {left}"

    async def send_to_node(self, node_id: str, msg: Any) -> bool:
        """A bundle request to one node; False when it refused or cannot be reached."""
        try:
            if node_id == self.worker.peer_id:
                assert self.worker.executor is not None
                self.worker.executor.on_bundles(msg)
                return True
            conn = await self.worker.connect_peer(node_id, self.head.nodes[node_id].address)
            p.unwrap_reply(await self.worker.request(conn, msg))
            return True
        except Exception as exc:
            level = logging.WARNING if isinstance(msg, p.ReleaseBundles) else logging.DEBUG
            log.log(level, "%s on %s failed: %s", type(msg).__name__, node_id, exc)
            return False

    def wake(self, group: GroupRecord) -> None:
        waiters, group.waiters = group.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait(self, pg_id: bytes, name: str, namespace: str) -> Any:
        if not pg_id:
            found = self.names.get((namespace, name))
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

    def remove(self, group: GroupRecord, reason: str) -> None:
        if group.state == REMOVED:
            return
        group.state, group.reason = REMOVED, reason
        self.waiting.done(group.spec.pg_id)
        self._persist(group)
        spec = group.spec
        if spec.name and self.names.get((spec.namespace, spec.name)) == spec.pg_id:
            del self.names[(spec.namespace, spec.name)]
        for record in list(self.head.directory.actors.values()):
            if record.state != DEAD and in_group(record.spec.strategy)[0] == spec.pg_id:
                self.head.directory.kill(record, f"its placement group was removed ({reason})")
        for node_id in set(group.nodes.values()):
            if node_id in self.head.nodes:
                self.worker.spawn(self._release_on(node_id, spec.pg_id))
        self.wake(group)

    async def _release_on(self, node_id: str, pg_id: bytes) -> None:
        """Give a removed group's bundles on ``node_id`` back, retrying a failed request a
        few times while the node lives (a release that is lost leaks the node's room)."""
        for attempt in range(4):
            if await self.send_to_node(node_id, p.ReleaseBundles(0, pg_id)):
                return
            if node_id not in self.head.nodes:
                return  # the node is gone: so are its bundles
            await asyncio.sleep(RETRY_S * 2**attempt)
        log.warning("could not release placement group %s on node %s", pg_id.hex(), node_id)

    def _persist(self, g: GroupRecord) -> None:
        if self.head.store is not None:
            self.head.store.save_group(g.spec, g.state, g.nodes, g.reason)
