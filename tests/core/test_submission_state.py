"""The caller's decisions without I/O, as tables: when a task is tried again, and in what order
actor calls go out again after a restart (no mesh: these run in milliseconds)."""

from __future__ import annotations

import pytest

from runtime.core.common.exceptions import NodeDiedError
from runtime.core.objects import serialization as ser
from runtime.core.submission.actor_calls import ActorState
from runtime.core.submission.pending import TaskRetry, retry_allowed, take_retry
from runtime.core.wire import protocol as p


class Flaky(Exception):
    pass


class Other(Exception):
    pass


def _retry(retries_left: int, allowed: bool | tuple[type[BaseException], ...] = False) -> TaskRetry:
    args, _ = ser.serialize(())
    msg = p.SubmitTask(b"t" * 16, b"f", "f", None, args, 1, {}, "owner", "127.0.0.1:1")
    return TaskRetry(msg, [], lambda: b"", retries_left, allowed)


@pytest.mark.parametrize(
    ("retries_left", "failures", "expect_taken", "left_after", "attempt_after"),
    [
        (0, 1, [False], 0, 0),  # no retries: never tried again
        (2, 3, [True, True, False], 0, 2),  # two tries, then none
        (-1, 3, [True, True, True], -1, 3),  # without limit
    ],
)
def test_a_task_is_tried_again_while_it_has_tries_left(
    retries_left: int,
    failures: int,
    expect_taken: list[bool],
    left_after: int,
    attempt_after: int,
) -> None:
    retry = _retry(retries_left)
    taken = [take_retry(retry, f"failure {i}") for i in range(failures)]
    assert taken == expect_taken
    assert retry.retries_left == left_after
    assert retry.msg.attempt == attempt_after  # each new try is a new attempt, run again
    assert (retry.failures or []) == [f"failure {i}" for i in range(sum(expect_taken))]


def test_no_retry_record_means_no_retry() -> None:
    assert take_retry(None, "its node died") is False


def _app_error(exc: BaseException) -> p.Value:
    try:
        raise exc
    except BaseException as raised:
        return ser.error_value(raised, "f")


@pytest.mark.parametrize(
    ("allowed", "error", "expect"),
    [
        (False, _app_error(Flaky("x")), False),  # retry_exceptions off
        (True, _app_error(Flaky("x")), True),  # any exception the code raised
        ((Flaky,), _app_error(Flaky("x")), True),  # a listed class
        ((Flaky,), _app_error(Other("x")), False),  # another class
        ((Exception,), _app_error(Flaky("x")), True),  # a base class of it
        (True, ser.system_error_value(NodeDiedError, "gone"), False),  # not the user's error
    ],
)
def test_retry_exceptions_decides_which_errors_are_tried_again(
    allowed: bool | tuple[type[BaseException], ...], error: p.Value, expect: bool
) -> None:
    assert retry_allowed(allowed, error) is expect


def _call(n: int) -> tuple[p.CallActor, list[memoryview]]:
    args, _ = ser.serialize(())
    task_id = n.to_bytes(16, "big")  # task ids grow in submission order
    return p.CallActor(task_id, b"a", "m", args, 1, "owner", "127.0.0.1:1"), []


def _location(max_restarts: int, num_restarts: int = 0) -> p.ActorLocation:
    return p.ActorLocation(
        b"a", "node", "127.0.0.1:2", "ALIVE", "A", None, "", 1, False,
        max_restarts=max_restarts, num_restarts=num_restarts,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("queued", "resent", "expect"),
    [
        ([], [1, 2, 3], [1, 2, 3]),
        ([4, 5], [1, 2, 3], [1, 2, 3, 4, 5]),  # calls in flight go before later queued ones
        ([2, 5], [1, 3, 4], [1, 2, 3, 4, 5]),  # merged in submission order
        ([3], [], [3]),
    ],
)
def test_calls_sent_again_after_a_restart_keep_the_callers_order(
    queued: list[int], resent: list[int], expect: list[int]
) -> None:
    state = ActorState(b"a")
    state.queue.extend(_call(n) for n in queued)
    state.requeue([_call(n) for n in resent])
    assert [int.from_bytes(msg.task_id, "big") for msg, _ in state.queue] == expect


@pytest.mark.parametrize(
    ("max_restarts", "tracked"),
    [(0, False), (1, True), (-1, True)],
)
def test_calls_are_kept_for_a_resend_only_when_the_actor_may_restart(
    max_restarts: int, tracked: bool
) -> None:
    state = ActorState(b"a", _location(max_restarts, num_restarts=2))
    msg, bufs = _call(1)
    state.track(msg, bufs)
    assert (msg.task_id in state.inflight) is tracked
    if tracked:
        assert state.inflight[msg.task_id][2] == 2  # the incarnation it went to
