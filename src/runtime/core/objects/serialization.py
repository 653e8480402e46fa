"""User values to bytes and back: the one module that (de)serializes user data.

Plain scalars travel as msgpack; everything else goes through cloudpickle with
pickle protocol 5, its large buffers (numpy arrays, bytes-like data) kept out of band
so they are written to the socket as they are and read back as read-only views.
Errors are values too: a failed task's result is an :class:`ErrorInfo`.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import cloudpickle
import msgspec

from ..common.errors import ErrorCode, error_class, error_code
from ..common.exceptions import RuntimeBaseError, SerializationError, TaskError
from ..wire.protocol import Value
from .refs import current_worker_or_none, serialization_context

KIND_MSGPACK: Final = 0
KIND_PICKLE: Final = 1
KIND_ERROR: Final = 2
#: A byte range of a stored object's blob (only in chunked FetchObject replies).
KIND_BLOB: Final = 3
#: Buffers smaller than this stay in the pickle stream.
_OOB_MIN: Final = 4096
#: A top-level call argument at least this big is put in the object store and passed by ref,
#: so it is written once and mapped by a reader on the same host (as Ray does).
PROMOTE_MIN: Final = 1 << 20
_SIMPLE: Final = frozenset({int, float, str, bytes, bool, type(None)})

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class ErrorInfo(msgspec.Struct, array_like=True):
    """A failure as it travels: a system error by class name, or a task error with its cause."""

    kind: str  # "task" or "system"
    cls: str
    message: str
    function_name: str = ""
    traceback: str = ""
    cause: bytes | None = None
    code: int = 0  # a system error's ErrorCode: the class it is raised as


_error_encoder = msgspec.msgpack.Encoder()
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)
_KNOWN = frozenset(int(c) for c in ErrorCode)


def serialize(value: Any, *, copy: bool = True) -> tuple[Value, list[memoryview]]:
    """Serialize one user value; raise SerializationError naming the type if it cannot be.

    ``copy=False`` leaves writable buffers as views of the caller's memory: only for a
    caller that copies them (into the object store) before returning.
    """
    if type(value) in _SIMPLE:
        try:
            return Value(KIND_MSGPACK, _encode(value)), []
        except OverflowError:
            pass  # a big int: pickle handles it
    return _pickle(value, copy)


def own_buffers(buffers: list[memoryview]) -> list[memoryview]:
    """Copies of the writable ones among ``buffers`` (from ``serialize(copy=False)``)."""
    return [b if b.readonly else memoryview(bytes(b)) for b in buffers]


def serialize_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, promote: bool = True
) -> tuple[Value, list[memoryview]]:
    """Serialize call arguments, as msgpack when they are all plain scalars.

    With ``promote``, large top-level arguments (arrays, bytes) are put in the object store
    first and travel as refs, which the callee resolves back to values.
    """
    if not args and not kwargs:
        return _NO_ARGS, []
    if all(type(a) in _SIMPLE for a in args) and all(type(v) in _SIMPLE for v in kwargs.values()):
        try:
            return Value(KIND_MSGPACK, _encode((args, kwargs))), []
        except OverflowError:
            pass
    if promote and (any(map(_large, args)) or any(map(_large, kwargs.values()))):
        args, kwargs = _promote(args, kwargs)
    return _pickle((args, kwargs))


def _large(value: Any) -> bool:
    cls = type(value)
    if cls in _SIMPLE:
        return cls is bytes and len(value) >= PROMOTE_MIN
    if cls is bytearray or cls is memoryview:
        return memoryview(value).nbytes >= PROMOTE_MIN
    if getattr(cls, "nbytes", None) is None:  # the class, so __getattr__ proxies are not asked
        return False
    try:
        n = value.nbytes
    except Exception:
        return False
    return isinstance(n, int) and n >= PROMOTE_MIN


def _promote(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    worker = current_worker_or_none()
    if worker is None:
        return args, kwargs

    def put(value: Any) -> Any:
        # Uncounted: the call's pin of the ref (taken by the caller) is what keeps it alive.
        return worker.put(value, counted=False)

    return (
        tuple([put(a) if _large(a) else a for a in args]),
        {k: put(v) if _large(v) else v for k, v in kwargs.items()},
    )


_NO_ARGS: Final = Value(KIND_MSGPACK, _encode(((), {})))  # shared: Values are never mutated


def serialize_inline(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Value:
    """Serialize call arguments with every buffer in band (for messages relayed whole)."""
    value, buffers = serialize_args(args, kwargs, promote=False)
    if not buffers:
        return value
    ctx = serialization_context
    outer, ctx.refs = ctx.refs, []
    try:
        data = cloudpickle.dumps((args, kwargs), protocol=5)
        refs = ctx.refs
    finally:
        ctx.refs = outer
    return Value(KIND_PICKLE, data, [], list(refs))


def _pickle(value: Any, copy: bool = True) -> tuple[Value, list[memoryview]]:
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < _OOB_MIN:
            return True
        # A writable buffer is copied, so the caller may change its array after put() or
        # .remote(); a read-only one (e.g. an array that came from the store) is shared.
        buffers.append(raw if raw.readonly or not copy else memoryview(bytes(raw)))
        return False

    ctx = serialization_context
    outer, ctx.refs = ctx.refs, []
    try:
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=keep)
        refs = ctx.refs
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize a value of type {type(value).__module__}.{type(value).__qualname__}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        ctx.refs = outer
    return Value(KIND_PICKLE, data, [b.nbytes for b in buffers], list(refs)), buffers


#: A msgpack value's bytes to its object (``deserialize`` of a ``KIND_MSGPACK`` value).
msgpack_decode: Final = _decode


def deserialize(value: Value, buffers: Sequence[Any] = ()) -> Any:
    """Rebuild a user value; an error value is raised as its exception."""
    kind = value.kind
    if kind == KIND_MSGPACK:
        return _decode(value.data)
    if kind == KIND_PICKLE:
        try:
            return pickle.loads(value.data, buffers=buffers)
        except Exception as exc:
            raise SerializationError(
                f"cannot deserialize a value: {type(exc).__name__}: {exc}"
            ) from exc
    if kind == KIND_ERROR:
        raise error_from_value(value)
    raise SerializationError(f"unknown value kind {kind}")


def deserialize_args(
    value: Value, buffers: Sequence[Any] = ()
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rebuild call arguments serialized by :func:`serialize_args`."""
    args, kwargs = deserialize(value, buffers)
    return tuple(args), kwargs


