"""A run of an async actor's calls started by one asyncio task, not a task per call.

An async lane (an ``async def`` actor's mailbox, or one of its concurrency groups) used to
start each call as a task of its own (``loop.create_task``): on Python 3.11 that is a Task
made, registered in asyncio's set of all tasks, its first step scheduled and run by the loop,
its result set and the task dropped (~2 us a call, most of what an async actor's call cost
more than a sync actor's). Most calls of a pipelined caller never wait (they return a value
at once), so a run of the lane's ready calls is now started by one task (:func:`start`; a
call that arrives alone, a blocked caller's, is still a task of its own):

- it starts the calls in mailbox order, each in a context of its own (a copy of the run's,
  as a task of its own had: a context variable a call sets is not seen by the next);
- a call that returns without waiting is finished there and the task starts the next one;
- a call that waits (its first ``await`` of something not done yet) keeps the task: each of
  the calls after it gets a task of its own, as before (the loop starts them all in its next
  pass, so they interleave with it at its awaits; one task for all of them would start one
  call a pass when each waits), and this task goes on running that call alone, every step
  of it in the call's own context, until it ends.

So the task a call runs in (``asyncio.current_task()``, what ``asyncio.timeout()`` and a
cancel act on) is its own from its first wait to its end: a timeout, ``runtime.cancel``
(``job.atask``) or the actor's stop cancel that call and no other. Before its first wait
the task is shared with the calls of the run that finished before it, none of which can
still be running. A call that cancels its own task and returns at once leaves the task to
it: the calls after it go to a new task. A call cancelled before it started (``runtime.cancel``
while it waits in a run) is answered ``TaskCancelledError`` without running; one whose
actor stopped before it started is answered with the actor's death, as a queued call is.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

from .calls import Job, Lane

#: Calls started by a run's task (this process; read by tests): [tasks, calls].
STARTED = [0, 0]


class AsyncHost(Protocol):
    """What a run needs of its actor (a ``HostedActor`` is one)."""

    @property
    def worker(self) -> Any: ...
    def run_async(self, job: Job) -> Coroutine[Any, Any, None]: ...
    def not_started(self, job: Job) -> bool: ...
    def pump(self, lane: Lane) -> None: ...


def start(actor: AsyncHost, lane: Lane, jobs: deque[Job]) -> None:
    """Start ``jobs`` (popped from ``lane``, counted as running and starting) in order (loop)."""
    actor.worker.loop.create_task(_run(actor, lane, jobs))


async def _run(actor: AsyncHost, lane: Lane, jobs: deque[Job]) -> None:
    task = asyncio.current_task()
    assert task is not None
    cancels = task.cancelling()
    STARTED[0] += 1
    run_async, not_started, copy = actor.run_async, actor.not_started, contextvars.copy_context
    while jobs:
        job = jobs.popleft()
        if not_started(job):  # the actor stopped meanwhile: answered with its death
            continue
        STARTED[1] += 1
        job.atask = task
        coro = run_async(job)
        context = copy()
        lane.in_run = True  # (a call that ends now does not pump the lane: this run does)
        try:
            waiting = context.run(coro.send, None)
        except StopIteration:  # it ended without waiting: the next call, same task
            if task.cancelling() != cancels and jobs:  # it cancelled this task
                break
            continue
        except BaseException:
            lane.in_run = False
            if jobs:
                start(actor, lane, jobs)
            raise
        finally:
            lane.in_run = False
        # It waits: the calls after it start in tasks of their own, each its own (the next
        # loop pass starts them all, as it started a task per call: a lane whose calls wait
        # does not start one call a pass), and this task goes on with this call alone.
        create = actor.worker.loop.create_task
        while jobs:
            create(_one(actor, jobs.popleft()))
        await _Rest(context, coro, waiting)
        return
    if jobs:
        start(actor, lane, jobs)
    elif lane.mailbox:
        actor.pump(lane)


async def _one(actor: AsyncHost, job: Job) -> None:
    """One call in a task of its own (the calls after one that waited in a run)."""
    STARTED[0] += 1
    if actor.not_started(job):
        return
    STARTED[1] += 1
    job.atask = asyncio.current_task()
    await actor.run_async(job)


class _Rest:
    """What a run's task awaits to go on with a call that waits: ``coro`` yielded
    ``waiting``; each later step of it runs in ``context``. It passes the task's resumptions
    (a value, or an exception: a cancel) to the call as ``await`` would, and shows the call's
    frame and what it awaits as a generator would (``gi_frame``, ``gi_yieldfrom``), so a
    stack of the task (``process.inspect``) goes on down into the call."""

    __slots__ = ("_context", "_coro", "_waiting")

    def __init__(
        self, context: contextvars.Context, coro: Coroutine[Any, Any, None], waiting: Any
    ) -> None:
        self._context, self._waiting = context, waiting
        self._coro: Any = coro  # (a native coroutine: cr_frame, cr_await)

    def __await__(self) -> _Rest:
        return self

    def __iter__(self) -> _Rest:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        waiting = self._waiting
        if waiting is not _GONE:  # the first step: hand the task what the call yielded
            self._waiting = _GONE
            return waiting
        return self._context.run(self._coro.send, value)

    def throw(self, exc: Any, value: Any = None, tb: Any = None) -> Any:
        self._waiting = _GONE
        if not isinstance(exc, BaseException):
            exc = exc() if value is None else value
        return self._context.run(self._coro.throw, exc)

    def close(self) -> None:  # the task is dropped unfinished (the loop closes)
        self._coro.close()

    @property
    def gi_frame(self) -> Any:
        return self._coro.cr_frame

    @property
    def gi_yieldfrom(self) -> Any:
        return self._coro.cr_await


_GONE = object()


__all__ = ["STARTED", "AsyncHost", "start"]
