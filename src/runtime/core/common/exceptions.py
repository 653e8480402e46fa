"""The exception tree of the runtime: every error a user can see, rooted at one class.

```
RuntimeBaseError (Exception)
├── TaskError                  a remote task or actor method raised; also an instance of the
│                              original exception type when that type allows it
├── ActorError
│   ├── ActorDiedError         the actor is dead (killed, its node died, or its constructor raised)
│   └── ActorUnavailableError  the actor cannot be reached right now (it may come back)
├── NodeDiedError              the node running the work died
├── ObjectLostError            every copy of an object is gone
│   └── OwnerDiedError         the process that owned the object died
├── GetTimeoutError            (also TimeoutError) runtime.get/wait ran past its timeout
├── TaskCancelledError         the task was cancelled with runtime.cancel
├── PendingCallsLimitExceeded  an actor's max_pending_calls was reached
├── SerializationError         (also TypeError) a value could not be pickled or unpickled
├── AuthenticationError        (also PermissionError) a peer failed the cluster-token handshake
├── ProtocolError              (also ValueError) a peer sent a malformed or unknown frame
├── InfeasibleError            (also ValueError) no node in the cluster can ever satisfy a request
└── OutOfMemoryError           (also MemoryError) a node ran out of memory for the work
```
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class RuntimeBaseError(Exception):
    """Root of every error raised by the runtime."""


class TaskError(RuntimeBaseError):
    """A remote task or actor method raised.

    The instance the caller sees is, when possible, also an instance of the original
    exception type (``except ValueError`` still works). ``cause`` holds the original
    exception when it could be unpickled, and the message carries the remote traceback.
    """

    cause: BaseException | None
    remote_traceback: str
    function_name: str

    def __init__(
        self,
        function_name: str = "",
        remote_traceback: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(function_name, remote_traceback)
        self.function_name = function_name
        self.remote_traceback = remote_traceback
        self.cause = cause

    def __str__(self) -> str:
        where = f" in {self.function_name}" if self.function_name else ""
        return f"remote error{where}:\n{self.remote_traceback.rstrip()}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (self.function_name, self.remote_traceback, self.cause))

    def as_instanceof_cause(self) -> TaskError:
        """Return this error as an instance of both TaskError and the cause's type."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError):
            return self
        cls = _dual_class(type(cause))
        if cls is None:
            return self
        try:
            err: TaskError = cls.__new__(cls)  # the cause type's own __new__ (OSError has one)
        except TypeError:
            return self
        with contextlib.suppress(Exception):  # a cause without a writable __dict__ keeps args
            err.__dict__.update(getattr(cause, "__dict__", {}))
        err.args = cause.args
        if isinstance(cause, OSError):
            for attr in ("errno", "strerror", "filename", "filename2"):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(err, attr, getattr(cause, attr))
        err.function_name = self.function_name
        err.remote_traceback = self.remote_traceback
        err.cause = cause
        return err


def _rebuild_task_error(
    function_name: str, remote_traceback: str, cause: BaseException | None
) -> TaskError:
    return TaskError(function_name, remote_traceback, cause).as_instanceof_cause()


_dual_lock = threading.Lock()
_dual_classes: dict[type[BaseException], type[TaskError] | None] = {}


def _dual_class(cause_type: type[BaseException]) -> type[TaskError] | None:
    """A class deriving from both TaskError and ``cause_type``, or None if none can exist."""
    with _dual_lock:
        if cause_type in _dual_classes:
            return _dual_classes[cause_type]
        cls: type[TaskError] | None
        if not issubclass(cause_type, Exception):
            cls = None
        else:
            try:
                cls = type(
                    f"TaskError({cause_type.__name__})",
                    (TaskError, cause_type),
                    {
                        "__str__": TaskError.__str__,
                        "__reduce__": TaskError.__reduce__,
                        "__init__": TaskError.__init__,
                    },
                )
            except TypeError:  # layout conflict (e.g. two C base classes)
                cls = None
        _dual_classes[cause_type] = cls
        return cls


class ActorError(RuntimeBaseError):
    """Base of the errors about an actor's life."""


class ActorDiedError(ActorError):
    """The actor is dead: killed, its node died, or its constructor raised.

    When a call was in flight as the actor died, the message says it may have run.
    """


class ActorUnavailableError(ActorError):
    """The actor cannot be reached right now; it may become reachable again."""


class NodeDiedError(RuntimeBaseError):
    """The node that was running the work died."""


class ObjectLostError(RuntimeBaseError):
    """Every copy of an object is gone and it cannot be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process that owned an object died, so the object cannot be resolved."""


class GetTimeoutError(RuntimeBaseError, TimeoutError):
    """``runtime.get`` or ``runtime.wait`` ran past its timeout."""


class TaskCancelledError(RuntimeBaseError):
    """The task was cancelled with ``runtime.cancel``."""


class PendingCallsLimitExceeded(RuntimeBaseError):
    """The actor already has ``max_pending_calls`` calls waiting."""


class SerializationError(RuntimeBaseError, TypeError):
    """A value could not be serialized or deserialized; the message names its type."""


class AuthenticationError(RuntimeBaseError, PermissionError):
    """A peer failed the cluster-token handshake (wrong or missing token)."""


class ProtocolError(RuntimeBaseError, ValueError):
    """A peer sent a malformed, oversized or unknown frame; the connection is closed."""


class InfeasibleError(RuntimeBaseError, ValueError):
    """No node of the cluster has the resources a task or actor asks for."""


class OutOfMemoryError(RuntimeBaseError, MemoryError):
    """A node ran out of memory for the work."""


class NoRoomError(RuntimeBaseError):
    """Internal: a node has no room for an actor, bundles or a task right now (the head or
    the submitter places it again). Never raised to users."""


class NodeRetiredError(RuntimeBaseError, ValueError):
    """Internal: the head declared this node id dead; the node rejoins with a new id."""


__all__ = [
    "ActorDiedError",
    "ActorError",
    "ActorUnavailableError",
    "AuthenticationError",
    "GetTimeoutError",
    "InfeasibleError",
    "NodeDiedError",
    "ObjectLostError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "ProtocolError",
    "RuntimeBaseError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
]
