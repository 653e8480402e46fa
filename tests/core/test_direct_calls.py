"""The direct path of sync actor calls (``submission.direct``, ``execution.calls.answer_now``):
a caller blocked on each call writes its call from its own thread, the actor's thread writes
its answer. The guarantees stay: a call comes after the calls queued before it, each thread's
calls run in its order. Failures (restarts, a caller killed mid-call):
tests/chaos/test_direct_call_failures.py.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import runtime
from runtime.core.api.state import list_state
from runtime.core.wire import direct
from runtime.exceptions import ActorDiedError
from runtime.util.state import list_actors

from ..conftest import until

pytestmark = pytest.mark.timeout(120)
SIZES = (10, 65_400, 65_480, 65_536, 65_600, 300)


@runtime.remote
class Log:
    """Appends what it is called with; says how many direct writes its process made."""

    def __init__(self):
        self.seen = []

    def add(self, x):
        self.seen.append(x)
        return len(self.seen)

    def echo(self, x):
        self.seen.append(x)
        return x

    def history(self):
        return list(self.seen)

    def pid(self):
        return os.getpid()

    def direct_writes(self):
        return direct.WRITES[0]


def test_a_call_after_a_get_comes_after_the_calls_queued_before_it(cluster):
    log = Log.remote()
    assert runtime.get(log.add.remote("start")) == 1  # located and connected
    queued = [log.add.remote(("queued", i)) for i in range(100)]  # then a sync call
    assert runtime.get(log.add.remote("sync")) == 102
    assert runtime.get(queued) == list(range(2, 102))
    before = direct.WRITES[0]
    expect = ["start", *(("queued", i) for i in range(100)), "sync"]
    for r in range(20):
        refs = [log.add.remote((r, i)) for i in range(50)]
        runtime.get(refs[0])  # blocked: the next call may go direct while the rest are queued
        n = runtime.get(log.add.remote((r, "last")))
        expect += [(r, i) for i in range(50)] + [(r, "last")]
        assert n == len(expect)
    assert runtime.get(log.history.remote()) == expect
    assert direct.WRITES[0] > before  # the calls after a get went direct (some, at least)
    assert runtime.get(log.direct_writes.remote()) > 0  # and so did answers


def test_many_threads_calling_one_actor_each_get_their_answers_in_their_order(cluster):
    log = Log.remote()
    runtime.get(log.history.remote())
    threads, calls = 8, 250
    failures: list[BaseException] = []

    def caller(t: int) -> None:
        try:
            for i in range(calls):
                # Calls and answers on both sides of the 64 KiB write that turns the seal
                # from BLAKE2b to AES-GMAC, and small ones.
                blob = bytes([t]) * SIZES[(t + i) % len(SIZES)]
                assert runtime.get(log.echo.remote((t, i, blob)), timeout=60) == (t, i, blob)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    before = direct.WRITES[0]
    for w in workers:
        w.start()
    for w in workers:
        w.join(90)
    assert not failures, failures[0]
    seen = runtime.get(log.history.remote())
    for t in range(threads):
        assert [i for (who, i, _) in seen if who == t] == list(range(calls))
    assert direct.WRITES[0] > before


def test_the_bookkeeping_of_a_call_answered_directly_needs_no_later_call(cluster):
    """The node lists a call as running until its bookkeeping (done after its answer went
    out, without waking the loop for it) has run: within ``LATER_S``, with no other call."""
    log = Log.remote()
    runtime.get(log.add.remote(0))
    before = runtime.get(log.direct_writes.remote())

    def running() -> list[dict[str, object]]:
        return [r for r in list_state("tasks") if r["state"] == "RUNNING"]

    for i in range(10):
        runtime.get(log.add.remote(i))
        until(lambda: not running(), timeout=10, why=lambda: str(running()))
    # Some of those calls were answered directly (the path is taken when the node's loop is
    # quiet; the first direct_writes call's answer may count one more).
    assert runtime.get(log.direct_writes.remote()) - before > 1


@runtime.remote
class Napper:
    def ready(self) -> bool:
        return True

    def nap(self, started: str, go: str) -> str:
        open(started, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.005)
        return "finished"


def test_a_call_running_when_its_actor_is_killed_answers_that_the_actor_died(cluster, tmp_path):
    # The caller blocks on the call (it goes direct, answered from the actor's thread unless
    # the actor is gone by then): the kill wins over the value, as on the loop's path.
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    napper = Napper.remote()
    assert runtime.get(napper.ready.remote(), timeout=30)
    ref = napper.nap.remote(started, go)

    def kill_then_open() -> None:
        until(lambda: os.path.exists(started), timeout=30)
        runtime.kill(napper)
        until(lambda: list_actors(filters=[("state", "=", "DEAD")]), timeout=30)
        open(go, "w").close()

    killer = threading.Thread(target=kill_then_open)
    killer.start()
    with pytest.raises(ActorDiedError):
        runtime.get(ref, timeout=60)
    killer.join(30)
