"""ActorPool on a real local mesh: order, completion order, queued submissions, errors,
timeouts, and the pool's bookkeeping of idle, busy and dead actors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import runtime
from runtime.exceptions import ActorDiedError, GetTimeoutError, TaskError
from runtime.util import ActorPool

pytestmark = pytest.mark.timeout(60)


@runtime.remote
class Worker:
    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def double(self, v: int) -> int:
        return 2 * v

    def slow_double(self, v: int) -> int:
        time.sleep(0.05 * v)  # simulated work: earlier values take longer
        return 2 * v

    def fail_on(self, v: int) -> int:
        if v == 3:
            raise ValueError(f"bad value {v}")
        return v

    def whoami(self, v: int) -> tuple[str, int]:
        return self.tag, v


@runtime.remote
class Gate:
    """Calls wait until open() is called: results whose readiness the test controls."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def wait(self, v: int) -> int:
        await self.opened.wait()
        return v

    async def open(self) -> None:
        self.opened.set()


def double(a: Any, v: int) -> Any:
    return a.double.remote(v)


def test_map_returns_results_in_submission_order(cluster: Any) -> None:
    pool = ActorPool([Worker.remote(), Worker.remote()])
    values = [5, 4, 3, 2, 1, 0]  # the first values finish last
    assert list(pool.map(lambda a, v: a.slow_double.remote(v), values)) == [2 * v for v in values]
    assert not pool.has_next()


def test_map_unordered_returns_every_result(cluster: Any) -> None:
    pool = ActorPool([Worker.remote(), Worker.remote()])
    results = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v), [3, 0, 2, 1]))
    assert sorted(results) == [0, 2, 4, 6]


def test_map_uses_every_actor(cluster: Any) -> None:
    actors = [Worker.remote(f"w{i}") for i in range(3)]
    pool = ActorPool(actors)
    results = list(pool.map(lambda a, v: a.whoami.remote(v), range(12)))
    assert [v for _, v in results] == list(range(12))
    assert {tag for tag, _ in results} == {"w0", "w1", "w2"}


def test_submit_queues_values_while_every_actor_is_busy(cluster: Any) -> None:
    pool = ActorPool([Worker.remote()])
    assert pool.has_free()
    for v in range(4):
        pool.submit(double, v)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert pool.has_next()
    assert [pool.get_next() for _ in range(4)] == [0, 2, 4, 6]
    assert not pool.has_next()
    assert pool.has_free()


def test_get_next_unordered_returns_the_ready_result_first(cluster: Any) -> None:
    gate = Gate.remote()
    pool = ActorPool([Worker.remote(), gate])  # submit takes the last idle actor first
    pool.submit(lambda a, v: a.wait.remote(v), 1)  # the gate, blocked
    pool.submit(double, 21)  # the worker
    assert pool.get_next_unordered(timeout=30) == 42
    with pytest.raises(GetTimeoutError):
        pool.get_next_unordered(timeout=0.1)
    runtime.get(gate.open.remote())
    assert pool.get_next_unordered(timeout=30) == 1


