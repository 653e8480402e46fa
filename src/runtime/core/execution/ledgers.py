"""What a node's executor keeps beside its tasks: placement group bundles carved out of the
host's ledger, the rows ``runtime list tasks`` shows, and the answers to the head's requests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..scheduling.host import HostScheduler
from ..scheduling.scheduler import LocalScheduler
from ..wire import protocol as p
from ..wire.transport import Connection
from .calls import ExecutionHost, Job, NoRoomError

Bundle = tuple[bytes, int]


def reserve_bundles(
    sched: HostScheduler,
    bundles: dict[Bundle, LocalScheduler],
    bundle_gpus: dict[Bundle, list[int]],
    msg: p.ReserveBundles,
) -> None:
    """Reserve all of ``msg``'s bundles on the host, or none (NoRoomError)."""
    total: dict[str, float] = {}
    for index, res in msg.bundles:
        if (msg.pg_id, index) in bundles:
            continue  # a retried request
        for name, amount in res.items():
            total[name] = total.get(name, 0.0) + amount
    if not sched.try_take(total, long=True, slot=False):
        raise NoRoomError("no room on this node for the bundles now")
    ids = sched.last_gpus
    for index, res in msg.bundles:
        key = (msg.pg_id, index)
        if key not in bundles:
            bundles[key] = LocalScheduler(res)
            if res.get("GPU") and ids:
                need = max(1, int(res["GPU"] + 0.999999))
                bundle_gpus[key], ids = ids[:need], ids[need:] or ids


def free_bundles(
    sched: HostScheduler,
    bundles: dict[Bundle, LocalScheduler],
    bundle_gpus: dict[Bundle, list[int]],
    msg: p.ReleaseBundles,
) -> tuple[list[Bundle], list[object]]:
    """Give the host back the bundles ``msg`` names: (their keys, the queued work of this
    process that the freed resources now grant)."""
    keys = [
        key for key in bundles if key[0] == msg.pg_id and (not msg.indices or key[1] in msg.indices)
    ]
    freed: list[object] = []
    for key in keys:
        ledger = bundles.pop(key)
        freed += sched.release(ledger.total, bundle_gpus.pop(key, None), long=True)
    return keys, freed


def report_message(peer_id: str, sched: HostScheduler) -> p.ReportResources | None:
    """What this process tells the head of its host's resources (None once closed)."""
    ledger = sched.ledger
    if ledger.closed:
        return None
    return p.ReportResources(
        peer_id,
        ledger.available(),
        ledger.reserved(),
        {k: v for k, v in sched.used.items() if v > 1e-9},
        sched.pinned.get("CPU", 0.0),
    )


def job_rows(jobs: dict[bytes, Job]) -> list[dict[str, Any]]:
    """The tasks and actor calls a node has: running, queued for resources or the actor, or
    waiting for their ref arguments."""
    rows = []
    for task_id, job in list(jobs.items()):
        if job.ctx is not None:
            state = "RUNNING"
        elif not job.ready:
            state = "PENDING_ARGS"
        else:
            state = "QUEUED"
        rows.append(
            {
                "task_id": task_id.hex(),
                "name": job.name,
                "state": state,
                "actor_id": job.actor_id.hex(),
                "attempt": job.attempt,
                # Ray's field: what the task waits for or holds (an actor call: nothing).
                "required_resources": {} if job.actor_id else dict(job.demand),
            }
        )
    return rows


def answer_request(
    worker: ExecutionHost, conn: Connection, msg: Any, run: Callable[[Any], object]
) -> None:
    """Run a request of the head and reply what it returned (True for None; what a
    coroutine it returned answers), or the error it raised."""
    try:
        result = run(msg)
    except Exception as exc:
        worker.reply(conn, msg.rid, error=exc)
        return
    if inspect.isawaitable(result):
        worker.spawn(_answer_later(worker, conn, msg.rid, result))
    else:
        worker.reply(conn, msg.rid, True if result is None else result)


async def _answer_later(worker: ExecutionHost, conn: Connection, rid: int, result: Any) -> None:
    try:
        value = await result
    except Exception as exc:
        worker.reply(conn, rid, error=exc)
    else:
        worker.reply(conn, rid, True if value is None else value)


__all__ = ["answer_request", "free_bundles", "job_rows", "report_message", "reserve_bundles"]
