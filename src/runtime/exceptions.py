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
