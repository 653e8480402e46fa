"""An async actor's ready calls are started by one task per run, not a task per call
(``execution.async_runs``): fewer tasks than calls for a pipelined caller whose calls do not
wait, each call in a context of its own, a call that waits in a task of its own from its first
wait to its end (its timeout and its cancel touch no other call), calls that still interleave
at their awaits, a call that cancels its own task without harming the calls after it, the
calls after an ``exit_actor()`` answered with the actor's death, and the lane's limit."""

from __future__ import annotations

import asyncio

import pytest

import runtime
from runtime import exceptions as exc

pytestmark = pytest.mark.timeout(90)


@runtime.remote(num_cpus=0)
class Runs:
    def __init__(self):
        import contextvars

        self.var = contextvars.ContextVar("runs_var", default=None)
        self.event = asyncio.Event()
        self.tasks = set()
        self.running = 0
        self.most = 0

    async def quick(self, i):
        return i

    async def started(self):
        from runtime.core.execution import async_runs

        return list(async_runs.STARTED)

    async def set_var(self, i):
        before = self.var.get()
        self.var.set(i)
        return before

    async def set_var_and_wait(self, i):
        before = self.var.get()
        self.var.set(i)
        await asyncio.sleep(0.01)
        return before, self.var.get() == i

    async def wait_for_event(self, i):
        await self.event.wait()
        return i

    async def set_event(self):
        self.event.set()
        return "set"

    async def same_task_after_waits(self, i):
        mine = asyncio.current_task()
        self.tasks.add(mine)
        for _ in range(3):
            await asyncio.sleep(0.01)
            if asyncio.current_task() is not mine:
                return "moved"
        return len(self.tasks)

    async def times_out(self):
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(30)
        except TimeoutError:
            return "timed out"
        return "no timeout"

    async def sleeps(self, i, seconds):
        await asyncio.sleep(seconds)
        return i

    async def cancels_itself(self):
        asyncio.current_task().cancel()
        return "cancelled itself"

    async def leave_at(self, i, bad):
        if i == bad:
            from runtime.actor import exit_actor

            exit_actor()
        return i

    async def counted(self, i):
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.005)
        self.running -= 1
        return i

    async def most_at_once(self):
        return self.most


def test_pipelined_calls_that_do_not_wait_share_a_few_tasks(cluster):
    r = Runs.remote()
    before = runtime.get(r.started.remote(), timeout=30)
    assert runtime.get([r.quick.remote(i) for i in range(3_000)], timeout=60) == list(range(3_000))
    after = runtime.get(r.started.remote(), timeout=30)
    tasks, calls = (a - b for a, b in zip(after, before, strict=True))
    assert calls > 2_900  # (a call that arrives alone is a task of its own, as before)
    assert tasks * 10 < calls, f"{tasks} tasks for {calls} calls"


def test_each_call_of_a_run_has_a_context_of_its_own(cluster):
    r = Runs.remote()
    assert runtime.get([r.set_var.remote(i) for i in range(500)], timeout=60) == [None] * 500


def test_calls_that_wait_each_keep_a_context_of_their_own_across_their_waits(cluster):
    r = Runs.remote()
    runtime.get(r.quick.remote(0), timeout=30)
    refs = [r.quick.remote(1), r.set_var.remote(-1)]
    refs += [r.set_var_and_wait.remote(i) for i in range(300)]
    got = runtime.get(refs, timeout=60)
    assert got[:2] == [1, None]
    assert got[2:] == [(None, True)] * 300


def test_calls_of_one_run_interleave_at_their_awaits(cluster):
    r = Runs.remote()
    # The waiting calls come first in the batch: the call that releases them runs only if it
    # starts while they wait.
    waiting = [r.wait_for_event.remote(i) for i in range(50)]
    release = r.set_event.remote()
    assert runtime.get(release, timeout=30) == "set"
    assert runtime.get(waiting, timeout=30) == list(range(50))


def test_a_call_that_waits_keeps_a_task_of_its_own(cluster):
    r = Runs.remote()
    quick = [r.quick.remote(i) for i in range(20)]
    waiting = [r.same_task_after_waits.remote(i) for i in range(20)]
    assert runtime.get(quick, timeout=30) == list(range(20))
    counts = runtime.get(waiting, timeout=30)
    assert "moved" not in counts
    assert max(counts) == 20  # 20 calls waiting at once, 20 tasks


def test_a_timeout_in_one_call_of_a_run_touches_no_other(cluster):
    r = Runs.remote()
    refs = []
    for i in range(30):
        refs.append(r.quick.remote(i))
        refs.append(r.times_out.remote())
        refs.append(r.sleeps.remote(i, 0.1))
    got = runtime.get(refs, timeout=60)
    for i in range(30):
        assert got[3 * i : 3 * i + 3] == [i, "timed out", i]


def test_a_call_that_cancels_its_own_task_leaves_the_next_ones_alone(cluster):
    r = Runs.remote()
    for _ in range(5):  # (the first call of a burst goes alone: the rest share a frame)
        refs = [r.quick.remote(0), r.cancels_itself.remote()]
        refs += [r.sleeps.remote(i, 0.02) for i in range(10)]
        assert runtime.get(refs, timeout=30) == [0, "cancelled itself", *range(10)]


def test_cancelling_a_waiting_call_of_a_run_cancels_that_call_alone(cluster):
    r = Runs.remote()
    runtime.get(r.quick.remote(0), timeout=30)
    refs = [r.quick.remote(1), r.sleeps.remote(2, 60), r.sleeps.remote(3, 0.5)]
    refs += [r.quick.remote(i) for i in range(4, 20)]
    assert runtime.get(refs[3:], timeout=30) == list(range(4, 20))
    runtime.cancel(refs[1])
    with pytest.raises(exc.TaskCancelledError):
        runtime.get(refs[1], timeout=30)
    assert runtime.get([refs[0], refs[2]], timeout=30) == [1, 3]


def test_the_calls_of_a_run_after_exit_actor_are_answered_with_its_death(cluster):
    r = Runs.remote()
    refs = [r.leave_at.remote(i, 100) for i in range(300)]
    assert runtime.get(refs[:100], timeout=30) == list(range(100))
    for ref in refs[100:]:
        with pytest.raises(exc.ActorDiedError):
            runtime.get(ref, timeout=30)


def test_a_run_keeps_to_the_lanes_limit(cluster):
    r = Runs.options(max_concurrency=7).remote()
    assert runtime.get([r.counted.remote(i) for i in range(70)], timeout=60) == list(range(70))
    assert runtime.get(r.most_at_once.remote(), timeout=30) == 7
