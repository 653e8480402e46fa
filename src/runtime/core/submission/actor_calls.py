"""Calling actors: the I/O shell of :class:`~.actor_state.ActorState`.

What happens to an actor's calls (queued while it is located, sent in each caller's order,
sent again in order after a restart, or failed) is decided by the state machine in
:mod:`.actor_state`, which does no I/O. :class:`ActorCaller` feeds it events and does what it
says: it asks the head where the actor is, connects, sends, resolves failed calls' results.
It is a part the worker holds (:mod:`runtime.core.process.worker`); it sees the worker
through :class:`CallerHost`. Every method runs on the worker's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import msgspec

from ..common.exceptions import ActorDiedError, NodeDiedError, RuntimeBaseError
from ..objects.refs import ReferenceTable
from ..wire import protocol as p
from ..wire.gather import Gather, Link
from ..wire.transport import Connection
from .actor_state import DEAD, LOCATE, SEND, ActorState
from .pending import PendingTask
from .streaming import StreamState

#: How many placements in a row a caller tries to reach a restarting actor at.
_RELOCATE_TRIES = 5
#: The death cause of an actor stopped because no handle to it was left.
OUT_OF_SCOPE = "all of its handles went out of scope (unnamed, non-detached actor)"
log = logging.getLogger("runtime.actors")


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
        #: The calls of one loop pass to one peer go in one frame (``wire.gather``).
        self.gather = Gather(p.CallBatch)

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
        object_ids: Sequence[bytes],
        stream: StreamState | None = None,
        keep: Any = None,
    ) -> None:
        """Send an actor call, keeping this caller's order (loop). ``keep``: the handle's
        token, held until the call is answered (the actor stays in scope meanwhile)."""
        state = self.actors.get(msg.actor_id)
        if state is None:
            state = self.actor_state(msg.actor_id)
        conn = state.conn
        step = state.submit(
            self.tasks, msg, buffers, object_ids, stream, keep, conn is not None and not conn.closed
        )
        if step == SEND and conn is not None:
            if stream is not None:
                self.streams[msg.task_id] = stream
            self.gather.send(conn, msg, buffers)  # (self.send, inline: once per call)
            return
        if step == DEAD:
            err = state.dead
            assert err is not None
            for oid in object_ids:
                self.resolve(oid, err, [])
            if stream is not None:
                stream.on_done(err)
            return
        if stream is not None:
            self.streams[msg.task_id] = stream
        if step == LOCATE:
            self.spawn(self._resolve_actor(state))

    def send(self, conn: Link, msg: p.CallActor, buffers: list[memoryview]) -> None:
        """Send one call on the actor's connection (loop): gathered with the other calls of
        this loop pass to the same peer, after them, in order."""
        self.gather.send(conn, msg, buffers)

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
        if state.kill():
            self.fail_queued(state)

    async def _resolve_actor(self, state: ActorState) -> None:
        try:
            if state.creating is not None:
                await state.creating
            conn = None
            for _ in range(_RELOCATE_TRIES):
                conn = await self._locate_actor(state)
                if conn is not None or state.dead is not None:
                    break
            if conn is None or state.dead is not None:
                state.gave_up()  # every placement tried was unreachable (unless it is dead)
                self.fail_queued(state)
                return
            self.gather.flush()  # calls held for this peer go before the ones queued here
            for msg, buffers in state.connected(conn, self.tasks):
                self.send(conn, msg, buffers)
        except (OSError, ConnectionError, RuntimeBaseError) as exc:
            reason = (
                str(exc)
                if isinstance(exc, ActorDiedError)
                else f"the actor cannot be reached: {exc}"
            )
            state.die(reason)
            self.fail_queued(state)
        finally:
            state.resolving = False

    async def _locate_actor(self, state: ActorState) -> Connection | None:
        """Ask the head where the actor is (waiting while it is placed or restarted) and
        connect; None when that node cannot be reached (it may be restarting elsewhere)."""
        while state.needs_location():
            lost = state.lost_restarts
            raw = await self.head_request(p.GetActor(0, "", "", state.actor_id, True, lost))
            state.located(msgspec.convert(raw, p.ActorLocation), lost)
        loc = state.target()
        if loc is None:
            return None
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
        except (OSError, ConnectionError, NodeDiedError):
            if not state.unreachable(loc):
                raise
            return None
        return conn

    def resend_elsewhere(self, state: ActorState) -> None:
        """A call reached a node its actor had left for a restart; the state queued it again
        (:meth:`ActorState.unavailable`): locate the actor's next placement."""
        if state.want_locate():
            self.spawn(self._resolve_actor(state))

    def actor_node_lost(self, state: ActorState, peer: str) -> set[bytes]:
        """The node hosting an actor we call died. Returns the calls that go again (once it
        restarts elsewhere); the others in flight fail."""
        # Under the write lock of the actor's connection: a call sent from another thread
        # (submission.direct) is recorded before this or sees the connection gone.
        with getattr(state.conn, "wlock", None) or contextlib.nullcontext():
            again = state.node_lost(peer, self.tasks)
        if state.want_locate():
            self.spawn(self._resolve_actor(state))
        return again

    def fail_queued(self, state: ActorState) -> None:
        """The actor is dead (``state.dead``): its queued calls fail."""
        err = state.dead
        assert err is not None
        for task in state.drop_queue(self.tasks):
            for oid in task.object_ids:
                self.resolve(oid, err, [])
            if task.stream is not None:
                task.stream.on_done(err)
