"""Calling actors: where each actor is, the calls waiting for it, and what happens to the
calls in flight when its node dies (retried in order after a restart, or failed).

:class:`ActorCaller` is a part the worker holds (:mod:`runtime.core.process.worker`); it sees
the worker through :class:`CallerHost`. Every method runs on the worker's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from ..common.errors import ErrorCode
from ..common.exceptions import ActorDiedError, NodeDiedError, RuntimeBaseError
from ..objects import serialization as ser
from ..objects.refs import ReferenceTable
from ..wire import protocol as p
from ..wire.transport import Connection
from .pending import PendingTask
from .streaming import StreamState

#: How many placements in a row a caller tries to reach a restarting actor at.
_RELOCATE_TRIES = 5
#: The death cause of an actor stopped because no handle to it was left.
OUT_OF_SCOPE = "all of its handles went out of scope (unnamed, non-detached actor)"
log = logging.getLogger("runtime.actors")


@dataclass(slots=True)
class ActorState:
    """What this process knows about an actor it calls: where it is, calls waiting to go."""

    actor_id: bytes
    location: p.ActorLocation | None = None
    conn: Connection | None = None
    queue: list[tuple[p.CallActor, list[memoryview]]] = field(default_factory=list)
    resolving: bool = False
    dead: p.Value | None = None  # why the actor is dead, as the error its calls get
    creating: asyncio.Future[None] | None = None
    #: Calls sent and not answered, kept while the actor's calls may be retried (in order).
    inflight: dict[bytes, tuple[p.CallActor, list[memoryview], int]] = field(default_factory=dict)
    #: Retries left of calls that were already re-sent once (else max_task_retries).
    retries_left: dict[bytes, int] = field(default_factory=dict)
    #: The restart count of the incarnation we lost: the next one must have a higher one.
    lost_restarts: int = -1
    #: Refs among the constructor's arguments, pinned by the creator while the actor may
    #: (re)start; released once it is out of scope.
    args_refs: list[tuple[bytes, str, str]] = field(default_factory=list)

    def track(self, msg: p.CallActor, buffers: list[memoryview]) -> None:
        """Keep a sent call (and the incarnation it went to) while the actor may restart."""
        loc = self.location
        if loc is not None and loc.max_restarts != 0:
            self.inflight[msg.task_id] = (msg, buffers, loc.num_restarts)

    def requeue(self, msgs: list[tuple[p.CallActor, list[memoryview]]]) -> None:
        """Put calls to send again back in the queue, in submission order."""
        merged = sorted([*msgs, *self.queue], key=lambda item: item[0].task_id)
        self.queue[:] = merged


class CallerHost(Protocol):
    """What the actor caller needs of the process's worker (the worker is one)."""

    @property
    def refs(self) -> ReferenceTable: ...
    @property
    def tasks(self) -> dict[bytes, PendingTask]: ...
    @property
    def streams(self) -> dict[bytes, StreamState]: ...
    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task[Any]: ...
    async def head_request(self, msg: Any) -> Any: ...
    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection: ...
    def resolve(self, oid: bytes, value: p.Value | p.Located, buffers: list[Any]) -> None: ...


