"""A pipelined caller's calls to a sync actor reach its thread as runs (one hand-off per batch
of calls received, ``HostedActor.pump``) and their answers come back to the loop in bulk
(``execution.sync_runs``): each caller's order, a call that fails alone in a run, a run that
an ``exit_actor()`` ends midway, and the bound on the answers kept for resent calls. An async
actor's calls, each a task of the loop's own (not the worker's background set), are answered in
order and with the actor's death when it is killed while they run."""

from __future__ import annotations

import os
import time

import pytest

import runtime
from runtime import exceptions as exc
from runtime.core.common.exceptions import ActorDiedError
from runtime.core.execution import sync_runs
from runtime.core.execution.calls import MAX_ANSWERED, Answers, Job
from runtime.core.objects.serialization import system_error_value
from runtime.core.wire import protocol as p

from ..actors import PairLog

pytestmark = pytest.mark.timeout(90)


@runtime.remote(num_cpus=0)
class Log(PairLog):
    def other(self, i):
        self.seen.append(("other", i))
        return -i

    def fails_at(self, i, bad):
        if i == bad:
            raise ValueError(f"call {i} fails")
        self.seen.append(("fails_at", i))
        return i

    def leave_at(self, i, bad):
        if i == bad:
            from runtime.actor import exit_actor

            exit_actor()
        return i

    def taken(self):
        return list(sync_runs.TAKEN)


def test_a_pipelined_callers_calls_run_in_order_and_come_back_in_bulk(cluster):
    log = Log.remote()
    before = runtime.get(log.taken.remote(), timeout=30)
    n = 5_000
    refs = [log.add.remote("driver", i) for i in range(n)]
    assert runtime.get(refs, timeout=60) == list(range(n))
    takes, answers = (a - b for a, b in zip(runtime.get(log.taken.remote()), before, strict=True))
    # (most calls: the first call of each of the driver's loop passes goes alone, and a
    # run of one takes the path of a lone call)
    assert answers > n // 2
    assert 2 * takes <= answers  # the loop took two answers a take or more
    assert [i for _, i in runtime.get(log.history.remote())] == list(range(n))


def test_an_actor_with_a_thread_of_its_own_gets_runs_in_order_too(cluster):
    log = Log.options(max_concurrency=1).remote()  # a thread of its own, not a strand
    n = 3_000
    assert runtime.get([log.add.remote("own", i) for i in range(n)], timeout=60) == list(range(n))
    assert [i for _, i in runtime.get(log.history.remote())] == list(range(n))


def test_calls_of_two_methods_interleaved_in_one_run_each_run_their_own(cluster):
    log = Log.remote()
    refs = [(log.add.remote("a", i) if i % 3 else log.other.remote(i)) for i in range(900)]
    assert runtime.get(refs, timeout=60) == [i if i % 3 else -i for i in range(900)]
    seen = runtime.get(log.history.remote())
    assert [i for _, i in seen] == list(range(900))
    assert [w for w, i in seen if i % 3 == 0] == ["other"] * 300


def test_a_call_that_raises_in_the_middle_of_a_run_fails_alone(cluster):
    log = Log.remote()
    refs = [log.fails_at.remote(i, 150) for i in range(300)]
    for i, ref in enumerate(refs):
        if i == 150:
            with pytest.raises(exc.TaskError, match="call 150 fails"):
                runtime.get(ref, timeout=60)
        else:
            assert runtime.get(ref, timeout=60) == i
    assert [i for _, i in runtime.get(log.history.remote())] == [i for i in range(300) if i != 150]


def test_exit_actor_midway_through_a_run_fails_the_calls_after_it_with_the_death(cluster):
    log = Log.remote()
    refs = [log.leave_at.remote(i, 100) for i in range(300)]
    assert runtime.get(refs[:100], timeout=60) == list(range(100))
    for ref in refs[100:]:
        with pytest.raises(exc.ActorDiedError, match="exit_actor"):
            runtime.get(ref, timeout=60)


# --- the answers kept for resent calls (in this process) ----------------------------------


class Link:
    closed = False

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg: object, buffers: object = ()) -> None:
        self.sent.append(msg)


def _done(i: int) -> p.TaskDone:
    return p.TaskDone(i.to_bytes(16, "big"), [p.Value(0, b"\xc4\x02ok")])


def test_kept_answers_stay_bounded_and_a_resent_recent_call_gets_its_first_answer() -> None:
    jobs: dict[bytes, Job] = {}
    answers, link = Answers(jobs), Link()
    n = 3 * MAX_ANSWERED + 7
    for i in range(n):
        answers.remember(_done(i), [])
        assert len(answers) <= 2 * MAX_ANSWERED
    assert len(answers) >= MAX_ANSWERED
    # the last MAX_ANSWERED are all kept: a resent one is answered again, not run again
    for i in range(n - MAX_ANSWERED, n):
        assert answers.get(_done(i).task_id) is not None
    last = _done(n - 1)
    assert answers.duplicate(link, last.task_id)
    assert link.sent == [answers.get(last.task_id)]
    assert not answers.duplicate(link, _done(0).task_id)  # long gone: runs (at least once)
    assert not answers.duplicate(link, last.task_id, attempt=1)  # a retry runs again
    retry = p.TaskDone(last.task_id, [p.Value(0, b"\x01")])
    answers.remember(retry, [], attempt=1)
    assert answers.get(last.task_id, 1) is retry
    assert answers.get(last.task_id) is not retry  # each attempt keeps its own


def test_an_answer_with_buffers_or_a_system_error_is_not_kept() -> None:
    answers = Answers({})
    answers.remember(_done(1), [memoryview(b"x")])
    died = p.TaskDone(os.urandom(16), error=system_error_value(ActorDiedError, "it died"))
    answers.remember(died, [])
    assert len(answers) == 0


# --- async actors: each call a task of its own, cancelled when the actor stops ----------------


@runtime.remote(num_cpus=0)
class Waiter:
    def __init__(self):
        import asyncio

        self.started = 0
        self.forever = asyncio.Event()

    async def wait(self, i):
        self.started += 1
        await self.forever.wait()
        return i

    async def quick(self, i):
        return i

    async def how_many_started(self):
        return self.started


def test_pipelined_calls_to_an_async_actor_each_answer_in_order(cluster):
    w = Waiter.remote()
    assert runtime.get([w.quick.remote(i) for i in range(3_000)], timeout=60) == list(range(3_000))


def test_a_killed_async_actors_running_calls_are_answered_with_its_death(cluster):
    w = Waiter.remote()
    refs = [w.wait.remote(i) for i in range(200)]
    deadline = time.monotonic() + 30
    while runtime.get(w.how_many_started.remote(), timeout=30) < 200:
        assert time.monotonic() < deadline, "the calls did not all start"
        time.sleep(0.01)
    runtime.kill(w)
    for ref in refs:
        with pytest.raises(exc.ActorDiedError):
            runtime.get(ref, timeout=30)
