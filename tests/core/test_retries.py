"""Task retries: on the death of the node running a task, and on exceptions when asked."""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime.exceptions import NodeDiedError

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def mesh():
    """A fresh mesh per test: these tests kill its nodes."""
    runtime.init(num_cpus=3)
    try:
        yield
    finally:
        runtime.shutdown()


@runtime.remote
class Tally:
    """Counts attempts per key, on the head-less side of the kills (tests pin it)."""

    def __init__(self):
        self.counts = {}

    def bump(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def _node_pids():
    return sorted(n["Pid"] for n in runtime.nodes() if not n["IsDriver"] and n["Resources"])


def test_tasks_on_a_killed_node_run_again_elsewhere_and_return_once(mesh):
    pids = _node_pids()
    victim, *_ = pids

    @runtime.remote
    def work(i):
        import time

        time.sleep(0.2)
        return i, os.getpid()

    refs = [work.remote(i) for i in range(12)]
    ready, _ = runtime.wait(refs, num_returns=1, timeout=30)
    assert ready  # the work is under way on every node
    os.kill(victim, signal.SIGKILL)
    results = runtime.get(refs, timeout=60)
    assert [i for i, _ in results] == list(range(12))
    assert all(pid in pids for _, pid in results)


def test_a_task_that_kills_its_node_stops_after_max_retries(mesh):
    @runtime.remote(max_retries=1)
    def crash():
        os._exit(1)

    with pytest.raises(NodeDiedError, match="tried 2 times"):
        runtime.get(crash.remote(), timeout=60)


def test_application_errors_are_retried_only_when_asked(mesh):
    tally = Tally.remote()

    @runtime.remote(max_retries=3, retry_exceptions=True)
    def flaky(tally, key):
        if runtime.get(tally.bump.remote(key)) < 3:
            raise ConnectionError("not yet")
        return "ok"

    @runtime.remote(max_retries=3, retry_exceptions=[KeyError])
    def wrong_kind(tally, key):
        runtime.get(tally.bump.remote(key))
        raise ValueError("not retried")

    @runtime.remote(max_retries=3)
    def plain(tally, key):
        runtime.get(tally.bump.remote(key))
        raise ValueError("not retried either")

    assert runtime.get(flaky.remote(tally, "a"), timeout=30) == "ok"
    with pytest.raises(ValueError, match="not retried"):
        runtime.get(wrong_kind.remote(tally, "b"), timeout=30)
    with pytest.raises(ValueError, match="either"):
        runtime.get(plain.remote(tally, "c"), timeout=30)
    assert runtime.get(tally.bump.remote("a")) == 4  # three tries, then this call
    assert runtime.get(tally.bump.remote("b")) == 2
    assert runtime.get(tally.bump.remote("c")) == 2


def test_retry_options_are_checked(mesh):
    @runtime.remote
    def f():
        return 1

    with pytest.raises(ValueError, match="max_retries"):
        f.options(max_retries=-2)
    with pytest.raises(ValueError, match="retry_exceptions"):
        f.options(retry_exceptions=["KeyError"])
    assert runtime.get(f.options(max_retries=0).remote()) == 1
