"""User values and errors to bytes and back, in one process."""

from __future__ import annotations

import pickle
import threading

import msgspec
import numpy as np
import pytest

from runtime.core.common.exceptions import (
    ActorDiedError,
    NodeDiedError,
    RuntimeBaseError,
    SerializationError,
    TaskError,
)
from runtime.core.objects import refs as _refs
from runtime.core.objects import serialization as ser
from runtime.core.objects.refs import ObjectRef
from runtime.core.wire.protocol import Value


def _as_received(buffers: list[memoryview]) -> list[memoryview]:
    """The buffers as a peer hands them out: read-only views of the bytes that arrived."""
    return [memoryview(bytes(b)) for b in buffers]


def _round_trip(value: object) -> object:
    data, buffers = ser.serialize(value)
    return ser.deserialize(data, _as_received(buffers))


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**63 - 1, 1.5, float("inf"), "", "héllo", b"\x00\xff", True, False, None],
    ids=repr,
)
def test_plain_scalars_travel_as_msgpack(value: object) -> None:
    data, buffers = ser.serialize(value)
    assert data.kind == ser.KIND_MSGPACK
    assert buffers == []
    assert data.refs == []
    back = ser.deserialize(data)
    assert back == value
    assert type(back) is type(value)


def test_a_big_int_falls_back_to_pickle() -> None:
    data, _ = ser.serialize(2**100)
    assert data.kind == ser.KIND_PICKLE
    assert ser.deserialize(data) == 2**100


@pytest.mark.parametrize(
    "value",
    [[1, 2], (1, "a"), {"a": 1}, {1, 2}, 1 + 2j, range(3), ValueError("x").args],
    ids=repr,
)
def test_other_values_travel_as_pickle(value: object) -> None:
    data, buffers = ser.serialize(value)
    assert data.kind == ser.KIND_PICKLE
    assert buffers == []
    assert ser.deserialize(data) == value


def test_scalar_arguments_travel_as_msgpack() -> None:
    data, buffers = ser.serialize_args((1, "two", 3.0, None), {"flag": True, "raw": b"x"})
    assert data.kind == ser.KIND_MSGPACK
    assert buffers == []
    args, kwargs = ser.deserialize_args(data)
    assert args == (1, "two", 3.0, None)
    assert type(args) is tuple
    assert kwargs == {"flag": True, "raw": b"x"}


def test_no_arguments_travel_as_msgpack() -> None:
    data, _ = ser.serialize_args((), {})
    assert data.kind == ser.KIND_MSGPACK
    assert ser.deserialize_args(data) == ((), {})


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(([1, 2],), {}), ((1,), {"opts": {"a": 1}}), ((2**70,), {})],
    ids=["list-arg", "dict-kwarg", "big-int"],
)
def test_arguments_that_are_not_all_scalars_travel_as_pickle(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    data, _ = ser.serialize_args(args, kwargs)
    assert data.kind == ser.KIND_PICKLE
    assert ser.deserialize_args(data) == (args, kwargs)


def test_a_large_array_travels_out_of_band_and_arrives_read_only() -> None:
    array = np.arange(1 << 18, dtype=np.float64).reshape(512, 512)
    data, buffers = ser.serialize(array)
    assert data.kind == ser.KIND_PICKLE
    assert data.bufs == [array.nbytes]
    assert [b.nbytes for b in buffers] == [array.nbytes]
    assert len(data.data) < 1024  # the pickle stream does not carry the payload
    back = ser.deserialize(data, _as_received(buffers))
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        back[0, 0] = 1.0


def test_several_arrays_keep_their_buffers_in_order() -> None:
    a = np.full(5000, 1, dtype=np.int32)
    b = np.full(7000, 2, dtype=np.int16)
    small = np.arange(10)
    data, buffers = ser.serialize_args((a,), {"b": b, "small": small})
    assert data.bufs == [a.nbytes, b.nbytes]  # the small one stays in the pickle stream
    args, kwargs = ser.deserialize_args(data, _as_received(buffers))
    np.testing.assert_array_equal(args[0], a)
    np.testing.assert_array_equal(kwargs["b"], b)
    np.testing.assert_array_equal(kwargs["small"], small)


def test_a_small_array_stays_in_the_pickle_stream() -> None:
    array = np.arange(16, dtype=np.int64)
    data, buffers = ser.serialize(array)
    assert buffers == []
    assert data.bufs == []
    np.testing.assert_array_equal(ser.deserialize(data), array)


def test_an_array_changed_after_serialization_arrives_as_it_was() -> None:
    array = np.zeros(10_000)
    data, buffers = ser.serialize(array)
    array[:] = 1.0  # the caller reuses its array after put() or .remote()
    np.testing.assert_array_equal(ser.deserialize(data, _as_received(buffers)), np.zeros(10_000))


def test_a_read_only_array_is_shared_not_copied() -> None:
    array = np.ones(10_000)
    array.flags.writeable = False
    _, buffers = ser.serialize(array)
    assert np.shares_memory(np.frombuffer(buffers[0], dtype=array.dtype), array)


def test_refs_nested_in_a_value_are_recorded_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_refs, "_worker", None)  # no runtime: refs are plain data here
    inner = ObjectRef(b"inner", "owner", "127.0.0.1:1")
    other = ObjectRef(b"other", "peer", "127.0.0.1:2")
    data, _ = ser.serialize({"refs": [inner, other], "n": 1})
    assert data.refs == [(b"inner", "owner", "127.0.0.1:1"), (b"other", "peer", "127.0.0.1:2")]
    back = ser.deserialize(data)
    assert back["refs"] == [inner, other]
    assert back["refs"][1].owner_address == "127.0.0.1:2"
    assert ser.serialize([1, 2])[0].refs == []  # nothing leaks into the next value


