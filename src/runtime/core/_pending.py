"""What a process waits on: the tasks and actor calls it submitted, and how to retry them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _protocol as p

if TYPE_CHECKING:
    from ._streaming import StreamState


@dataclass(slots=True)
class PendingTask:
    """A task or actor call this process submitted and waits on."""

    object_ids: list[bytes]
    node_id: str
    name: str
    actor_id: bytes | None = None
    retry: TaskRetry | None = None
    stream: StreamState | None = None
    #: What the call keeps alive until it is answered: the callee actor's handle token.
    keep: Any = None


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
    failures: list[str] = field(default_factory=list)
