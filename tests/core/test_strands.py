"""Strands: default sync actors share their node's pool of threads, one strand each.

The pool itself first (in this process, with a pool of a chosen size), then actors on a mesh:
calls of one actor in order and one at a time, blocking calls and long calls that must not
hold the others up, and the opt-out that keeps a thread of one's own.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import threading
import time

import pytest

import runtime
from runtime.core.common import strands
from runtime.core.common.strands import StrandPool, begin_blocking, end_blocking


def _all_done(events: list[threading.Event], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    return all(e.wait(max(0.0, deadline - time.monotonic())) for e in events)


# --- the pool -------------------------------------------------------------------------------


def test_a_strand_runs_its_work_in_order_and_one_item_at_a_time() -> None:
    pool = StrandPool("test-strand", target=2)
    lanes = [pool.strand() for _ in range(8)]
    seen: list[list[int]] = [[] for _ in lanes]
    busy = [False] * len(lanes)
    overlaps: list[int] = []
    done = [threading.Event() for _ in lanes]

    def item(i: int, n: int) -> None:
        if busy[i]:
            overlaps.append(i)
        busy[i] = True
        time.sleep(0.0005 if n % 50 == 0 else 0)  # lets another thread in now and then
        seen[i].append(n)
        busy[i] = False
        if n == 199:
            done[i].set()

    for n in range(200):
        for i, lane in enumerate(lanes):
            lane.submit(lambda i=i, n=n: item(i, n))
    assert _all_done(done)
    assert seen == [list(range(200))] * len(lanes)
    assert not overlaps
    pool.close()


def test_strands_blocking_on_each_other_finish_through_the_blocking_hook() -> None:
    """N+1 strands on a pool of N threads, each blocked (as in runtime.get) until all of them
    run: only threads added for the blocked ones let the last one run. The watchdog is kept
    out (LONG_S far away), so the blocking hook alone must do it."""
    pool = StrandPool("test-strand", target=2)
    old, strands.LONG_S = strands.LONG_S, 1e9
    try:
        barrier = threading.Barrier(3, timeout=20)
        finished = [threading.Event() for _ in range(3)]

        def item(i: int) -> None:
            held = begin_blocking()
            try:
                barrier.wait()
            finally:
                end_blocking(held)
            finished[i].set()

        for i in range(3):
            pool.strand().submit(lambda i=i: item(i))
        assert _all_done(finished)
    finally:
        strands.LONG_S = old
        pool.close()


def test_long_calls_do_not_hold_the_pool_the_watchdog_adds_threads() -> None:
    """Three strands on a pool of two, each waiting (a plain Event, no hook) until all three
    run at once: the watchdog counts the long ones out and starts a thread for the third."""
    pool = StrandPool("test-strand", target=2)
    barrier = threading.Barrier(3, timeout=20)
    finished = [threading.Event() for _ in range(3)]

    def item(i: int) -> None:
        barrier.wait()
        finished[i].set()

    for i in range(3):
        pool.strand().submit(lambda i=i: item(i))
    assert _all_done(finished)
    pool.close()


def test_context_variables_stay_with_their_strand() -> None:
    pool = StrandPool("test-strand", target=1)  # one thread: both strands share it
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    a, b = pool.strand(), pool.strand()
    seen: dict[str, str] = {}
    done = threading.Event()
    a.submit(lambda: var.set("a"))
    b.submit(lambda: seen.setdefault("b", var.get()))
    a.submit(lambda: seen.setdefault("a", var.get()))
    a.submit(done.set)
    assert done.wait(20)
    assert seen == {"b": "unset", "a": "a"}
    pool.close()


def test_torch_grad_mode_stays_with_its_strand_and_does_not_leak_to_others() -> None:
    torch = pytest.importorskip("torch")
    pool = StrandPool("test-strand", target=1)  # one thread: both strands share it
    a, b = pool.strand(), pool.strand()
    seen: dict[str, bool] = {}
    done = threading.Event()
    a.submit(lambda: torch.set_grad_enabled(False))  # as an actor's __init__ might
    b.submit(lambda: seen.setdefault("b", torch.is_grad_enabled()))
    a.submit(lambda: seen.setdefault("a", torch.is_grad_enabled()))
    a.submit(done.set)
    assert done.wait(20)
    assert seen == {"b": True, "a": False}
    pool.close()


def test_surplus_threads_end_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strands, "IDLE_S", 0.2)
    pool = StrandPool("test-strand", target=1)
    barrier = threading.Barrier(3, timeout=20)
    finished = [threading.Event() for _ in range(3)]
    for i in range(3):  # three at once on a pool of one: two threads more for a while
        pool.strand().submit(lambda i=i: (barrier.wait(), finished[i].set()))
    assert _all_done(finished)
    deadline = time.monotonic() + 20
    while pool.threads > pool.target and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.threads == pool.target
    pool.close()


# --- actors on a mesh -----------------------------------------------------------------------


@runtime.remote(num_cpus=0)
class Log:
    def __init__(self) -> None:
        self.items: list[int] = []
        self.busy = False
        self.overlaps = 0

    def add(self, n: int) -> None:
        if self.busy:
            self.overlaps += 1
        self.busy = True
        time.sleep(0)
        self.items.append(n)
        self.busy = False

    def read(self) -> tuple[list[int], int]:
        return self.items, self.overlaps


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("cluster")
def test_five_thousand_actors_each_run_their_calls_in_order() -> None:
    actors = [Log.remote() for _ in range(5000)]
    for n in range(3):
        for a in actors:
            a.add.remote(n)
    assert runtime.get([a.read.remote() for a in actors], timeout=100) == [([0, 1, 2], 0)] * 5000
    del actors


@pytest.mark.usefixtures("cluster")
def test_one_actor_runs_many_calls_in_order_one_at_a_time() -> None:
    a = Log.remote()
    for n in range(500):
        a.add.remote(n)
    assert runtime.get(a.read.remote(), timeout=60) == (list(range(500)), 0)


@runtime.remote(num_cpus=0)
class Link:
    def __init__(self, nxt: object) -> None:
        self.nxt = nxt

    def ask(self) -> int:
        if self.nxt is None:
            return 1
        return 1 + int(runtime.get(self.nxt.ask.remote(), timeout=60))  # type: ignore[attr-defined]


@pytest.mark.usefixtures("cluster")
def test_a_chain_of_actors_blocking_in_get_on_each_other_finishes() -> None:
    """More actors than any node's pool has threads, each blocked in runtime.get on the
    next one: the pool runs the others meanwhile."""
    chain = None
    for _ in range(12):
        chain = Link.remote(chain)
    assert chain is not None
    assert runtime.get(chain.ask.remote(), timeout=60) == 12


@runtime.remote(num_cpus=0)
class Waiter:
    def meet(self, folder: str, me: int, n: int) -> bool:
        """Say it runs, then wait (no runtime call: plain sleeps) until all n do."""
        open(os.path.join(folder, str(me)), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(folder)) < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


@pytest.mark.usefixtures("cluster")
def test_long_running_methods_do_not_hold_the_pool(tmp_path: object) -> None:
    """Six actors on two nodes (pools of at least two threads) each wait until all six run
    at the same time: on some node more run at once than its pool's target."""
    n = 6
    waiters = [Waiter.remote() for _ in range(n)]
    folder = str(tmp_path)
    assert runtime.get([w.meet.remote(folder, i, n) for i, w in enumerate(waiters)], timeout=60)


@runtime.remote(num_cpus=0, max_concurrency=1)
class Pinned:
    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")  # check_same_thread: only this thread may use it
        self.db.execute("create table t (x int)")
        self.local = threading.local()
        self.local.mark = "init"
        self.threads = {threading.get_ident()}

    def use(self, x: int) -> tuple[int, str]:
        self.threads.add(threading.get_ident())
        self.db.execute("insert into t values (?)", (x,))
        (count,) = self.db.execute("select count(*) from t").fetchone()
        return count, self.local.mark

    def thread_count(self) -> int:
        return len(self.threads)


@pytest.mark.usefixtures("cluster")
def test_an_explicit_max_concurrency_of_one_keeps_a_thread_of_its_own() -> None:
    a = Pinned.remote()
    busy = [Log.remote() for _ in range(20)]  # strands keep the node's pool threads busy
    for b in busy:
        for n in range(20):
            b.add.remote(n)
    answers = [runtime.get(a.use.remote(x), timeout=30) for x in range(20)]
    assert answers == [(x + 1, "init") for x in range(20)]
    assert runtime.get(a.thread_count.remote()) == 1
    runtime.get([b.read.remote() for b in busy], timeout=60)
