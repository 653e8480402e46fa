"""Where a piece of user code runs: the replica context and the request being served.

``serve.get_replica_context()`` answers, inside a replica, which application, deployment
and replica this is. The request context (a context variable) lets handle calls made while
serving a request be cancelled with it.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ReplicaContext:
    """Which replica runs this code: ``app_name``, ``deployment``, ``replica_tag``."""

    app_name: str
    deployment: str
    replica_tag: str
    servable_object: Any = None


@dataclasses.dataclass
class RequestContext:
    """The request a replica is serving: its id, and the handle calls it made (children)."""

    request_id: str
    children: list[Any] = dataclasses.field(default_factory=list)
    model_id: str = ""  # the multiplexed model the request names


#: Several replicas may share a node process, so this is per task, set around user code.
current_replica: contextvars.ContextVar[ReplicaContext | None] = contextvars.ContextVar(
    "serve_replica", default=None
)
current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "serve_request", default=None
)


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in (RuntimeError outside a replica)."""
    ctx = current_replica.get()
    if ctx is None:
        raise RuntimeError("serve.get_replica_context() was called outside a Serve replica")
    return ctx
