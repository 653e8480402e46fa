"""Runs of queued tasks on one pool thread (the node's side of pipelined tasks).

A one-CPU node process runs one task at a time, and each used to cost two thread hand-offs:
the loop woke a pool thread to run it, the thread woke the loop with its answer, and the loop
(its release handing the CPU to the next task in line within the process, see
``HostScheduler.release``) woke a pool thread again for the next one. Now, as a plain task
starts, the tasks queued right behind it that want just what it holds (and the host has no
claim from another process: ``HostLedger.claimed_elsewhere``) go with it, at most
``CHAIN_MOST``: the thread runs them one after another, each answer posted to the loop as it
is made (``_finish`` with the resources kept), and the last one releases them. The resources
are held throughout exactly as by that hand-over (one grant, passed on), so the host's and the
process's counts are the same as before; only the thread hand-offs are saved.

The thread stops early (the rest go back to the front of the queue, in order, before the
resources are released so the hand-over reaches them first) when another process of the host
claims resources or the task just run lent its resources (it blocked in ``get()``). A task of
the run cancelled before it starts answers that it was cancelled (``call_sync`` checks), as
one waiting in the queue does.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from ..common.context import TaskContext
from ..scheduling.host import HostScheduler
from ..wire import protocol as p
from .calls import ExecutionHost, Job, call_sync, cancelled_before_run
from .pools import EnvPools


class ChainHost(Protocol):
    """What of ``executor.Executor`` a chain uses (no import of it: no cycle)."""

    worker: ExecutionHost
    sched: HostScheduler
    waiting: dict[bytes, Job]
    pools: EnvPools

    def _finish(
        self, job: Job, ctx: TaskContext, done: p.TaskDone, bufs: list[Any], keep: bool = False
    ) -> None: ...

    def _done_unqueued(self, job: Job, error: p.Value) -> None: ...


#: The most tasks one pool thread runs in a row before the loop looks at the queue again.
CHAIN_MOST: Final = 32


def chainable(job: Job) -> bool:
    """A plain synchronous task: no actor, bundle, GPU, stream or environment of its own."""
    return (
        not job.is_async
        and job.bundle is None
        and job.stream is None
        and job.env is None
        and job.capture is None
        and not job.actor_id
        and not job.cancelled
        and not job.demand.get("GPU")
    )


def followers(ex: ChainHost, job: Job) -> list[Job]:
    """On the loop, as ``job`` starts: the tasks queued right behind it that take over its
    resources when it ends (taken off the queue; empty when none may)."""
    sched = ex.sched
    queue = sched.queue
    if not queue or ex.pools.to_relay or ex.pools.is_pool or not chainable(job):
        return []
    waiting, demand = ex.waiting, job.demand
    ledger = sched.ledger
    out: list[Job] = []
    while queue and len(out) < CHAIN_MOST and queue[0][1] == demand:
        key = queue[0][0]
        nxt = waiting.get(key) if isinstance(key, bytes) else None
        if nxt is None or not chainable(nxt) or ledger.claimed_elsewhere():
            break
        queue.popleft()
        del waiting[nxt.task_id]
        out.append(nxt)
    return out


def run_chain(ex: ChainHost, first: Job, ctx: TaskContext, rest: list[Job]) -> None:
    """On a pool thread: run ``first`` and then ``rest`` in order, answering each."""
    worker, ledger = ex.worker, ex.sched.ledger
    post = worker.inbox.post
    job = first
    for i in range(len(rest) + 1):
        if i:
            job = rest[i - 1]
            ctx = job.ctx = TaskContext(job.task_id, job.name, demand=job.demand)
        done, bufs = call_sync(worker, job, ctx, job.name)
        if i < len(rest) and not ctx.lent and not ledger.claimed_elsewhere():
            post(ex._finish, job, ctx, done, bufs, True)  # the next one keeps the resources
            continue
        if i < len(rest):
            post(requeue, ex, rest[i:])
        post(ex._finish, job, ctx, done, bufs)
        return


def requeue(ex: ChainHost, jobs: list[Job]) -> None:
    """On the loop: put back the tasks a run did not get to, at the front, in order."""
    queue = ex.sched.queue
    for job in reversed(jobs):
        if job.cancelled:
            ex._done_unqueued(job, cancelled_before_run(job.name))
            continue
        queue.appendleft((job.task_id, dict(job.demand)))
        ex.waiting[job.task_id] = job
