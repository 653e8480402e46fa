"""Every error the runtime raises, rooted at :class:`RuntimeBaseError`.

The tree, drawn in :mod:`runtime.core.common.exceptions`::

    RuntimeBaseError
    ├── TaskError (also the original exception type)
    ├── ActorError ── ActorDiedError, ActorUnavailableError
    ├── NodeDiedError
    ├── ObjectLostError ── OwnerDiedError
    ├── GetTimeoutError (also TimeoutError)
    ├── TaskCancelledError
    ├── PendingCallsLimitExceeded
    ├── SerializationError (also TypeError)
    ├── AuthenticationError (also PermissionError)
    ├── ProtocolError (also ValueError)
    ├── InfeasibleError (also ValueError)
    └── OutOfMemoryError (also MemoryError)
"""

from runtime.core.common.exceptions import (
    ActorDiedError,
    ActorError,
    ActorUnavailableError,
    AuthenticationError,
    GetTimeoutError,
    InfeasibleError,
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    OwnerDiedError,
    PendingCallsLimitExceeded,
    ProtocolError,
    RuntimeBaseError,
    SerializationError,
    TaskCancelledError,
    TaskError,
)

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

# Ray's names for the same errors (``ray.exceptions``), so ``except RayActorError`` catches
# what the runtime raises. Each alias is the class above that means the same thing here;
# the few of Ray's errors with no counterpart are new classes that nothing raises yet.
RayError = RuntimeBaseError
RayTaskError = TaskError
RayActorError = ActorError
#: A node is the worker process here, so the worker crashing is its node dying.
WorkerCrashedError = NodeDiedError
#: What the object store raises when a value does not fit, even after spilling.
ObjectStoreFullError = OutOfMemoryError
#: No node can run it (Ray raises these for tasks and actors that cannot be scheduled).
TaskUnschedulableError = InfeasibleError
ActorUnschedulableError = InfeasibleError


class RaySystemError(RuntimeBaseError):
    """Ray's error for a failure inside the system itself; the runtime raises more precise
    errors (:class:`ProtocolError`, :class:`NodeDiedError`, ...), so nothing raises this one.
    """


class RuntimeEnvSetupError(RuntimeBaseError):
    """Ray's error for a ``runtime_env`` that could not be set up; the runtime checks a
    ``runtime_env`` when it is given and raises ``ValueError`` there instead."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Ray's error for an object that could not be fetched in time; here a lost object is
    an :class:`ObjectLostError` at once, so nothing raises this subclass."""


__all__ += [
    "ActorUnschedulableError",
    "ObjectFetchTimedOutError",
    "ObjectStoreFullError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RuntimeEnvSetupError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
]
__all__.sort()
