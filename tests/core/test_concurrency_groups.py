"""Concurrency groups: each group of an actor's methods has its own mailbox and limit."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import runtime

pytestmark = pytest.mark.timeout(60)


@runtime.remote(concurrency_groups={"io": 2, "compute": 1})
class Service:
    def __init__(self):
        self.gate = asyncio.Event()
        self.running = {"io": 0, "compute": 0}
        self.peak = {"io": 0, "compute": 0}

    async def _enter(self, group):
        self.running[group] += 1
        self.peak[group] = max(self.peak[group], self.running[group])

    @runtime.method(concurrency_group="io")
    async def io(self):
        await self._enter("io")
        await self.gate.wait()
        self.running["io"] -= 1
        return "io"

    @runtime.method(concurrency_group="compute")
    async def compute(self):
        await self._enter("compute")
        await asyncio.sleep(0.05)
        self.running["compute"] -= 1
        return "compute"

    async def release(self):  # the default group: not blocked by the others
        self.gate.set()
        return "released"

    async def peaks(self):
        return dict(self.peak)


def test_groups_run_side_by_side_within_their_limits(cluster):
    s = Service.remote()
    io_calls = [s.io.remote() for _ in range(4)]  # two run, two wait on the group's limit
    compute = [s.compute.remote() for _ in range(3)]  # not stuck behind the blocked io calls
    assert runtime.get(compute, timeout=20) == ["compute"] * 3
    assert runtime.get(s.release.remote(), timeout=20) == "released"
    assert runtime.get(io_calls, timeout=20) == ["io"] * 4
    assert runtime.get(s.peaks.remote()) == {"io": 2, "compute": 1}


@runtime.remote(concurrency_groups={"side": 1})
class Threaded:
    def __init__(self):
        self.release = threading.Event()

    def blocked(self):
        return self.release.wait(20)

    @runtime.method(concurrency_group="side")
    def unblock(self):
        self.release.set()
        return time.time()


def test_sync_methods_get_a_thread_per_group(cluster):
    t = Threaded.remote()
    waiting = t.blocked.remote()
    runtime.get(t.unblock.remote(), timeout=20)  # runs although the default thread is busy
    assert runtime.get(waiting, timeout=20) is True


def test_undefined_group_is_a_clear_error(cluster):
    @runtime.remote
    class Bad:
        @runtime.method(concurrency_group="nope")
        def f(self):
            return 1

    with pytest.raises(ValueError, match="nope"):
        Bad.remote()
