"""Actors on a real local mesh: state, ordering, concurrency, names, lifetimes, errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

import runtime
from runtime.exceptions import ActorDiedError, PendingCallsLimitExceeded, TaskError

from ..conftest import until

pytestmark = pytest.mark.timeout(60)


@runtime.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.seen = []

    def incr(self, n=1):
        self.value += n
        self.seen.append(n)
        return self.value

    async def aincr(self, n=1):
        self.value += n
        self.seen.append(n)
        return self.value

    def history(self):
        return list(self.seen)

    @runtime.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def where(self):
        ctx = runtime.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_actor_name(), ctx.get_node_id()


def test_an_actor_keeps_state_across_sync_and_async_methods(cluster):
    c = Counter.remote(10)
    assert runtime.get(c.incr.remote()) == 11
    assert runtime.get(c.aincr.remote(5)) == 16
    a, b = c.pair.remote()
    assert runtime.get([a, b]) == [16, -16]


def test_calls_from_one_caller_run_in_the_order_they_were_made(cluster):
    c = Counter.remote()
    refs = [(c.incr if i % 3 else c.aincr).remote(i) for i in range(200)]
    runtime.get(refs)
    assert runtime.get(c.history.remote()) == list(range(200))


def test_unknown_methods_and_direct_calls_are_errors(cluster):
    c = Counter.remote()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        c.nope.remote()
    with pytest.raises(TypeError, match="remote"):
        Counter()


def test_max_concurrency_runs_sync_calls_on_several_threads(cluster):
    @runtime.remote
    class Meeting:
        def __init__(self):
            self.barrier = threading.Barrier(2, timeout=10)

        def meet(self):
            return self.barrier.wait() in (0, 1)

    m = Meeting.options(max_concurrency=2).remote()
    assert runtime.get([m.meet.remote(), m.meet.remote()], timeout=30) == [True, True]


def test_async_actor_methods_interleave_on_the_loop(cluster):
    @runtime.remote
    class PingPong:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await asyncio.wait_for(self.event.wait(), 10)
            return "woken"

        async def wake(self):
            self.event.set()
            return "woke"

    p = PingPong.remote()
    first = p.wait.remote()
    assert runtime.get(p.wake.remote()) == "woke"
    assert runtime.get(first) == "woken"


def test_named_actors_are_found_by_name_and_namespace(cluster):
    Counter.options(name="shared", namespace="ns1").remote(7)
    h = runtime.get_actor("shared", namespace="ns1")
    assert runtime.get(h.incr.remote()) == 8
    with pytest.raises(ValueError, match="no actor"):
        runtime.get_actor("shared", namespace="other")
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="shared", namespace="ns1").remote()
    again = Counter.options(name="shared", namespace="ns1", get_if_exists=True).remote()
    assert runtime.get(again.incr.remote()) == 9


def test_a_handle_that_get_if_exists_found_inside_an_async_actor_works_in_another_process(
    cluster,
):
    # An async actor creates on its loop, so its request to the head goes in the background
    # and the handle it returns carries the id it made; the head answers that id with the
    # actor that exists.
    first = Counter.options(name="found", lifetime="detached").remote(40)
    assert runtime.get(first.incr.remote()) == 41

    @runtime.remote
    class Finder:
        async def find(self):
            return [Counter.options(name="found", get_if_exists=True, lifetime="detached").remote()]

    (found,) = runtime.get(Finder.remote().find.remote(), timeout=30)
    assert runtime.get(found.incr.remote(), timeout=30) == 42
    assert runtime.get(first.incr.remote()) == 43
    runtime.kill(first)


def test_killed_actors_fail_calls_with_actor_died_error(cluster):
    c = Counter.options(name="doomed").remote()
    assert runtime.get(c.incr.remote()) == 1
    runtime.kill(c)
    with pytest.raises(ActorDiedError):
        runtime.get(c.incr.remote(), timeout=10)
    with pytest.raises(ValueError):
        runtime.get_actor("doomed")


def test_a_constructor_that_raises_kills_the_actor_and_every_call_reraises_it(cluster):
    @runtime.remote
    class Broken:
        def __init__(self):
            raise KeyError("no config")

        def ping(self):
            return "pong"

    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(KeyError, match="no config") as info:
            runtime.get(b.ping.remote(), timeout=10)
        assert isinstance(info.value, TaskError)


def test_handles_pass_into_tasks_and_other_actors(cluster):
    c = Counter.remote()

    @runtime.remote
    def bump(handle, n):
        return runtime.get(handle.incr.remote(n))

    @runtime.remote
    class Relay:
        def __init__(self, target):
            self.target = target

        async def forward(self, n):
            return await self.target.aincr.remote(n)

    assert runtime.get(bump.remote(c, 5)) == 5
    relay = Relay.remote(c)
    assert runtime.get(relay.forward.remote(2)) == 7
    assert runtime.get(c.history.remote()) == [5, 2]


def test_actors_create_actors_and_call_them(cluster):
    @runtime.remote
    class Parent:
        def __init__(self):
            self.child = Counter.remote(100)

        def bump(self):
            return runtime.get(self.child.incr.remote())

    p = Parent.remote()
    assert runtime.get([p.bump.remote(), p.bump.remote()]) == [101, 102]


def test_max_pending_calls_rejects_the_overflow(cluster):
    @runtime.remote
    class Gate:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        async def open(self):
            self.event.set()

    @runtime.remote
    class Busy:
        async def block(self, gate):
            await gate.wait.remote()

        async def quick(self):
            return 1

    gate = Gate.remote()
    busy = Busy.options(max_pending_calls=2, max_concurrency=1).remote()
    assert runtime.get(busy.quick.remote()) == 1  # started: calls no longer wait for __init__
    blocker = busy.block.remote(gate)
    refs = [busy.quick.remote() for _ in range(6)]
    rejected = 0
    for r in refs[2:]:
        with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls=2"):
            runtime.get(r, timeout=10)
        rejected += 1
    runtime.get(gate.open.remote())
    runtime.get(blocker, timeout=10)
    assert runtime.get(refs[:2], timeout=10) == [1, 1]
    assert rejected == 4


def test_actor_resources_are_reserved_for_its_lifetime(cluster):
    before = runtime.available_resources().get("custom", 0.0)
    a = Counter.options(resources={"custom": 1}).remote()
    runtime.get(a.incr.remote())
    # Nodes report what is free as it changes; the head's view converges within a moment.
    until(
        lambda: runtime.available_resources().get("custom", 0.0) == before - 1,
        timeout=10,
        why=lambda: (
            f"custom stayed at {runtime.available_resources().get('custom', 0.0)}, "
            f"expected {before - 1}"
        ),
    )
    runtime.kill(a)


def test_runtime_context_inside_an_actor_names_it(cluster):
    c = Counter.options(name="ctx").remote()
    actor_id, name, node_id = runtime.get(c.where.remote())
    assert name == "ctx"
    assert actor_id is not None
    assert node_id != runtime.get_runtime_context().get_node_id()
    runtime.kill(c)


def test_a_handle_passed_on_at_once_finds_its_actor(cluster):
    @runtime.remote
    def use(handle):
        return runtime.get(handle.incr.remote(1))

    # The task may ask the head for the actor before the creator's request got there.
    refs = [use.remote(Counter.remote(i)) for i in range(20)]
    assert runtime.get(refs, timeout=30) == [i + 1 for i in range(20)]


def test_killing_an_async_actor_fails_its_running_calls_at_once(cluster):
    @runtime.remote(max_restarts=1)
    class Sleeper:
        def __init__(self):
            self.sleeping = 0

        async def sleep(self, seconds):
            self.sleeping += 1
            await asyncio.sleep(seconds)
            return "slept"

        async def sleeping_now(self):
            return self.sleeping

    s = Sleeper.remote()
    running = s.sleep.remote(60)
    until(lambda: runtime.get(s.sleeping_now.remote()) != 0)  # the call runs: it is in flight
    runtime.kill(s, no_restart=False)
    with pytest.raises(ActorDiedError, match="may have run"):
        runtime.get(running, timeout=10)  # not when the 60 s sleep would have ended
    assert runtime.get(s.sleep.remote(0), timeout=30) == "slept"  # restarted
