"""Correctness at scale, with modest sizes (figures live in benchmarks/scale.py): thousands of
actors each called once, a hundred thousand tasks from one driver, and the driver's pending
records shared rather than copied per call."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import tracemalloc

import pytest

import runtime
from runtime.core.common.threads import BACKLOG_MAX, DRAIN_BATCH, YIELD_MASK, LoopInbox
from runtime.core.objects import refs as _refs
from runtime.core.submission.pending import TaskRetry, take_retry
from runtime.core.wire import protocol as p

from ..actors import Echo

pytestmark = pytest.mark.usefixtures("cluster")


@runtime.remote
def twice(x: int) -> int:
    return 2 * x


@runtime.remote
def nothing() -> None:
    return None


@pytest.mark.timeout(120)
def test_five_thousand_actors_are_created_and_each_answers_its_own_call() -> None:
    actors = [Echo.remote(i) for i in range(5000)]
    assert runtime.get([a.who.remote() for a in actors], timeout=100) == list(range(5000))
    del actors


@pytest.mark.timeout(120)
def test_a_hundred_thousand_tasks_from_one_driver_all_complete_in_order() -> None:
    refs = [twice.remote(i) for i in range(100_000)]
    assert runtime.get(refs, timeout=100) == [2 * i for i in range(100_000)]
    worker = _refs.current_worker()
    assert not worker.tasks  # type: ignore[attr-defined]  # no pending record is left behind


def test_pending_tasks_cost_the_driver_under_a_kilobyte_each() -> None:
    """Python-level allocations per submitted, not yet answered task (its ref, its pending
    record with what a retry needs, its result entry): bounded, so a million fit in a GB."""
    runtime.get([nothing.remote() for _ in range(10)])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        refs = [nothing.remote() for _ in range(5000)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown / len(refs) < 1024
    assert runtime.get(refs, timeout=60) == [None] * 5000


def test_values_without_buffers_share_one_empty_list_that_stays_empty() -> None:
    refs = [twice.remote(i) for i in range(50)]
    assert runtime.get(refs) == [2 * i for i in range(50)]
    owned = _refs.current_worker().refs.owned
    entries = [owned[r.id] for r in refs]
    assert all(e.buffers is _refs.NO_BUFFERS for e in entries)
    assert _refs.NO_BUFFERS == []


def test_a_retry_record_keeps_why_each_try_failed_and_nothing_before_the_first() -> None:
    msg = p.SubmitTask(b"t" * 20, b"f", "f", None, p.Value(0, b""), 1, {}, "owner", "addr")
    retry = TaskRetry(msg, [], bytes, retries_left=2, retry_exceptions=False)
    assert retry.failures is None
    assert take_retry(retry, "node a died")
    assert take_retry(retry, "node b died")
    assert not take_retry(retry, "node c died")
    assert retry.failures == ["node a died", "node b died"]
    assert retry.msg.attempt == 2


def test_blocking_gets_from_many_threads_each_wake_with_their_own_answer() -> None:
    """Each blocked thread adds its waiter itself while the loop resolves answers: none is
    lost (each get returns) and none is crossed (each gets its own value)."""
    actor = Echo.remote(7)
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        try:
            for i in range(200):
                assert runtime.get(twice.remote(k * 1000 + i), timeout=30) == 2 * (k * 1000 + i)
                assert runtime.get(actor.who.remote(), timeout=30) == 7
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors
    assert not any(t.is_alive() for t in threads)


def test_a_thread_posting_faster_than_the_loop_is_held_to_a_bounded_backlog() -> None:
    """The inbox runs at most DRAIN_BATCH posts per pass (the loop's other callbacks run in
    between), and a posting thread that calls throttle() never finds more than BACKLOG_MAX
    waiting."""
    loop, inbox, thread = _inbox_on_a_loop_thread()
    seen: list[int] = []
    between: list[int] = []
    done = threading.Event()
    total = 5 * BACKLOG_MAX

    def step(i: int) -> None:
        seen.append(i)
        if i % DRAIN_BATCH == 0:  # runs between passes, if passes are bounded
            loop.call_soon(lambda: between.append(len(seen)))
        if i == total - 1:
            done.set()

    most = 0
    for i in range(total):
        inbox.post(step, i)
        inbox.throttle()
        most = max(most, len(inbox._items))
    assert done.wait(30)
    _stop(loop, thread)
    assert seen == list(range(total))  # in order, each once
    assert most <= BACKLOG_MAX + 1
    assert any(n < total for n in between)  # other callbacks ran before the backlog was done


def test_a_thread_posting_calls_in_a_row_lets_the_loop_run_them_before_it_is_done() -> None:
    """A driver making thousands of calls in a row holds the GIL; the loop, woken by the
    first, would wait the switch interval for it (here made 10 s), and the node would sit
    idle until the calls were all made. post_call lets go of the GIL every YIELD_MASK + 1
    calls the loop has not run yet."""
    loop, inbox, thread = _inbox_on_a_loop_thread()
    posted = 0
    ran_at: list[int] = []
    total = 8 * (YIELD_MASK + 1)
    done = threading.Event()

    def step() -> None:
        ran_at.append(posted)
        if len(ran_at) == total:
            done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    try:
        for _ in range(total):
            posted += 1
            inbox.post_call(step)
            sum(range(50))  # a call's own work, holding the GIL
        end = posted
    finally:
        sys.setswitchinterval(interval)
    assert done.wait(30)
    _stop(loop, thread)
    assert sum(1 for n in ran_at if n < end) >= total // 2, ran_at[:: YIELD_MASK + 1]


def _inbox_on_a_loop_thread() -> tuple[asyncio.AbstractEventLoop, LoopInbox, threading.Thread]:
    """A LoopInbox whose loop runs on a thread of its own, as a worker's does."""
    loop = asyncio.new_event_loop()
    inbox = LoopInbox(loop)
    started = threading.Event()

    def run() -> None:
        inbox.thread_id = threading.get_ident()
        loop.call_soon(started.set)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return loop, inbox, thread


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