def test_an_unpicklable_value_is_a_serialization_error_that_names_its_type() -> None:
    with pytest.raises(SerializationError, match=r"_thread\.lock") as info:
        ser.serialize(threading.Lock())
    assert isinstance(info.value, TypeError)


def test_an_unpicklable_value_nested_in_arguments_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match=r"cannot serialize .*lock"):
        ser.serialize_args((1, {"lock": threading.Lock()}), {})


def test_a_failed_serialization_leaves_no_refs_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_refs, "_worker", None)
    ref = ObjectRef(b"r", "owner", "127.0.0.1:1")
    with pytest.raises(SerializationError):
        ser.serialize([ref, threading.Lock()])
    assert ser.serialization_context.refs is None
    assert ser.serialize([1])[0].refs == []


def test_bytes_that_do_not_unpickle_are_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot deserialize"):
        ser.deserialize(Value(ser.KIND_PICKLE, b"not a pickle"))


def test_an_unknown_value_kind_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="unknown value kind 42"):
        ser.deserialize(Value(42, b""))


# --- errors -----------------------------------------------------------------------------------


def _raised(error: BaseException) -> BaseException:
    """``error`` with a traceback, as a task's failure has."""
    try:
        raise error
    except BaseException as exc:
        return exc


def _remote(error: BaseException, function_name: str = "remote_fn") -> BaseException:
    """What the caller gets for a task that raised ``error``."""
    return ser.error_from_value(ser.error_value(_raised(error), function_name))


def test_a_remote_value_error_is_both_a_task_error_and_a_value_error() -> None:
    err = _remote(ValueError("bad input"), "parse")
    assert isinstance(err, TaskError)
    assert isinstance(err, ValueError)
    assert err.args == ("bad input",)
    assert err.function_name == "parse"
    assert isinstance(err.cause, ValueError)
    text = str(err)
    assert text.startswith("remote error in parse:")
    assert "Traceback (most recent call last)" in text
    assert "in _raised" in text  # the remote frames
    assert "ValueError: bad input" in text
    with pytest.raises(ValueError, match="bad input"):
        raise err


