"""runtime.cancel on a real local mesh: queued, running async, running sync, recursive."""

from __future__ import annotations

import asyncio
import time

import pytest

import runtime
from runtime.exceptions import TaskCancelledError

from ..conftest import until

pytestmark = pytest.mark.timeout(60)


@runtime.remote
class Log:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)

    def get(self):
        return list(self.items)


@runtime.remote
def block(seconds):
    time.sleep(seconds)
    return "slept"


@runtime.remote
def record(log, value):
    runtime.get(log.add.remote(value))
    return value


@runtime.remote
async def async_sleeper(log):
    try:
        # Inside the try: the log shows "started" before this await has its answer, so a
        # cancel sent once "started" is seen may land here.
        await log.add.remote("started")
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await log.add.remote("cancelled")
        raise
    return "finished"


@runtime.remote
def polls_flag(log):
    runtime.get(log.add.remote("started"))
    deadline = time.monotonic() + 30
    while not runtime.get_runtime_context().is_cancelled():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runtime.get(log.add.remote("saw flag"))
    return "stopped"


@runtime.remote
def spins_forever(log):
    runtime.get(log.add.remote("started"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pass
    return "spun out"


@runtime.remote
def parent(log):
    child = async_sleeper.remote(log)
    return runtime.get(child)


def wait_for(log, item, timeout=20.0):
    until(
        lambda: item in runtime.get(log.get.remote()), timeout, why=lambda: f"{item!r} never logged"
    )


@runtime.remote
def block_logged(log, seconds):
    runtime.get(log.add.remote("blocking"))
    time.sleep(seconds)
    return "slept"


def test_queued_task_never_runs(cluster):
    log = Log.remote()
    blockers = [block_logged.remote(log, 3.0) for _ in range(2)]  # both CPUs busy
    until(lambda: runtime.get(log.get.remote()).count("blocking") == 2, 20.0)
    queued = record.remote(log, "ran")
    runtime.cancel(queued)
    with pytest.raises(TaskCancelledError):
        runtime.get(queued, timeout=10)
    assert runtime.get(blockers) == ["slept", "slept"]
    assert runtime.get(record.remote(log, "after")) == "after"
    assert runtime.get(log.get.remote()) == ["blocking", "blocking", "after"]


def test_running_async_task_gets_cancelled_error(cluster):
    log = Log.remote()
    ref = async_sleeper.remote(log)
    wait_for(log, "started")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=10)
    wait_for(log, "cancelled")


def test_running_sync_task_sees_the_flag(cluster):
    log = Log.remote()
    ref = polls_flag.remote(log)
    wait_for(log, "started")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=10)
    wait_for(log, "saw flag")


def test_force_interrupts_a_sync_task(cluster):
    log = Log.remote()
    ref = spins_forever.remote(log)
    wait_for(log, "started")
    runtime.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=10)
    # The CPU it held comes back: two tasks can run at once again.
    assert runtime.get([block.remote(0.01), block.remote(0.01)], timeout=20) == ["slept"] * 2


def test_recursive_cancel_reaches_children(cluster):
    log = Log.remote()
    ref = parent.remote(log)
    wait_for(log, "started")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=10)
    wait_for(log, "cancelled")


def test_async_actor_call(cluster):
    @runtime.remote
    class Sleeper:
        async def sleep(self):
            await asyncio.sleep(60)

        async def ping(self):
            return "pong"

    s = Sleeper.remote()
    ref = s.sleep.remote()
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=10)
    assert runtime.get(s.ping.remote()) == "pong"
    with pytest.raises(ValueError, match="force"):
        runtime.cancel(s.sleep.remote(), force=True)


def test_cancel_after_finish_is_a_no_op(cluster):
    ref = block.remote(0)
    assert runtime.get(ref) == "slept"
    runtime.cancel(ref)
    assert runtime.get(ref) == "slept"


def test_cancel_rejects_other_things(cluster):
    with pytest.raises(TypeError):
        runtime.cancel("not a ref")  # type: ignore[arg-type]
