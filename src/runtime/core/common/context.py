"""What runs now in this thread or task: the task or actor call being executed.

It lives at the bottom so that the driver side (remote calls, ``get``) and the node side
(the executor) read the same variable without importing each other.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass(slots=True)
class TaskContext:
    """What the running task or actor call is (read by get_runtime_context)."""

    task_id: bytes
    name: str
    actor_id: bytes | None = None
    actor_name: str | None = None
    demand: dict[str, float] = field(default_factory=dict)
    #: The actor's class name (what its output is tagged with when it has no name).
    actor_class: str | None = None
    lent: bool = False
    #: Set by runtime.cancel; a sync task may poll it (get_runtime_context().is_cancelled()).
    cancelled: bool = False
    #: The placement group bundle whose resources it holds, if any.
    bundle: tuple[bytes, int] | None = None
    #: The placement group what it submits with no strategy goes to (capture), or None.
    capture: bytes | None = None
    #: The tasks and actor calls this one submitted (cancelled with it when recursive).
    children: list[bytes] = field(default_factory=list)
    thread_id: int = 0
    #: The GPUs granted to the task (ids of its host's devices).
    gpu_ids: list[int] = field(default_factory=list)


#: The task or actor call running in this context (None: driver code, or the loop itself).
current_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "runtime_current_task", default=None
)

__all__ = ["TaskContext", "current_task"]