def total_size(value: Value) -> int:
    return len(value.data) + sum(value.bufs)


# --- errors -----------------------------------------------------------------------


def error_value(error: BaseException, function_name: str = "", *, tb: str | None = None) -> Value:
    """Turn an exception into a value: system errors by name, others as a TaskError."""
    if isinstance(error, TaskError):
        info = ErrorInfo(
            "task",
            type(error.cause).__name__ if error.cause is not None else "TaskError",
            str(error),
            error.function_name,
            error.remote_traceback,
            _try_pickle(error.cause) if error.cause is not None else None,
        )
    elif isinstance(error, RuntimeBaseError) and (code := error_code(type(error))):
        info = ErrorInfo("system", type(error).__name__, str(error), function_name, code=code)
    else:
        text = tb if tb is not None else "".join(traceback.format_exception(error))
        info = ErrorInfo(
            "task", type(error).__name__, str(error), function_name, text, _try_pickle(error)
        )
    return Value(KIND_ERROR, _error_encoder.encode(info))


def system_error_code(value: Value) -> ErrorCode | None:
    """The code of a system error value (None for other values)."""
    if value.kind != KIND_ERROR:
        return None
    info = _error_decoder.decode(value.data)
    return ErrorCode(info.code) if info.kind == "system" and info.code in _KNOWN else None


def is_application_error(value: Value) -> bool:
    """True when an error value is an exception the user's code raised (not a system error)."""
    return value.kind == KIND_ERROR and _error_decoder.decode(value.data).kind == "task"


def system_error_value(cls: type[RuntimeBaseError], message: str) -> Value:
    info = ErrorInfo("system", cls.__name__, message, code=error_code(cls))
    return Value(KIND_ERROR, _error_encoder.encode(info))


def error_from_value(value: Value) -> BaseException:
    """The exception a failed value stands for, ready to raise in the caller."""
    info = _error_decoder.decode(value.data)
    if info.kind == "system":
        cls = error_class(info.code)
        if cls is not None and issubclass(cls, RuntimeBaseError):
            return cls(info.message)
        return RuntimeBaseError(f"{info.cls}: {info.message}")
    cause: BaseException | None = None
    text = info.traceback
    if info.cause is not None:
        try:
            loaded = pickle.loads(info.cause)
            if isinstance(loaded, BaseException):
                cause = loaded
        except Exception as exc:  # the caller lacks the class: keep the text
            text += f"\n(the exception {info.cls} could not be rebuilt here: {exc})"
    else:
        text += f"\n(the exception {info.cls} could not be pickled; it arrives as text)"
    return TaskError(info.function_name, text, cause).as_instanceof_cause()


def _try_pickle(error: BaseException) -> bytes | None:
    try:
        data: bytes = cloudpickle.dumps(error, protocol=5)
        pickle.loads(data)  # an exception that pickles but cannot be rebuilt arrives as text
        return data
    except Exception:
        return None


def dumps_function(fn: Callable[..., Any] | type) -> bytes:
    """Pickle a function or class once, for caching by id on every node."""
    try:
        return cast(bytes, cloudpickle.dumps(fn, protocol=5))
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {getattr(fn, '__qualname__', fn)!r}: {type(exc).__name__}: {exc}"
        ) from exc


def loads_function(blob: bytes) -> Any:
    return pickle.loads(blob)
