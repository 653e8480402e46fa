"""Errors cross the wire as codes: the receiver raises the class the code stands for, and code
that reacts to a kind of failure compares codes, never messages or class names."""

from __future__ import annotations

import msgspec
import pytest

from runtime.core.common.errors import ErrorCode, error_class, error_code
from runtime.core.common.exceptions import (
    ActorUnavailableError,
    InfeasibleError,
    NodeRetiredError,
    NoRoomError,
    RuntimeBaseError,
)
from runtime.core.objects import serialization as ser
from runtime.core.wire import protocol as p


@pytest.mark.parametrize("code", [c for c in ErrorCode if error_class(c) is not None])
def test_every_code_is_raised_as_its_class_from_a_reply(code: ErrorCode) -> None:
    cls = error_class(code)
    assert cls is not None
    assert error_code(cls) == code
    reply = msgspec.msgpack.decode(
        msgspec.msgpack.encode(p.Reply(3, error="it failed", error_type="Whatever", code=code)),
        type=p.Reply,
    )
    with pytest.raises(cls) as info:
        p.unwrap_reply(reply)
    assert type(info.value) is cls


def test_the_class_name_on_the_wire_does_not_decide_the_class() -> None:
    reply = p.Reply(1, error="no", error_type="ValueError", code=ErrorCode.INFEASIBLE)
    with pytest.raises(InfeasibleError):
        p.unwrap_reply(reply)


def test_a_retired_node_is_told_by_code_whatever_the_message_says() -> None:
    reply = p.Reply(1, error="go away", error_type="X", code=ErrorCode.NODE_RETIRED)
    with pytest.raises(NodeRetiredError) as info:
        p.unwrap_reply(reply)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_an_unknown_code_arrives_as_the_root_error_with_its_name() -> None:
    with pytest.raises(RuntimeBaseError, match=r"^SomeError: boom$") as info:
        p.unwrap_reply(p.Reply(1, error="boom", error_type="SomeError", code=999))
    assert type(info.value) is RuntimeBaseError


def test_a_reply_without_an_error_is_its_value() -> None:
    assert p.unwrap_reply(p.Reply(1, value={"a": 1})) == {"a": 1}


def test_system_error_values_carry_their_code() -> None:
    assert ser.system_error_code(ser.system_error_value(NoRoomError, "full")) == ErrorCode.NO_ROOM
    value = ser.error_value(ActorUnavailableError("restarting"), "f")
    assert ser.system_error_code(value) == ErrorCode.ACTOR_UNAVAILABLE
    assert ser.system_error_code(ser.error_value(ValueError("user"), "f")) is None


def test_no_room_is_sent_by_code_but_raised_as_the_root_error() -> None:
    err = ser.error_from_value(ser.system_error_value(NoRoomError, "no room on this node now"))
    assert type(err) is RuntimeBaseError
    assert str(err) == "NoRoomError: no room on this node now"
