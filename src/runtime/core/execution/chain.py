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
process's counts are the same as before; only the thread hand-offs are saved. A task that
arrives while a run is under way, wanting just what it holds, with nothing queued before it
(it would be next in line for that hand-over), joins the run (``joined``) instead of waiting
in the queue: a node that keeps up with its caller has no queue to take a run from.

The thread stops early (the rest go back to the front of the queue, in order, before the
resources are released so the hand-over reaches them first) when another process of the host
claims resources or the task just run lent its resources (it blocked in ``get()``). A task of
the run cancelled before it starts answers that it was cancelled (``call_sync`` checks), as
one waiting in the queue does.
"""

from __future__ import annotations

import threading
from collections import deque
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
    run: Run | None

    def _finish(
        self, job: Job, ctx: TaskContext, done: p.TaskDone, bufs: list[Any], keep: bool = False
    ) -> None: ...

    def _done_unqueued(self, job: Job, error: p.Value) -> None: ...


#: The most tasks one pool thread runs in a row before the loop looks at the queue again.
CHAIN_MOST: Final = 32


class Run:
    """The tasks one pool thread runs in a row after the one it started with. The loop adds
    to ``jobs`` (a task that arrives while the run is under way and nothing is queued) and
    the thread takes from it, both under ``lock``; once the thread has taken its last one it
    sets ``closed``, and what arrives after goes to the queue."""

    __slots__ = ("closed", "count", "demand", "jobs", "lock")

    def __init__(self, demand: dict[str, float], jobs: list[Job]) -> None:
        self.demand = demand
        self.jobs = deque(jobs)  # (the thread lets each go as it takes it)
        self.count = len(jobs)  # every task the run was given: at most CHAIN_MOST
        self.lock = threading.Lock()
        self.closed = False


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


def start_run(ex: ChainHost, job: Job) -> Run | None:
    """On the loop, as ``job`` starts: a run for it, holding the tasks queued right behind it
    that take over its resources when it ends (taken off the queue); None when it may not
    run in one."""
    if ex.pools.to_relay or ex.pools.is_pool or not chainable(job):
        return None
    sched = ex.sched
    queue, waiting, demand = sched.queue, ex.waiting, job.demand
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
    run = ex.run = Run(demand, out)
    return run


def joined(ex: ChainHost, job: Job) -> bool:
    """On the loop: ``job`` was just queued, alone, behind a run under way that holds just
    what it wants: it joins the run instead (True) and leaves the queue."""
    run, queue = ex.run, ex.sched.queue
    if (
        run is None
        or run.closed
        or len(queue) != 1
        or queue[0][0] != job.task_id
        or run.demand != job.demand
        or not chainable(job)
        or ex.sched.ledger.claimed_elsewhere()
    ):
        return False
    with run.lock:
        if run.closed or run.count >= CHAIN_MOST:
            return False
        run.jobs.append(job)
        run.count += 1
    queue.popleft()
    return True


def run_chain(ex: ChainHost, first: Job, ctx: TaskContext, run: Run) -> None:
    """On a pool thread: run ``first`` and then the run's tasks in order, answering each."""
    worker, ledger = ex.worker, ex.sched.ledger
    post, jobs, lock = worker.inbox.post, run.jobs, run.lock
    job = first
    while True:
        done, bufs = call_sync(worker, job, ctx, job.name)
        with lock:
            more = bool(jobs)
            stop = more and (ctx.lent or ledger.claimed_elsewhere())
            if not more or stop:
                run.closed = True
            nxt = jobs.popleft() if more and not stop else None
            rest = list(jobs) if stop else []
            if stop:  # (the run, kept as the executor's last, holds none of them)
                jobs.clear()
        if nxt is not None:
            post(ex._finish, job, ctx, done, bufs, True)  # the next one keeps the resources
            job = nxt
            ctx = job.ctx = TaskContext(job.task_id, job.name, demand=job.demand)
            continue
        if rest:
            post(requeue, ex, rest)
        post(ex._finish, job, ctx, done, bufs)
        return


def drop_peer(run: Run, peer: str) -> list[Job]:
    """On the loop: the run's tasks not started yet whose caller went away leave it (as the
    queued ones of that caller are dropped: ``Executor.peer_lost``); returns them."""
    with run.lock:
        gone = [job for job in run.jobs if job.conn.peer_id == peer]
        if gone:
            kept = [job for job in run.jobs if job.conn.peer_id != peer]
            run.jobs.clear()
            run.jobs.extend(kept)
    return gone


def requeue(ex: ChainHost, jobs: list[Job]) -> None:
    """On the loop: put back the tasks a run did not get to, at the front, in order."""
    queue = ex.sched.queue
    for job in reversed(jobs):
        if job.cancelled:
            ex._done_unqueued(job, cancelled_before_run(job.name))
            continue
        queue.appendleft((job.task_id, dict(job.demand)))
        ex.waiting[job.task_id] = job
