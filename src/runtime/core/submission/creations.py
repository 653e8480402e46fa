"""Actors this process creates, asked of the head together: the creations of one loop pass
(a driver's: at most the inbox's ``DRAIN_BATCH`` of them) go in one
:class:`~runtime.core.wire.protocol.CreateActors` request (each class's blob once),
and the head tells this process where each one runs once it is placed
(:class:`~runtime.core.wire.protocol.ActorsPlaced`), so its first calls go out without
asking the head where the actor is.

An actor's ``creating`` future (on its :class:`~.actor_state.ActorState`, awaited before its
calls are sent) resolves when that answer comes: the actor is placed (its location is set),
or failed; or when the connection to the head that the request went on has closed (checked
every :data:`PLACED_WAIT_S`), or a minute passed: then the calls ask the head, as for an
actor created elsewhere. Every method runs on the worker's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import msgspec

from ..common.exceptions import ProtocolError
from ..objects import serialization as ser
from ..wire import protocol as p
from ..wire.transport import Connection
from .actor_state import ActorState

#: How often a creator checks that the connection its placements come on is still open
#: (when it closed, its waiting calls ask the head themselves), and how many times at most
#: before they ask anyway (a bound on waiting for a message that may never come).
PLACED_WAIT_S = 10.0
PLACED_CHECKS = 6


class CreationsHost(Protocol):
    """What the creations need of the process's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def actors(self) -> dict[bytes, ActorState]: ...
    def actor_state(
        self, actor_id: bytes, location: p.ActorLocation | None = None
    ) -> ActorState: ...
    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task[Any]: ...
    async def head_request(self, msg: Any) -> Any: ...
    @property
    def head_conn(self) -> Connection | None: ...


class ActorCreations:
    """The creations of this process not yet answered (a part of the worker, on its loop)."""

    def __init__(self, host: CreationsHost) -> None:
        self.host = host
        self._batch: list[tuple[p.ActorSpec, bool]] = []
        #: Actors created here and not placed yet: the future their calls wait on.
        self.waiting: dict[bytes, asyncio.Future[None]] = {}

    def add(self, spec: p.ActorSpec, get_if_exists: bool) -> None:
        """Ask the head to create this actor (with the others of this loop pass)."""
        state = self.host.actor_state(spec.actor_id)
        created: asyncio.Future[None] = self.host.loop.create_future()
        state.creating = created
        state.args_refs = spec.args.refs
        self.waiting[spec.actor_id] = created
        if not self._batch:
            # The request goes at this task's first step, queued now: after the creations
            # of this loop pass, and before any later request about these actors (a kill).
            self.host.spawn(self._send())
        self._batch.append((spec, get_if_exists))

    async def _send(self) -> None:
        batch, self._batch = self._batch, []
        blobs: dict[bytes, bytes] = {}
        for spec, _ in batch:
            if spec.cls_id not in blobs:
                blobs[spec.cls_id] = spec.cls_blob
            spec.cls_blob = b""  # sent once, in blobs
        msg = p.CreateActors(0, [s for s, _ in batch], blobs, [g for _, g in batch])
        try:
            answers = await self.host.head_request(msg)
            if not isinstance(answers, list) or len(answers) != len(batch):
                raise ProtocolError("the head's answer to CreateActors does not match")
        except Exception as exc:
            for spec, _ in batch:
                self._failed(spec, exc)
            return
        pending = []
        for (spec, _), answer in zip(batch, answers, strict=True):
            if isinstance(answer, dict):
                try:
                    p.unwrap_reply(
                        p.Reply(0, error=str(answer.get("error")),
                                error_type=str(answer.get("type")), code=int(answer.get("code", 0)))
                    )  # fmt: skip
                except Exception as exc:
                    self._failed(spec, exc)
                continue
            loc = msgspec.convert(answer, p.ActorLocation)
            if loc.actor_id != spec.actor_id:  # get_if_exists found another actor
                self.host.actor_state(spec.actor_id).actor_id = loc.actor_id
                self._done(spec.actor_id)
            elif loc.state != "PENDING":
                self._placed(loc)
            else:
                pending.append(spec.actor_id)
        if pending:
            self.host.loop.call_later(
                PLACED_WAIT_S, self._check, pending, self.host.head_conn, PLACED_CHECKS
            )

    def on_placed(self, msg: p.ActorsPlaced) -> None:
        """The head says where actors created here now are."""
        for loc in msg.locations:
            self._placed(loc)

    def _placed(self, loc: p.ActorLocation) -> None:
        state = self.host.actors.get(loc.actor_id)
        if state is not None and state.location is None and state.lost_restarts < 0:
            state.location = loc
        self._done(loc.actor_id)

    def _failed(self, spec: p.ActorSpec, exc: BaseException) -> None:
        self.host.actor_state(spec.actor_id).dead = ser.error_value(
            exc, f"{spec.class_name}.remote"
        )
        self._done(spec.actor_id)

    def _done(self, actor_id: bytes) -> None:
        fut = self.waiting.pop(actor_id, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _check(self, actor_ids: list[bytes], conn: Connection | None, checks: int) -> None:
        """The head tells every placement (or death) of a new actor on the connection the
        request went on: while that one is open, still waiting means still PENDING (100,000
        actors take a while to place). Once it closed (a placement may have been lost with
        it), or after ``PLACED_CHECKS`` checks, the calls ask the head (GetActor waits while
        the actor is PENDING)."""
        left = [a for a in actor_ids if a in self.waiting]
        if not left:
            return
        if checks > 1 and conn is self.host.head_conn and (conn is None or not conn.closed):
            self.host.loop.call_later(PLACED_WAIT_S, self._check, left, conn, checks - 1)
            return
        for actor_id in left:
            self._done(actor_id)


__all__ = ["PLACED_CHECKS", "PLACED_WAIT_S", "ActorCreations"]
