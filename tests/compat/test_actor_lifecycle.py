"""Ray's actor lifecycle on this runtime: ``sys.exit()`` in a method ends the actor,
``async def __init__`` is awaited before any call runs."""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import runtime
from runtime import exceptions as exc

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def mesh2() -> Iterator[None]:
    runtime.init(num_cpus=2)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
class Quitter:
    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls

    def quit(self) -> None:
        sys.exit(0)


@runtime.remote(max_restarts=2, max_task_retries=-1)
class Phoenix:
    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls

    def crash_once(self) -> str:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            sys.exit(1)
        return "ran again on a fresh instance"


@runtime.remote(max_restarts=3)
class AsyncQuitter:
    async def ping(self) -> str:
        return "pong"

    async def quit(self) -> None:
        from runtime.actor import exit_actor

        await asyncio.sleep(0)
        exit_actor()


def test_sys_exit_in_a_method_ends_an_actor_without_restarts(mesh2: None) -> None:
    q = Quitter.remote()
    assert runtime.get(q.ping.remote(), timeout=30) == 1
    with pytest.raises(exc.ActorDiedError, match="exited"):
        runtime.get(q.quit.remote(), timeout=30)
    with pytest.raises(exc.RayActorError, match="exited"):
        runtime.get(q.ping.remote(), timeout=30)


def test_sys_exit_restarts_an_actor_with_restarts_left_and_retries_the_call(
    mesh2: None, tmp_path: pathlib.Path
) -> None:
    # As in Ray, sys.exit() is the actor's process ending: max_restarts brings it back and
    # max_task_retries sends the call again, to the fresh instance.
    a = Phoenix.remote(str(tmp_path / "crashed"))
    assert runtime.get([a.ping.remote(), a.ping.remote()], timeout=30) == [1, 2]
    assert runtime.get(a.crash_once.remote(), timeout=60) == "ran again on a fresh instance"
    assert runtime.get(a.ping.remote(), timeout=30) == 1  # a fresh instance
    runtime.kill(a)


@runtime.remote(max_restarts=3)
class Leaver:
    def ping(self) -> str:
        return "here"

    def leave(self) -> None:
        from runtime.actor import exit_actor

        exit_actor()


def test_exit_actor_ends_an_actor_for_good_whatever_its_max_restarts(mesh2: None) -> None:
    q = Leaver.remote()
    assert runtime.get(q.ping.remote(), timeout=30) == "here"
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):
        runtime.get(q.leave.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError, match="exit_actor"):
        runtime.get(q.ping.remote(), timeout=30)


def test_calls_queued_behind_sys_exit_fail_with_actor_died(mesh2: None) -> None:
    q = Quitter.remote()
    runtime.get(q.ping.remote(), timeout=30)
    refs = [q.quit.remote(), q.ping.remote(), q.ping.remote()]
    for ref in refs:
        with pytest.raises(exc.ActorDiedError):
            runtime.get(ref, timeout=30)


def test_exit_actor_in_an_async_method_ends_the_actor(mesh2: None) -> None:
    q = AsyncQuitter.remote()
    assert runtime.get(q.ping.remote(), timeout=30) == "pong"
    with pytest.raises(exc.ActorDiedError, match="exited"):
        runtime.get(q.quit.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError):
        runtime.get(q.ping.remote(), timeout=30)


@runtime.remote
def exits_in_a_task() -> None:
    sys.exit(3)


def test_sys_exit_in_a_task_fails_that_task_only(mesh2: None) -> None:
    with pytest.raises(exc.TaskError):
        runtime.get(exits_in_a_task.remote(), timeout=30)
    assert runtime.get(runtime.remote(lambda: 5).remote(), timeout=30) == 5


@runtime.remote
class AsyncInit:
    async def __init__(self, start: int) -> None:
        await asyncio.sleep(0.05)  # a call that ran before this finished would see no value
        self.value = start
        self.loop = asyncio.get_running_loop()

    async def get(self) -> int:
        assert asyncio.get_running_loop() is self.loop
        return self.value

    async def actor_id(self) -> str | None:
        return runtime.get_runtime_context().get_actor_id()


