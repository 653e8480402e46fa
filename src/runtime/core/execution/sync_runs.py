"""A run of an actor's sync calls on its thread, their answers handed back to the loop in bulk.

A lane with one thread (a default actor's strand, or ``max_concurrency=1``) gets each run of
ready sync calls at once (``HostedActor._pump``: a batch of calls received in one frame is one
run). Each call still finishes on the loop (:func:`finish_many`, or ``HostedActor.sync_done``:
its job record, the kept answer, metrics, the answer gathered into the pass's frame), but a
run of more than one call does not post each one to the loop's inbox on its own: the thread
appends ``(job, answer, buffers)`` to the run's :class:`Back` and posts only when no take of
it is pending, so the loop takes every answer made since its last take in one go
(:func:`take_back`), in the order the calls ran. Nothing waits for the run to end: an answer
is taken as soon as the loop gets to it, as with a post of its own. A run of one call (a
caller that blocks on each) takes the path it took before (``HostedActor._run_sync``: its
answer may go out from the thread).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ..common.metrics import CALLS_DONE, observe_call
from ..wire import protocol as p
from ..wire.gather import answer_gather
from .calls import ANSWER_KEEP_BYTES, DEAD, MAX_ANSWERED, Answers, ExecutionHost, Job, Lane
from .events import now_ns


class SyncHost(Protocol):
    """What a run needs of its actor (a ``HostedActor`` is one)."""

    @property
    def worker(self) -> ExecutionHost: ...
    @property
    def executor(self) -> RunSite: ...
    @property
    def state(self) -> str: ...
    @property
    def lane(self) -> Lane: ...
    def call_one(self, job: Job) -> tuple[p.TaskDone | None, list[Any]]: ...
    def sync_done(self, job: Job, done: p.TaskDone | None, bufs: list[Any]) -> None: ...
    def pump(self, lane: Lane) -> None: ...


class RunSite(Protocol):
    """What finishing a run's calls needs of the executor."""

    @property
    def jobs(self) -> dict[bytes, Job]: ...
    @property
    def answers(self) -> Answers: ...


#: Takes of answers by the loop, and the answers taken (this process; read by tests).
TAKEN = [0, 0]


class Back:
    """The answers of one run not taken by the loop yet (thread -> loop)."""

    __slots__ = ("items", "posted")

    def __init__(self) -> None:
        self.items: deque[tuple[Job, p.TaskDone | None, list[Any]]] = deque()
        #: A take_back of it is posted and has not started: the thread need not post again.
        self.posted = False


def run_batch(actor: SyncHost, batch: list[Job]) -> None:
    """Run ``batch`` in order on this thread (the lane's), handing answers back in bulk."""
    back = Back()
    items, post = back.items, actor.worker.inbox.post
    for job in batch:
        done, bufs = actor.call_one(job)
        items.append((job, done, bufs))  # (before the check: a take started sees it)
        if not back.posted:
            back.posted = True
            post(take_back, actor, back)


def take_back(actor: SyncHost, back: Back) -> None:
    """Finish the calls of ``back`` that are there now, in order (loop)."""
    back.posted = False  # (before the count: what the thread appends from now is posted)
    n = len(back.items)
    TAKEN[0] += 1
    TAKEN[1] += n
    finish_many(actor, back.items, n)


def finish_many(
    actor: SyncHost, items: deque[tuple[Job, p.TaskDone | None, list[Any]]], n: int
) -> None:
    """``sync_done`` for the first ``n`` of ``items`` (loop), in order: a call that ran and
    returned, with no ref arguments, finished here with what a run shares looked up once
    (``HostedActor._finish`` does the same for one call); the others by
    ``HostedActor.sync_done``."""
    answers, send = actor.executor.answers, None
    jobs, remember = actor.executor.jobs, answers.remember
    now, ok = now_ns(), 0
    for _ in range(n):
        job, done, bufs = items.popleft()
        if (
            done is None
            or done.error is not None
            or job.exit is not None
            or job.args.refs
            or actor.state == DEAD
        ):
            actor.sync_done(job, done, bufs)
            continue
        lane = job.lane or actor.lane
        lane.running_sync -= 1
        jobs.pop(job.task_id, None)
        ok += 1
        observe_call((now - job.received_ns) / 1e9)
        returns = done.returns
        if (
            not bufs
            and len(returns) == 1
            and type(value := returns[0]) is p.Value
            and not value.bufs
            and len(value.data) <= ANSWER_KEEP_BYTES
        ):  # most answers: Answers.remember's own steps for one small value, inline
            newer = answers.newer
            newer[done.task_id] = done  # (an actor call's first attempt: keyed by its id)
            if len(newer) >= MAX_ANSWERED:
                answers.older, answers.newer = newer, {}
        else:
            remember(done, bufs)
        if not job.answered:  # (the thread that ran it answered: calls.answer_now)
            if send is None:
                send = answer_gather().send
            send(job.conn, done, bufs)  # gathered per loop pass (wire.gather)
        if lane.mailbox and not lane.running_sync:
            actor.pump(lane)
    CALLS_DONE[0] += ok


__all__ = ["TAKEN", "Back", "RunSite", "SyncHost", "finish_many", "run_batch", "take_back"]
