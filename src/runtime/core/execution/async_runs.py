"""A run of an async actor's calls started by one asyncio task, not a task per call.

An async lane (an ``async def`` actor's mailbox, or one of its concurrency groups) used to
start each call as a task of its own (``loop.create_task``): on Python 3.11 that is a Task
made, registered in asyncio's set of all tasks, its first step scheduled and run by the loop,
its result set and the task dropped (~2 us a call, most of what an async actor's call cost
more than a sync actor's). Most calls of a pipelined caller never wait (they return a value
at once), so a run of the lane's ready calls is now started by one task (:func:`start`):

- it starts the calls in mailbox order, each in a context of its own (a copy of the run's,
  as a task of its own had: a context variable a call sets is not seen by the next);
- a call that returns without waiting is finished there and the task starts the next one;
- a call that waits (its first ``await`` of something not done yet) keeps the task: the
  calls after it go to a new task (started by the loop as soon as this one yields, so they
  interleave with it at its awaits, as before), and this task goes on running that call
  alone, every step of it in the call's own context, until it ends.

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
import types
from collections import deque
from collections.abc import Coroutine, Generator
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
        if jobs:  # it waits: the calls after it start in a task of their own
            start(actor, lane, jobs)
        await _rest(context, coro, waiting)
        return
    if jobs:
        start(actor, lane, jobs)
    elif lane.mailbox:
        actor.pump(lane)


@types.coroutine
def _rest(
    context: contextvars.Context, coro: Coroutine[Any, Any, None], waiting: Any
) -> Generator[Any, Any, None]:
    """Go on with ``coro``, which yielded ``waiting`` to its task, each step in ``context``."""
    run, send, throw = context.run, coro.send, coro.throw
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:  # the task is dropped unfinished (the loop closes)
            coro.close()
            raise
        except BaseException as exc:  # (a cancel, or the awaited future's failure)
            try:
                waiting = run(throw, exc)
            except StopIteration:
                return
        else:
            try:
                waiting = run(send, sent)
            except StopIteration:
                return


__all__ = ["STARTED", "AsyncHost", "start"]