@runtime.remote
class AsyncInitFails:
    async def __init__(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("no database")

    async def get(self) -> int:
        return 1


def test_async_init_is_awaited_on_the_node_loop_before_any_call(mesh2: None) -> None:
    a = AsyncInit.remote(41)
    refs = [a.get.remote() for _ in range(3)]
    assert runtime.get(refs, timeout=30) == [41, 41, 41]
    assert runtime.get(a.actor_id.remote(), timeout=30) == a._actor_id.hex()


def test_an_async_init_that_raises_fails_the_calls_with_its_error(mesh2: None) -> None:
    a = AsyncInitFails.remote()
    with pytest.raises(exc.TaskError, match="no database"):  # as a sync constructor
        runtime.get(a.get.remote(), timeout=30)


@runtime.remote(num_cpus=1)
def current_group() -> tuple[str | None, str | None]:
    from runtime import util

    pg = util.get_current_placement_group()
    return (pg.id if pg else None), runtime.get_runtime_context().get_placement_group_id()


@runtime.remote(num_cpus=1)
class InGroup:
    def where(self) -> tuple[str | None, int]:
        from runtime import util

        pg = util.get_current_placement_group()
        return (pg.id if pg else None), (pg.bundle_count if pg else 0)


def test_get_current_placement_group_is_the_group_a_task_or_actor_runs_in(mesh2: None) -> None:
    from runtime import util
    from runtime.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    assert util.get_current_placement_group() is None  # the driver
    assert runtime.get(current_group.remote(), timeout=30) == (None, None)
    pg = util.placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert pg.wait(30)
    try:
        in_pg = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
        task = current_group.options(scheduling_strategy=in_pg).remote()
        assert runtime.get(task, timeout=30) == (pg.id, pg.id)
        actor = InGroup.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote()
        assert runtime.get(actor.where.remote(), timeout=30) == (pg.id, 2)
        runtime.kill(actor)
    finally:
        util.remove_placement_group(pg)


@runtime.remote
class Sleeper:
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def sleep(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "cancelled inside"
        return "slept"

    async def wait_started(self) -> bool:
        await self.started.wait()
        return True


def test_a_cancelled_async_actor_call_raises_what_ray_task_error_catches(mesh2: None) -> None:
    s = Sleeper.remote()
    ref = s.sleep.remote()
    assert runtime.get(s.wait_started.remote(), timeout=30)
    runtime.cancel(ref)
    with pytest.raises(exc.RayTaskError) as info:
        runtime.get(ref, timeout=30)
    assert isinstance(info.value, exc.TaskCancelledError)  # Ray's name for it still catches
    assert "was cancelled" in str(info.value)


def test_method_accepts_enable_task_events_with_a_one_time_warning(mesh2: None) -> None:
    with pytest.warns(UserWarning, match="enable_task_events"):

        @runtime.remote
        class Quiet:
            @runtime.method(enable_task_events=False)
            def foo(self) -> int:
                return 1

    assert runtime.get(Quiet.remote().foo.remote(), timeout=30) == 1
    with pytest.raises(TypeError):
        runtime.method(no_such_option=1)  # type: ignore[call-arg]


@runtime.remote(num_returns="dynamic")
def split(values: list[int], size: int) -> Any:
    while values:
        yield values[:size]
        values = values[size:]


@runtime.remote
def total(chunks: runtime.DynamicObjectRefGenerator) -> int:
    return sum(sum(runtime.get(ref)) for ref in chunks)


@runtime.remote
def fails_after_two() -> Any:
    yield 0
    yield 1
    raise KeyError("gone")


def test_a_dynamic_generator_task_gives_one_ref_to_the_refs_of_its_values(mesh2: None) -> None:
    ref = split.remote(list(range(10)), 4)
    assert isinstance(ref, runtime.ObjectRef)
    gen = runtime.get(ref, timeout=30)
    assert isinstance(gen, runtime.DynamicObjectRefGenerator) and len(gen) == 3
    assert [runtime.get(r, timeout=30) for r in gen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert runtime.get(total.remote(ref), timeout=30) == 45  # its ref passes to a task
    assert runtime.get(total.remote(gen), timeout=30) == 45  # and so does the generator


def test_a_dynamic_generator_stores_its_error_in_a_final_ref(mesh2: None) -> None:
    first, second, last = runtime.get(
        fails_after_two.options(num_returns="dynamic").remote(), timeout=30
    )
    assert runtime.get([first, second], timeout=30) == [0, 1]
    with pytest.raises(KeyError):
        runtime.get(last, timeout=30)
    # num_returns=2 takes the first two items; the error after them only goes to the log.
    assert [runtime.get(r) for r in fails_after_two.options(num_returns=2).remote()] == [0, 1]


def test_a_generator_with_num_returns_n_that_raises_fills_the_rest_with_its_error(
    mesh2: None,
) -> None:
    refs = fails_after_two.options(num_returns=4).remote()
    assert runtime.get(refs[:2], timeout=30) == [0, 1]
    for ref in refs[2:]:
        with pytest.raises(KeyError):
            runtime.get(ref, timeout=30)


def test_actor_method_options_warn_about_rays_call_options_and_refuse_unknown_ones(
    mesh2: None,
) -> None:
    q = Quitter.remote()
    with pytest.warns(UserWarning, match="max_task_retries"):
        ping = q.ping.options(max_task_retries=3)
    assert runtime.get(ping.remote(), timeout=30) == 1
    with pytest.raises(TypeError, match="no_such_option"):
        q.ping.options(no_such_option=1)
    runtime.kill(q)


@runtime.remote(max_restarts=1)
class OneLife:
    def ping(self) -> str:
        return "here"

    def quit(self) -> None:
        sys.exit(1)


def test_sys_exit_with_no_restarts_left_ends_the_actor(mesh2: None) -> None:
    a = OneLife.remote()
    with pytest.raises(exc.ActorDiedError, match="not retried"):  # max_task_retries=0
        runtime.get(a.quit.remote(), timeout=30)
    assert runtime.get(a.ping.remote(), timeout=60) == "here"  # restarted once
    with pytest.raises(exc.ActorDiedError):
        runtime.get(a.quit.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError, match="no restarts left"):
        runtime.get(a.ping.remote(), timeout=60)