def test_a_failed_call_raises_its_error_and_the_actor_returns_to_the_pool(cluster: Any) -> None:
    pool = ActorPool([Worker.remote()])
    for v in range(5):
        pool.submit(lambda a, v: a.fail_on.remote(v), v)
    assert [pool.get_next() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 3") as info:
        pool.get_next()
    assert isinstance(info.value, TaskError)
    assert pool.get_next() == 4  # the same actor ran the last value after the failure
    assert pool.has_free()


def test_map_raises_the_error_while_iterating(cluster: Any) -> None:
    pool = ActorPool([Worker.remote(), Worker.remote()])
    results = pool.map(lambda a, v: a.fail_on.remote(v), range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 3"):
        next(results)
    assert list(results) == []  # a generator ends at its error (as in Ray) ...
    assert [pool.get_next(timeout=30) for _ in range(2)] == [4, 5]  # ... the pool keeps the rest


def test_get_next_times_out_and_keeps_the_result_in_line(cluster: Any) -> None:
    gate = Gate.remote()
    pool = ActorPool([gate])
    pool.submit(lambda a, v: a.wait.remote(v), 7)
    with pytest.raises(GetTimeoutError) as info:
        pool.get_next(timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert pool.has_next()
    runtime.get(gate.open.remote())
    assert pool.get_next(timeout=30) == 7


def test_get_next_can_ignore_a_timed_out_call(cluster: Any) -> None:
    gate = Gate.remote()
    pool = ActorPool([gate])
    pool.submit(lambda a, v: a.wait.remote(v), 1)
    pool.submit(lambda a, v: a.wait.remote(v), 2)  # queued: the gate is busy
    with pytest.raises(GetTimeoutError, match="ignored"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    runtime.get(gate.open.remote())
    assert pool.get_next(timeout=30) == 2  # the first submission was skipped
    assert not pool.has_next()


def test_get_next_with_nothing_submitted_raises_stop_iteration(cluster: Any) -> None:
    pool = ActorPool([Worker.remote()])
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_after_get_next_unordered_is_refused(cluster: Any) -> None:
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(double, 1)
    pool.submit(double, 2)
    assert pool.get_next_unordered(timeout=30) in (2, 4)
    pool.get_next_unordered(timeout=30)
    pool.submit(double, 3)
    assert pool.get_next(timeout=30) == 6


def test_push_and_pop_idle(cluster: Any) -> None:
    a, b = Worker.remote("a"), Worker.remote("b")
    pool = ActorPool([a])
    pool.push(b)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    popped = {pool.pop_idle(), pool.pop_idle()}
    assert popped == {a, b}
    assert pool.pop_idle() is None
    with pytest.raises(ValueError, match="no actors"):
        pool.submit(double, 1)
    pool.push(a)
    pool.submit(double, 1)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)  # busy, still the pool's
    assert pool.get_next(timeout=30) == 2


def test_push_hands_a_queued_submission_to_the_new_actor(cluster: Any) -> None:
    gate = Gate.remote()
    pool = ActorPool([gate])
    pool.submit(lambda a, v: a.wait.remote(v), 1)
    pool.submit(lambda a, v: a.whoami.remote(v), 2)  # queued until an actor is free
    pool.push(Worker.remote("new"))
    assert pool.get_next_unordered(timeout=30) == ("new", 2)
    runtime.get(gate.open.remote())
    assert pool.get_next_unordered(timeout=30) == 1


def test_a_dead_actor_leaves_the_pool(cluster: Any) -> None:
    live, dead = Worker.remote(), Worker.remote()
    runtime.get([live.double.remote(0), dead.double.remote(0)])
    runtime.kill(dead)
    pool = ActorPool([live, dead])  # submit takes the last idle actor first: the dead one
    pool.submit(double, 1)
    pool.submit(double, 2)
    pool.submit(double, 3)
    with pytest.raises(ActorDiedError):
        pool.get_next(timeout=30)
    assert [pool.get_next(timeout=30) for _ in range(2)] == [4, 6]
    assert pool.pop_idle() == live
    assert pool.pop_idle() is None


def test_values_left_without_a_live_actor_wait_for_a_push(cluster: Any) -> None:
    dead = Worker.remote()
    runtime.get(dead.double.remote(0))
    runtime.kill(dead)
    pool = ActorPool([dead])
    pool.submit(double, 1)
    pool.submit(double, 2)  # queued behind the dead actor's call
    with pytest.raises(ActorDiedError):
        pool.get_next(timeout=30)
    assert pool.has_next()  # the queued value is not dropped silently
    with pytest.raises(RuntimeError, match="push"):
        pool.get_next(timeout=30)
    pool.push(Worker.remote())
    assert pool.get_next(timeout=30) == 4


def test_get_next_unordered_can_ignore_a_timed_out_call(cluster: Any) -> None:
    gate = Gate.remote()
    pool = ActorPool([gate])
    pool.submit(lambda a, v: a.wait.remote(v), 1)
    with pytest.raises(GetTimeoutError, match="ignored"):
        pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next()
    assert pool.has_free()  # the gate is back in the pool
    runtime.get(gate.open.remote())
    pool.submit(lambda a, v: a.wait.remote(v), 2)
    assert pool.get_next_unordered(timeout=30) == 2


def test_bad_input_is_refused_before_any_work(cluster: Any) -> None:
    with pytest.raises(TypeError, match="actor handles"):
        ActorPool([object()])  # type: ignore[list-item]
    w = Worker.remote()
    with pytest.raises(ValueError, match="same actor twice"):
        ActorPool([w, w])
    pool = ActorPool([w])
    with pytest.raises(TypeError, match="callable"):
        pool.submit(42, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return the ObjectRef"):
        pool.submit(lambda a, v: v, 1)
    assert pool.has_free()  # the actor went back to the pool
    assert list(pool.map(double, [1, 2])) == [2, 4]


def test_map_drops_results_left_from_earlier_submissions(cluster: Any) -> None:
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(double, 100)
    pool.submit(double, 200)
    pool.submit(double, 300)
    assert list(pool.map(double, [1, 2, 3])) == [2, 4, 6]


def test_a_call_with_several_returns(cluster: Any) -> None:
    @runtime.remote
    class Split:
        @runtime.method(num_returns=2)
        def split(self, v: int) -> tuple[int, int]:
            return v // 10, v % 10

    pool = ActorPool([Split.remote(), Split.remote()])
    assert list(pool.map(lambda a, v: a.split.remote(v), [12, 34, 56])) == [
        [1, 2],
        [3, 4],
        [5, 6],
    ]


def test_the_pool_works_inside_a_task(cluster: Any) -> None:
    @runtime.remote
    def drive(actors: list[Any]) -> list[int]:
        pool = ActorPool(actors)
        return list(pool.map(lambda a, v: a.double.remote(v), range(5)))

    assert runtime.get(drive.remote([Worker.remote(), Worker.remote()]), timeout=30) == [
        0,
        2,
        4,
        6,
        8,
    ]


def test_runtime_util_exports_its_documented_names() -> None:
    import runtime.util

    assert sorted(runtime.util.__all__) == runtime.util.__all__
    assert {"ActorPool", "Empty", "Full", "Queue"} <= set(runtime.util.__all__)
    for name in runtime.util.__all__:
        assert getattr(runtime.util, name).__doc__, f"runtime.util.{name} has no docstring"
    assert runtime.util is runtime.__getattr__("util")  # runtime.util on attribute access
