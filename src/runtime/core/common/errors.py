"""Error codes on the wire: a failure names its class by a code, not by its text or name.

A reply's error and a failed call's error value carry an :class:`ErrorCode`; the receiver
raises the class the code stands for (:func:`error_class`), and code that reacts to a kind of
failure compares codes (``code == ErrorCode.NO_ROOM``), never messages or class names.
"""

from __future__ import annotations

import enum

from .exceptions import (
    ActorDiedError,
    ActorError,
    ActorUnavailableError,
    AuthenticationError,
    GetTimeoutError,
    InfeasibleError,
    NodeDiedError,
    NodeRetiredError,
    NoRoomError,
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


class ErrorCode(enum.IntEnum):
    """What kind of failure an error on the wire is (0: not one the runtime knows)."""

    UNKNOWN = 0
    RUNTIME = 1
    TASK = 2
    ACTOR = 3
    ACTOR_DIED = 4
    ACTOR_UNAVAILABLE = 5
    NODE_DIED = 6
    OBJECT_LOST = 7
    OWNER_DIED = 8
    GET_TIMEOUT = 9
    TASK_CANCELLED = 10
    PENDING_CALLS_LIMIT = 11
    SERIALIZATION = 12
    AUTHENTICATION = 13
    PROTOCOL = 14
    INFEASIBLE = 15
    OUT_OF_MEMORY = 16
    VALUE = 17
    TYPE = 18
    KEY = 19
    #: A node has no room now: placed again elsewhere or later (internal).
    NO_ROOM = 20
    #: The head declared this node dead: rejoin with a new id (internal).
    NODE_RETIRED = 21


#: The class each code is raised as on the receiving side.
_CLASSES: dict[ErrorCode, type[Exception]] = {
    ErrorCode.RUNTIME: RuntimeBaseError,
    ErrorCode.TASK: TaskError,
    ErrorCode.ACTOR: ActorError,
    ErrorCode.ACTOR_DIED: ActorDiedError,
    ErrorCode.ACTOR_UNAVAILABLE: ActorUnavailableError,
    ErrorCode.NODE_DIED: NodeDiedError,
    ErrorCode.OBJECT_LOST: ObjectLostError,
    ErrorCode.OWNER_DIED: OwnerDiedError,
    ErrorCode.GET_TIMEOUT: GetTimeoutError,
    ErrorCode.TASK_CANCELLED: TaskCancelledError,
    ErrorCode.PENDING_CALLS_LIMIT: PendingCallsLimitExceeded,
    ErrorCode.SERIALIZATION: SerializationError,
    ErrorCode.AUTHENTICATION: AuthenticationError,
    ErrorCode.PROTOCOL: ProtocolError,
    ErrorCode.INFEASIBLE: InfeasibleError,
    ErrorCode.OUT_OF_MEMORY: OutOfMemoryError,
    ErrorCode.VALUE: ValueError,
    ErrorCode.TYPE: TypeError,
    ErrorCode.KEY: KeyError,
    ErrorCode.NODE_RETIRED: NodeRetiredError,
}
#: The code of each class (exact classes: a subclass the runtime does not know has none).
_CODES: dict[type[BaseException], ErrorCode] = {cls: code for code, cls in _CLASSES.items()}
# Sent, never raised as itself: the receiver places the work again (and a caller that cannot
# sees the root error with its text, as before codes existed).
_CODES[NoRoomError] = ErrorCode.NO_ROOM


def error_code(cls: type[BaseException]) -> ErrorCode:
    """The code of an exception class (UNKNOWN for one the runtime does not know)."""
    return _CODES.get(cls, ErrorCode.UNKNOWN)


def error_item(exc: BaseException) -> dict[str, object]:
    """A failed item in the answer of a request for many (the others may have succeeded):
    what a Reply's error fields carry, as a dict."""
    return {"error": str(exc), "type": type(exc).__name__, "code": int(error_code(type(exc)))}


def error_class(code: int) -> type[Exception] | None:
    """The class a code is raised as (None: unknown, or a code that is never raised)."""
    try:
        return _CLASSES.get(ErrorCode(code))
    except ValueError:
        return None


__all__ = ["ErrorCode", "error_class", "error_code", "error_item"]