class ActorCaller:
    """Sends actor calls in each caller's order and follows actors that restart (a part of
    the worker, on its loop)."""

    def __init__(self, host: CallerHost) -> None:
        self.actors: dict[bytes, ActorState] = {}
        # The host's tables and methods, bound once (the per-call path looks up nothing more).
        self.refs = host.refs
        self.tasks = host.tasks
        self.streams = host.streams
        self.spawn = host.spawn
        self.head_request = host.head_request
        self.connect_peer = host.connect_peer
        self.resolve = host.resolve

    # --- actors ------------------------------------------------------------------------------

    def actor_state(self, actor_id: bytes, location: p.ActorLocation | None = None) -> ActorState:
        state = self.actors.get(actor_id)
        if state is None:
            state = self.actors[actor_id] = ActorState(actor_id, location)
        elif location is not None and state.location is None:
            state.location = location
        return state

    def call_actor(
        self,
        msg: p.CallActor,
        buffers: list[memoryview],
        object_ids: list[bytes],
        stream: StreamState | None = None,
        keep: Any = None,
    ) -> None:
        """Send an actor call, keeping this caller's order (loop). ``keep``: the handle's
        token, held until the call is answered (the actor stays in scope meanwhile)."""
        state = self.actor_state(msg.actor_id)
        if state.dead is not None:
            err = state.dead
            for oid in object_ids:
                self.resolve(oid, err, [])
            if stream is not None:
                stream.on_done(err)
            return
        node_id = state.location.node_id if state.location is not None else ""
        self.tasks[msg.task_id] = PendingTask(
            object_ids, node_id, msg.method, msg.actor_id, stream=stream, keep=keep
        )
        if stream is not None:
            self.streams[msg.task_id] = stream
        conn = state.conn
        if conn is not None and not conn.closed and not state.queue:
            msg.actor_id = state.actor_id
            if stream is None:
                state.track(msg, buffers)
            conn.send(msg, buffers)
            return
        state.queue.append((msg, buffers))
        if not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))

    def actor_out_of_scope(self, actor_id: bytes) -> None:
        """No handle of an actor this process created is left anywhere, and no call to it
        is in flight: stop it, as Ray does (loop). Named and detached actors have no token."""
        state = self.actors.pop(actor_id, None)
        self.spawn(self._stop_unreferenced(actor_id, state))

    async def _stop_unreferenced(self, actor_id: bytes, state: ActorState | None) -> None:
        if state is not None:
            if state.creating is not None:
                await state.creating  # the head learns of the actor before it is stopped
            actor_id = state.actor_id
        if state is None or state.dead is None:
            try:
                await self.head_request(p.KillActor(0, actor_id, True, OUT_OF_SCOPE))
            except (OSError, ConnectionError, RuntimeBaseError, ValueError) as exc:
                log.debug("could not stop out-of-scope actor %s: %s", actor_id.hex(), exc)
        if state is not None and state.args_refs:
            self.refs.unpin(state.args_refs)

    def actor_killed(self, actor_id: bytes) -> None:
        """``runtime.kill(no_restart=True)`` from this process (loop): its later calls fail
        at once, rather than racing the head's kill to the actor's node."""
        state = self.actor_state(actor_id)
        if state.dead is None:
            state.dead = ser.system_error_value(
                ActorDiedError, "the actor was killed with runtime.kill"
            )
            self.fail_queued(state, state.dead)

    async def _resolve_actor(self, state: ActorState) -> None:
        try:
            if state.creating is not None:
                await state.creating
            conn = None
            for _ in range(_RELOCATE_TRIES):
                conn = await self._locate_actor(state)
                if conn is not None or state.dead is not None:
                    break
            if state.dead is None and conn is None:
                state.dead = ser.system_error_value(
                    ActorDiedError, "the actor could not be reached after its restarts"
                )
            if state.dead is not None:
                self.fail_queued(state, state.dead)
                return
            assert conn is not None and state.location is not None
            state.conn = conn
            queue, state.queue = state.queue, []
            for msg, buffers in queue:
                msg.actor_id = state.actor_id
                task = self.tasks.get(msg.task_id)
                if task is None:
                    continue  # cancelled while it waited
                task.node_id = state.location.node_id
                if task.stream is None:
                    state.track(msg, buffers)
                conn.send(msg, buffers)
        except (OSError, ConnectionError, RuntimeBaseError) as exc:
            reason = (
                str(exc)
                if isinstance(exc, ActorDiedError)
                else f"the actor cannot be reached: {exc}"
            )
            state.dead = ser.system_error_value(ActorDiedError, reason)
            self.fail_queued(state, state.dead)
        finally:
            state.resolving = False

    async def _locate_actor(self, state: ActorState) -> Connection | None:
        """Ask the head where the actor is (waiting while it is placed or restarted) and
        connect; None when that node cannot be reached (it may be restarting elsewhere)."""
        while state.dead is None and (
            state.location is None
            or state.location.state == "PENDING"
            or (state.location.num_restarts <= state.lost_restarts
                and state.location.state != "DEAD")  # dead for good: no restart to wait for
        ):  # fmt: skip
            lost = state.lost_restarts
            raw = await self.head_request(p.GetActor(0, "", "", state.actor_id, True, lost))
            state.location = msgspec.convert(raw, p.ActorLocation)
            state.actor_id = state.location.actor_id  # an alias (get_if_exists) resolved
            if state.location.state == "ALIVE" and state.location.num_restarts <= lost:
                state.dead = ser.system_error_value(
                    ActorDiedError, "the actor was lost and did not come back in time"
                )
        loc = state.location
        if state.dead is None and loc is not None and loc.state == "DEAD":
            state.dead = loc.death_error or ser.system_error_value(
                ActorDiedError, loc.death_cause or "the actor is dead"
            )
        if state.dead is not None:
            return None
        assert loc is not None
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
        except (OSError, ConnectionError, NodeDiedError):
            if loc.max_restarts == 0:
                raise
            state.lost_restarts, state.location = loc.num_restarts, None
            return None
        return conn

    def resend_elsewhere(self, task: PendingTask, done: p.TaskDone) -> bool:
        """A call reached a node its actor had left for a restart: it did not run, so send
        it again to the actor's next placement."""
        assert done.error is not None and task.actor_id is not None
        if ser.system_error_code(done.error) != ErrorCode.ACTOR_UNAVAILABLE:
            return False
        state = self.actors.get(task.actor_id)
        entry = state.inflight.pop(done.task_id, None) if state is not None else None
        if state is None or entry is None:
            return False
        msg, buffers, incarnation = entry
        self.tasks[done.task_id] = task
        state.requeue([(msg, buffers)])
        loc = state.location
        if loc is not None and loc.num_restarts <= incarnation:
            state.location, state.conn, state.lost_restarts = None, None, incarnation
        if not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))
        return True

    def actor_node_lost(self, state: ActorState, peer: str) -> set[bytes]:
        """The node hosting an actor we call died. Returns the calls that go again (once it
        restarts elsewhere); the others in flight fail."""
        loc = state.location
        state.conn = None
        if loc is None or loc.max_restarts == 0:
            state.dead = ser.system_error_value(ActorDiedError, f"the actor's node {peer} died")
            return set()
        # It restarts elsewhere: calls with retries left go again, first and in order.
        again: list[tuple[p.CallActor, list[memoryview]]] = []
        for task_id in sorted(state.inflight):  # ids grow with submission order
            msg, buffers, _ = state.inflight.pop(task_id)
            left = state.retries_left.pop(task_id, loc.max_task_retries)
            if left == 0 or task_id not in self.tasks:
                continue
            state.retries_left[task_id] = left - 1 if left > 0 else left
            again.append((msg, buffers))
        state.requeue(again)
        state.location, state.lost_restarts = None, loc.num_restarts
        if state.queue and not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))
        return {msg.task_id for msg, _ in again}

    def fail_queued(self, state: ActorState, err: p.Value) -> None:
        queue, state.queue = state.queue, []
        for msg, _ in queue:
            task = self.tasks.pop(msg.task_id, None)
            if task is not None:
                for oid in task.object_ids:
                    self.resolve(oid, err, [])
                if task.stream is not None:
                    task.stream.on_done(err)