@pytest.mark.parametrize(
    "error",
    [KeyError("k"), ZeroDivisionError("z"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")],
    ids=lambda e: type(e).__name__,
)
def test_a_remote_builtin_error_keeps_its_type(error: Exception) -> None:
    err = _remote(error)
    assert isinstance(err, TaskError)
    assert isinstance(err, type(error))
    assert err.args == error.args


@pytest.mark.parametrize(
    "error",
    [OSError("o"), FileNotFoundError(2, "missing"), ConnectionError("c"), TimeoutError("t")],
    ids=lambda e: type(e).__name__,
)
def test_a_remote_os_error_keeps_its_type(error: Exception) -> None:
    err = _remote(error)
    assert isinstance(err, TaskError)
    assert isinstance(err, type(error))


class AppError(Exception):
    """An error class the caller can import, with state of its own."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def test_a_remote_custom_error_keeps_its_type_and_attributes() -> None:
    err = _remote(AppError("quota exceeded", code=429))
    assert isinstance(err, TaskError)
    assert isinstance(err, AppError)
    assert err.code == 429
    assert "AppError: quota exceeded" in str(err)


def test_a_remote_error_can_travel_on_and_stay_what_it_was() -> None:
    first = _remote(ValueError("deep"), "inner")
    second = ser.error_from_value(ser.error_value(first, "outer"))
    assert isinstance(second, TaskError)
    assert isinstance(second, ValueError)
    assert second.function_name == "inner"
    assert "ValueError: deep" in str(second)
    again = pickle.loads(pickle.dumps(second))
    assert isinstance(again, TaskError)
    assert isinstance(again, ValueError)
    assert str(again) == str(second)


def test_an_unpicklable_error_arrives_as_text() -> None:
    class LockedError(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.lock = threading.Lock()

    err = _remote(LockedError("holding a lock"), "locked")
    assert type(err) is TaskError
    assert err.cause is None
    text = str(err)
    assert "LockedError: holding a lock" in text
    assert "could not be pickled; it arrives as text" in text


def test_an_error_that_pickles_but_cannot_be_rebuilt_arrives_as_text() -> None:
    class TwoArgError(Exception):
        def __init__(self, a: str, b: str) -> None:
            super().__init__(f"{a}/{b}")  # args no longer match __init__

    err = _remote(TwoArgError("x", "y"))
    assert type(err) is TaskError
    assert "TwoArgError: x/y" in str(err)
    assert "arrives as text" in str(err)


def test_an_error_whose_class_the_caller_lacks_arrives_as_text() -> None:
    info = ser.ErrorInfo("task", "Missing", "gone", "fn", "Traceback: ...", b"not a pickle")
    err = ser.error_from_value(Value(ser.KIND_ERROR, msgspec.msgpack.encode(info)))
    assert type(err) is TaskError
    assert "could not be rebuilt here" in str(err)
    assert "Traceback: ..." in str(err)


def test_an_explicit_traceback_text_is_kept() -> None:
    value = ser.error_value(ValueError("v"), "fn", tb="the remote traceback\n")
    err = ser.error_from_value(value)
    assert isinstance(err, ValueError)
    assert err.remote_traceback == "the remote traceback\n"


def test_a_base_exception_arrives_as_a_plain_task_error_with_its_cause() -> None:
    err = _remote(SystemExit(3))
    assert type(err) is TaskError
    assert isinstance(err.cause, SystemExit)
    assert "SystemExit: 3" in str(err)


@pytest.mark.parametrize("cls", [NodeDiedError, ActorDiedError])
def test_a_system_error_arrives_as_its_own_class(cls: type[RuntimeBaseError]) -> None:
    err = ser.error_from_value(ser.error_value(cls("the node went away"), "fn"))
    assert type(err) is cls
    assert str(err) == "the node went away"
    err = ser.error_from_value(ser.system_error_value(cls, "by name"))
    assert type(err) is cls
    assert str(err) == "by name"


def test_an_unknown_system_error_arrives_as_the_root_error() -> None:
    info = ser.ErrorInfo("system", "NoSuchError", "what happened")
    err = ser.error_from_value(Value(ser.KIND_ERROR, msgspec.msgpack.encode(info)))
    assert type(err) is RuntimeBaseError
    assert str(err) == "NoSuchError: what happened"


def test_deserializing_an_error_value_raises_it() -> None:
    with pytest.raises(ValueError, match="raised remotely") as info:
        ser.deserialize(ser.error_value(_raised(ValueError("raised remotely")), "fn"))
    assert isinstance(info.value, TaskError)
