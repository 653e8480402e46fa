"""Failure detection: heartbeats on a channel of their own, suspect before dead, and a busy
or blocked node that keeps its place.

Nodes paused with SIGSTOP (eviction, rejoining under a new id) are chaos scenarios:
tests/chaos/test_pause.py.
"""

from __future__ import annotations

import os
import time

import pytest

import runtime
from runtime.core.wire.heartbeat import DetectorConfig, FailureDetector

from ..conftest import FAST_DETECTION
from ..conftest import until as _until
from ..conftest import workers as _workers

pytestmark = pytest.mark.timeout(90)


def test_a_silent_node_is_suspect_first_then_dead():
    d = FailureDetector(DetectorConfig(interval=0.1, suspect_after=1.0, dead_after=3.0))
    d.watch("a", now=0.0)
    d.watch("b", now=0.0)
    assert d.check(now=0.5) == []
    d.beat("a", now=0.9)
    assert d.check(now=1.5) == [] and d.suspects == {"b"}
    assert d.beat("b", now=1.6) and d.suspects == set()
    assert d.check(now=4.7) == ["a", "b"]
    assert not d.beat("a", now=4.8)  # dead nodes are forgotten: their beats count no more


def test_a_busy_node_is_not_declared_dead(fast_mesh):
    @runtime.remote
    def spin(seconds):
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    before = _workers()
    assert all(runtime.get([spin.remote(3.0) for _ in range(2)], timeout=60))
    assert _workers() == before


def test_a_blocked_loop_is_reported_with_the_actor_method_and_the_node_stays_alive(
    monkeypatch,
):
    for name, value in FAST_DETECTION.items():
        monkeypatch.setenv(name, value)
    info = runtime.init(num_cpus=2, log_to_driver=False)  # the nodes log to a file
    try:

        @runtime.remote
        class Blocker:
            async def stall(self, seconds):
                time.sleep(seconds)  # noqa: ASYNC251 - the mistake under test: a blocked loop
                return "done"

        before = _workers()
        b = Blocker.remote()
        assert runtime.get(b.stall.remote(2.0), timeout=30) == "done"
        assert _workers() == before  # heartbeats do not go through the loop
        log_path = os.path.join(info["session_dir"], "nodes.log")

        def reported() -> bool:
            with open(log_path) as f:
                return "Blocker.stall" in f.read()

        _until(reported, timeout=10)
        with open(log_path) as f:
            assert "the event loop was blocked for" in f.read()
    finally:
        runtime.shutdown()
