"""What a process waits on: the tasks and actor calls it submitted, and how to retry them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..objects import serialization as ser
from ..wire import protocol as p

if TYPE_CHECKING:
    from .streaming import StreamState


class PendingTask(msgspec.Struct, gc=False, eq=False):
    """A task or actor call this process submitted and waits on.

    One per call in flight: a struct built in C and outside the cyclic collector
    (``gc=False``), so a pipelined caller's thousands of pending calls add nothing to every
    collection's walk. What it holds (the callee's handle token, a stream, a retry record)
    leads back to it only through the worker's ``tasks``, which the worker empties when it
    closes.
    """

    object_ids: Sequence[bytes]
    node_id: str
    name: str
    actor_id: bytes | None = None
    retry: TaskRetry | None = None
    stream: StreamState | None = None
    #: What the call keeps alive until it is answered: the callee actor's handle token.
    keep: Any = None
    #: What it asks for, while no live node can hold it (it waits for one to join).
    waiting: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A remote function's retry options."""

    max_retries: int  # -1: without limit
    retry_exceptions: bool | tuple[type[BaseException], ...]


@dataclass(slots=True)
class TaskRetry:
    """What it takes to run a task again: its message, and how many tries are left."""

    msg: p.SubmitTask
    buffers: list[memoryview]
    fn_blob: Callable[[], bytes]
    retries_left: int  # -1: without limit
    retry_exceptions: bool | tuple[type[BaseException], ...]
    #: Why each earlier try failed (None until one did: most tasks never fail).
    failures: list[str] | None = None


def take_retry(retry: TaskRetry | None, why: str) -> bool:
    """Spend one try of ``retry`` on a new attempt (state only: the caller sends it); False
    when there is no try left. The new attempt carries the next attempt number, so the node
    runs it again instead of answering it as a resend of the last one."""
    if retry is None or retry.retries_left == 0:
        return False
    if retry.retries_left > 0:
        retry.retries_left -= 1
    if retry.failures is None:
        retry.failures = []
    retry.failures.append(why)
    retry.msg.attempt += 1
    return True


def retry_allowed(allowed: bool | tuple[type[BaseException], ...], error: p.Value) -> bool:
    """Whether a task's ``retry_exceptions`` allows a retry after it failed with ``error``:
    only for an exception the user's code raised, of an allowed class (or caused by one)."""
    if allowed is False or not ser.is_application_error(error):
        return False
    if isinstance(allowed, tuple):
        exc = ser.error_from_value(error)
        cause = getattr(exc, "cause", None)
        if not isinstance(exc, allowed) and not isinstance(cause, allowed):
            return False
    return True


def owned_task_rows(tasks: dict[bytes, PendingTask]) -> list[dict[str, Any]]:
    """The calls a process submitted and waits on, as ``runtime list tasks`` rows."""
    return [
        {
            "task_id": task_id.hex(),
            "name": t.name,
            "node_id": t.node_id,
            "actor_id": t.actor_id.hex() if t.actor_id else "",
            **(
                {}
                if t.waiting is None
                else {"state": "PENDING_NODE_ASSIGNMENT", "required_resources": t.waiting}
            ),
        }
        for task_id, t in list(tasks.items())
    ]


def merge_task_rows(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task from every member's answer: its state where it runs (RUNNING,
    QUEUED, PENDING_ARGS), else SUBMITTED (its owner waits on it; it is on its way, being
    placed, or its node's answer is missing); the owner is the member that submitted it."""
    rows: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for r in answer.get("owned", []):
            rows[r["task_id"]] = {
                "task_id": r["task_id"],
                "name": r["name"],
                "state": r.get("state", "SUBMITTED"),
                "node_id": r["node_id"],
                "actor_id": r["actor_id"],
                "owner": answer["node_id"],
                "attempt": 0,
                "required_resources": dict(r.get("required_resources", {})),
            }
    for answer in answers:
        for r in answer.get("running", []):
            row = rows.setdefault(r["task_id"], {"task_id": r["task_id"], "owner": ""})
            row.update(r, node_id=answer["node_id"])
    order = {"RUNNING": 0, "QUEUED": 1, "PENDING_ARGS": 2, "PENDING_NODE_ASSIGNMENT": 3,
             "SUBMITTED": 4}  # fmt: skip
    return sorted(rows.values(), key=lambda r: (order.get(r["state"], 9), r["name"]))
