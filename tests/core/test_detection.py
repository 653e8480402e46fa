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


def test_time_the_head_could_not_listen_counts_against_no_node():
    d = FailureDetector(DetectorConfig(interval=0.1, suspect_after=1.0, dead_after=3.0))
    d.watch("a", now=0.0)
    d.deafened(10.0)  # the head's loop was stalled for 10 s
    assert d.check(now=10.5) == [] and d.silence("a", 10.5) == pytest.approx(0.5)
    assert d.check(now=12.9) == [] and d.suspects == {"a"}
    assert d.check(now=13.0) == ["a"]  # three seconds of the head's listening, then dead
    d.deafened(-1.0)  # early is not a stall
    assert d.deaf == 10.0


@pytest.mark.timeout(60)
def test_a_head_stalled_with_its_members_evicts_none_that_beat_again_and_the_silent_one_in_bound(
    monkeypatch,
):
    """As when a machine pauses: the head and its members stop together. Those that beat
    once it runs again stay; one that had stopped beating is declared dead within the dead
    window plus the stall, not at once for the stall."""
    import asyncio
    import signal

    from runtime.core.tools import head_sim
    from runtime.core.wire import protocol as p

    interval, dead_after, stall = 0.2, 3.0, 4.0
    monkeypatch.setenv("RUNTIME_HEARTBEAT_INTERVAL_S", str(interval))
    monkeypatch.setenv("RUNTIME_SUSPECT_AFTER_S", "1.0")
    monkeypatch.setenv("RUNTIME_DEAD_AFTER_S", str(dead_after))
    head = head_sim.HeadSim.start()

    async def scenario() -> None:
        await head_sim._probe(head)
        tally = head_sim.Tally()
        beats = await head_sim._join(head.address, head.token, "beats", tally, 20.0)
        stops = await head_sim._join(head.address, head.token, "stops", tally, 20.0)
        assert beats is not None and stops is not None
        assert beats.conn is not None and stops.conn is not None
        silent = asyncio.Event()

        async def beat() -> None:
            seq = 0
            while True:
                seq += 1
                beats.conn.send(p.Heartbeat("beats", seq))
                if not silent.is_set():
                    stops.conn.send(p.Heartbeat("stops", seq))
                await asyncio.sleep(interval)

        beating = asyncio.ensure_future(beat())
        try:
            await asyncio.sleep(5 * interval)
            silent.set()
            stopped = time.monotonic()
            os.kill(head.proc.pid, signal.SIGSTOP)
            try:  # this loop stalls too: nobody beats, as on a paused machine
                time.sleep(stall)  # noqa: ASYNC251 - the stall under test
            finally:
                os.kill(head.proc.pid, signal.SIGCONT)
            # The members come back a little after the head: it judges them before any
            # beat of theirs can have come.
            time.sleep(5 * interval)  # noqa: ASYNC251
            async with asyncio.timeout(dead_after + stall + 10):
                await stops.gone.wait()
            detected = time.monotonic() - stopped
            assert stops.evicted
            assert detected >= stall + dead_after / 2  # the stall was not held against it
            assert detected < stall + dead_after + 5  # the bound, plus the stall (and slack)
            await asyncio.sleep(dead_after)  # a whole dead window after the stall
            assert not beats.evicted and not beats.gone.is_set()
            assert tally.false_deaths == 0
        finally:
            beating.cancel()
            for m in (beats, stops):
                m.leaving = True
                if m.conn is not None:
                    m.conn.close()

    try:
        asyncio.run(scenario())
    finally:
        head.stop()


def test_the_loop_lag_monitor_reports_a_block_wherever_it_falls_between_two_ticks():
    import asyncio

    from runtime.core.process.lag import LoopLagMonitor

    threshold, block = 0.1, 0.5

    async def scenario() -> list[float]:
        monitor = LoopLagMonitor(asyncio.get_running_loop(), threshold)
        ticked = asyncio.Event()
        tick = monitor._tick

        def ticks() -> None:
            tick()
            ticked.set()

        monitor._tick = ticks  # type: ignore[method-assign]
        monitor.start()
        seen = []
        try:
            for phase in (0.0, 0.03, 0.06, 0.09):
                ticked.clear()
                await ticked.wait()  # just after a tick
                await asyncio.sleep(phase)
                monitor.worst = 0.0
                time.sleep(block)  # noqa: ASYNC251 - the block under test
                await asyncio.sleep(3 * threshold)  # the watchdog writes down how long
                seen.append(monitor.worst)
        finally:
            monitor.stop()
        return seen

    worst = asyncio.run(scenario())
    # Reported each time, as how late the block made the next tick (the block, less the
    # rest of the tick's wait when it began).
    assert all(block - threshold - 0.02 <= w for w in worst), worst
