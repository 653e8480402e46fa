"""The caller's direct path: ``.remote()`` on an actor writes its call from the calling thread.

A sequential caller (``get(a.m.remote())`` in a loop) used to hand each call to its runtime
loop, a thread wake-up and a GIL hand-over per call before the frame was even written. When
the call can go out at once, :func:`call_direct` records it as the loop would
(:meth:`~.actor_state.ActorState.submit` on its SEND branch: the pending task, the in-flight
entry kept for a resend after a restart) and seals and writes its frame from the calling
thread (:func:`runtime.core.wire.direct.send_direct`); the loop is not woken until the answer
arrives. Otherwise the call takes the loop's path, unchanged.

It goes direct only when nothing could be overtaken and nothing is left to decide:
- nothing this process's threads posted to the loop waits or runs (``LoopInbox.quiet``): the
  calls this thread made before, to this actor or not, have gone out or are queued in the
  actor's state;
- the actor is connected, nothing is queued for it, it is not being located, not dead, and
  its connection has nothing waiting to be written (checked under the connection's write
  lock, which the loop also holds while the actor's node is declared lost: a call recorded
  here is either seen by that, or sees the connection gone and takes the loop's path);
- this thread has blocked in ``get`` since its last call (or never called): a caller that
  blocks on each call goes direct; of the thousands of calls one sends before it waits
  (pipelining) only the first does, and the loop coalesces the rest into few writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..common.threads import LoopInbox
from ..wire import protocol as p
from ..wire.direct import NEVER, send_direct
from ..wire.transport import Connection
from .actor_calls import ActorCaller
from .pending import PendingTask
from .streaming import StreamState

#: Per thread: ``calls`` made since it last blocked in ``get``.
_thread = threading.local()


class DirectHost(Protocol):
    """What the direct path needs of the process's worker (the worker is one)."""

    @property
    def caller(self) -> ActorCaller: ...
    @property
    def inbox(self) -> LoopInbox: ...
    @property
    def call_actor(self) -> Callable[..., None]: ...


def call_direct(
    worker: DirectHost,
    msg: p.CallActor,
    buffers: list[memoryview],
    object_ids: Sequence[bytes],
    keep: Any,
) -> bool:
    """Send an actor call from this (non-loop) thread if it can go out at once: True when it
    was sent; False when it must be posted to the loop (``ActorCaller.call_actor``). For the
    first call since the thread last blocked in get (``send_call`` counts)."""
    state = worker.caller.actors.get(msg.actor_id)
    if state is None or worker.inbox.on_loop():
        return False
    conn = state.conn
    if not isinstance(conn, Connection) or conn.wfd == NEVER or not worker.inbox.quiet():
        return False
    loc = state.location
    if loc is None:
        return False
    msg.actor_id = state.actor_id
    tasks = worker.caller.tasks

    def admit() -> bool:  # under the connection's write lock
        if state.conn is not conn or state.queue or state.resolving or state.dead is not None:
            return False
        tasks[msg.task_id] = PendingTask(
            object_ids, loc.node_id, msg.method, msg.actor_id, keep=keep
        )
        if loc.max_restarts != 0:  # kept for a resend after a restart, as the loop would
            state.inflight[msg.task_id] = (msg, buffers, loc.num_restarts)
        return True

    return send_direct(conn, msg, buffers, admit)


def send_call(  # noqa: PLR0917 -- the hot path: one positional call per actor call
    worker: DirectHost,
    msg: p.CallActor,
    buffers: list[memoryview],
    object_ids: Sequence[bytes],
    stream: StreamState | None,
    keep: Any,
) -> None:
    """``.remote()`` on an actor method, from any thread: the call goes direct if it can,
    else to the loop (``ActorCaller.call_actor``; a thread posting many waits while the loop
    is far behind)."""
    local = _thread.__dict__
    calls = local.get("calls", 0)
    local["calls"] = calls + 1
    # Only the first call since this thread last blocked in get: a thread that makes many
    # before it waits (pipelining) leaves them to the loop, which coalesces their writes.
    if not calls and stream is None:
        msg.blocked = True  # (the callee answers it from its thread: execution.calls)
        if call_direct(worker, msg, buffers, object_ids, keep):
            return
    # (worker.call_actor: the caller's method bound once, not a bound method made per call)
    worker.inbox.post_call(worker.call_actor, msg, buffers, object_ids, stream, keep)


def blocked() -> None:
    """This thread blocks in ``get`` (``api.blocking.wait_owned``): its next call may go
    direct."""
    _thread.calls = 0


__all__ = ["DirectHost", "blocked", "call_direct", "send_call"]
