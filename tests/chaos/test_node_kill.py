"""Chaos scenario 1: ``kill -9`` of a node under work, and what dies with it.

Tasks that were running on the killed node run again elsewhere (``max_retries``), each
returns exactly one result, and no body runs more often than its retries allow; a task that
kills every node it runs on stops with a clear error; a large result that lived only on the
killed node is made again from its lineage when its task may be retried, and is lost with a
clear error when not.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import psutil
import pytest

import runtime
from runtime.exceptions import NodeDiedError

pytestmark = pytest.mark.timeout(90)


def _node_pids() -> dict[str, int]:
    return {n["NodeID"]: n["Pid"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"]}


@runtime.remote
class Ledger:
    """Counts how often each task body started, per node process (a side effect that
    outlives the kill)."""

    def __init__(self):
        self.runs = Counter()

    def ran(self, i, pid):
        self.runs[i, pid] += 1

    def counts(self):
        return dict(self.runs)

    def pid(self):
        return os.getpid()


def test_two_hundred_retriable_tasks_on_a_killed_node_each_return_exactly_once(mesh):
    before = _live_children()
    ledger = Ledger.remote()
    keep = runtime.get(ledger.pid.remote(), timeout=30)
    victim = next(pid for pid in _node_pids().values() if pid != keep)

    @runtime.remote(max_retries=3)
    def work(ledger, i):
        runtime.get(ledger.ran.remote(i, os.getpid()))
        time.sleep(0.01)
        return i, os.getpid()

    refs = [work.remote(ledger, i) for i in range(200)]
    ready, _ = runtime.wait(refs, num_returns=20, timeout=60)
    assert len(ready) == 20  # the work is under way
    os.kill(victim, signal.SIGKILL)
    results = runtime.get(refs, timeout=60)  # none hangs
    assert [i for i, _ in results] == list(range(200))  # none lost, each returned once
    runs = runtime.get(ledger.counts.remote(), timeout=30)
    assert {i for i, _ in runs} == set(range(200))
    # At-least-once, and no more: a body runs again only when its first run was on the
    # killed node (a task blocked in get() lends its CPU, so the victim ran several at once).
    assert max(runs.values()) == 1  # one start per task and process
    starts = Counter(i for i, _ in runs)
    assert all(pid == victim for (i, pid) in runs if starts[i] > 1 and pid != results[i][1])
    # Processes back to baseline: the victim is gone for good, one node process took its
    # place (the local mesh starts one again, as Ray's raylet does a worker), nothing else
    # came or went.
    deadline = time.monotonic() + 30
    while len(_live_children() - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = _live_children()
    assert before - after == {victim} and len(after - before) == 1


def _live_children() -> set[int]:
    """This process's children that have not exited (a killed one is a zombie until reaped)."""
    return {
        c.pid
        for c in psutil.Process().children()
        if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
    }


def test_a_task_that_kills_its_node_stops_after_max_retries(mesh):
    @runtime.remote(max_retries=1)
    def crash():
        os._exit(1)

    with pytest.raises(NodeDiedError, match="tried 2 times"):
        runtime.get(crash.remote(), timeout=60)


def test_a_large_result_whose_node_died_is_made_again_from_its_lineage(mesh):
    import numpy as np

    @runtime.remote(num_returns=2)
    def big_and_pid():
        return np.full(1 << 20, 7, dtype=np.uint8), os.getpid()  # the array stays on its node

    array_ref, pid_ref = big_and_pid.remote()
    first_pid = runtime.get(pid_ref)
    os.kill(first_pid, signal.SIGKILL)
    value = runtime.get(array_ref, timeout=60)  # its node is gone: the task runs again
    assert value.nbytes == 1 << 20 and int(value[0]) == 7


def test_a_large_result_of_a_task_without_retries_is_lost_with_a_clear_error(mesh):
    import numpy as np

    from runtime.exceptions import ObjectLostError

    @runtime.remote(num_returns=2, max_retries=0)
    def big_and_pid():
        return np.ones(1 << 20, dtype=np.uint8), os.getpid()

    array_ref, pid_ref = big_and_pid.remote()
    os.kill(runtime.get(pid_ref), signal.SIGKILL)
    with pytest.raises(ObjectLostError, match=r"unreachable|no longer"):
        runtime.get(array_ref, timeout=30)


@runtime.remote
class Borrower:
    """Keeps a ref it was given (nested, so it stays a ref) and reads it on demand."""

    def keep(self, refs):
        self.ref = refs[0]
        return os.getpid()

    def read(self):
        value = runtime.get(self.ref)
        return value.nbytes, int(value[0])


def _borrow_then_kill_the_holder(array_ref, holder):
    """Borrowers on every node keep ``array_ref``; the node holding it is killed. Returns
    a borrower on another node."""
    borrowers = [Borrower.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    pids = runtime.get([b.keep.remote([array_ref]) for b in borrowers])
    reader = borrowers[next(i for i, pid in enumerate(pids) if pid != holder)]
    os.kill(holder, signal.SIGKILL)
    return reader


def test_a_borrower_of_a_lost_result_gets_it_made_again_by_its_owner(mesh):
    import numpy as np

    @runtime.remote(num_returns=2)
    def big_and_pid():
        return np.full(1 << 20, 5, dtype=np.uint8), os.getpid()

    array_ref, pid_ref = big_and_pid.remote()
    reader = _borrow_then_kill_the_holder(array_ref, runtime.get(pid_ref))
    # The borrower cannot read it where it was; it tells the owner (this driver), which runs
    # the task again, and the borrower reads the new copy.
    assert runtime.get(reader.read.remote(), timeout=60) == (1 << 20, 5)


def test_a_borrower_of_a_lost_result_without_retries_gets_a_clear_error(mesh):
    import numpy as np

    from runtime.exceptions import ObjectLostError

    @runtime.remote(num_returns=2, max_retries=0)
    def big_and_pid():
        return np.ones(1 << 20, dtype=np.uint8), os.getpid()

    array_ref, pid_ref = big_and_pid.remote()
    reader = _borrow_then_kill_the_holder(array_ref, runtime.get(pid_ref))
    with pytest.raises(ObjectLostError, match="cannot run again"):
        runtime.get(reader.read.remote(), timeout=60)
