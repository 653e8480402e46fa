"""The calls of a ``CallBatch`` taken into their actors' mailboxes in one pass (loop).

A batch of calls (``wire.gather``: the calls one caller made in one loop pass) used to be
handed on one call at a time through the general path (``Executor.on_call_actor`` ->
``HostedActor.on_call``): per call, two method calls, the actor looked up, its lane, limit
and state read again. For a batch whose frame carries no raw buffers, :func:`take_calls`
does the same for each call with what the calls of one actor share looked up once: the
actor, its lane (an actor with no concurrency groups and no ``max_pending_calls``), the job
table and the kept answers. A call the lean path does not cover (ref arguments, raw
buffers, a stream, an actor not here, stopped, with concurrency groups or a pending-call
limit) goes through the general path, in its place in the batch. What each call gets is what
``HostedActor.on_call`` would give it: the bookkeeping of answered calls first, the kept
answer of a resent call, its job record, its place in the lane's mailbox, and the lane
noted for one pump at the batch's end (``pumps``, in the order lanes first got a call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..wire import protocol as p
from ..wire.gather import NO_RAW
from ..wire.transport import Connection
from .calls import DEAD, NO_BUFS, Job, Lane

if TYPE_CHECKING:
    from .executor import Executor
    from .hosted import HostedActor


def take_calls(
    executor: Executor,
    conn: Connection,
    calls: Sequence[p.CallActor],
    pumps: list[tuple[HostedActor, Lane]],
    general: Callable[[Connection, p.CallActor, memoryview], Any],
) -> None:
    """Take ``calls`` (a frame with no raw buffers) in order; stop if ``conn`` closes."""
    actors, jobs = executor.actors, executor.jobs
    duplicate, catch_up = executor.answers.duplicate, executor.worker.inbox.catch_up
    streaming = p.STREAMING
    last: bytes | None = None
    actor: HostedActor | None = None
    lane: Lane | None = None
    for msg in calls:
        if msg.actor_id != last:
            last, actor = msg.actor_id, actors.get(msg.actor_id)
            lane = None
            if actor is not None and not actor.lanes and actor.spec.max_pending_calls < 0:
                lane = actor.lane
        args = msg.args
        if (
            lane is None
            or actor is None
            or actor.state == DEAD
            or args.refs
            or args.bufs
            or msg.num_returns == streaming
        ):
            general(conn, msg, NO_RAW)
        else:
            catch_up()  # the bookkeeping of calls answered already goes first (as on_call)
            if not duplicate(conn, msg.task_id):
                task_id = msg.task_id
                job = jobs[task_id] = Job(conn, task_id, msg.method, args, NO_BUFS, msg.num_returns)
                job.actor_id = last
                job.blocked = msg.blocked
                job.lane = lane
                mailbox = lane.mailbox
                mailbox.append(job)
                if len(mailbox) == 1:
                    pumps.append((actor, lane))
        if conn.closed:
            return


__all__ = ["take_calls"]
