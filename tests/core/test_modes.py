"""The same core semantics in both modes: a local mesh of node processes, and
``local_mode=True`` (everything in this process, through the same serialization)."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

import runtime
from runtime.exceptions import GetTimeoutError, TaskCancelledError, TaskError
from runtime.util import PlacementGroupSchedulingStrategy, placement_group, remove_placement_group

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", params=["mesh", "local"])
def mode(request, tmp_path_factory):
    old = os.environ.get("RUNTIME_TMPDIR")
    os.environ["RUNTIME_TMPDIR"] = str(tmp_path_factory.mktemp(request.param))
    runtime.init(
        num_cpus=2,
        local_mode=request.param == "local",
        runtime_env={"env_vars": {"RT_JOB_ENV": request.param}},
    )
    try:
        yield request.param
    finally:
        runtime.shutdown()
        if old is not None:
            os.environ["RUNTIME_TMPDIR"] = old


@runtime.remote
def add(a, b):
    return a + b


@runtime.remote
async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


@runtime.remote
def fail(msg):
    raise KeyError(msg)


@runtime.remote
def pid():
    return os.getpid()


@runtime.remote(num_returns="streaming")
def count(n):
    yield from range(n)


@runtime.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    async def aincr(self, k=1):
        self.n += k
        return self.n

    async def sleep(self):
        await asyncio.sleep(60)


def test_where_code_runs(mode):
    here = runtime.get(pid.remote()) == os.getpid()
    assert here == (mode == "local")


def test_job_runtime_env(mode):
    @runtime.remote
    def env(key):
        return os.environ.get(key)

    assert runtime.get(env.remote("RT_JOB_ENV")) == mode
    task = env.options(runtime_env={"env_vars": {"RT_TASK_ENV": "task"}})
    assert runtime.get(task.remote("RT_JOB_ENV")) == mode  # merged with the job's
    assert runtime.get(task.remote("RT_TASK_ENV")) == "task"


def test_tasks_values_and_refs(mode):
    assert runtime.get(add.remote(1, 2)) == 3
    assert runtime.get(async_add.remote(add.remote(1, 2), 4)) == 7
    assert runtime.get([add.remote(i, i) for i in range(10)]) == [2 * i for i in range(10)]


def test_values_are_copied_and_arrays_read_only(mode):
    arr = np.arange(1_000_000)
    out = runtime.get(runtime.put(arr))
    assert np.array_equal(out, arr)
    assert not out.flags.writeable
    data = {"k": [1, 2]}
    ref = runtime.put(data)
    data["k"].append(3)
    assert runtime.get(ref) == {"k": [1, 2]}


def test_errors_keep_their_type(mode):
    with pytest.raises(KeyError) as info:
        runtime.get(fail.remote("missing"))
    assert isinstance(info.value, TaskError)


def test_actor_calls_in_order(mode):
    c = Counter.remote(10)
    refs = [c.incr.remote() if i % 2 else c.aincr.remote() for i in range(20)]
    assert runtime.get(refs) == list(range(11, 31))


def test_named_actor(mode):
    Counter.options(name="shared").remote(5)
    assert runtime.get(runtime.get_actor("shared").incr.remote()) == 6
    runtime.kill(runtime.get_actor("shared"))


def test_wait_and_timeout(mode):
    c = Counter.remote()
    slow = c.sleep.remote()
    ready, not_ready = runtime.wait([add.remote(1, 1), slow], num_returns=1, timeout=10)
    assert len(ready) == 1 and not_ready == [slow]
    with pytest.raises(GetTimeoutError):
        runtime.get(slow, timeout=0.2)
    runtime.cancel(slow)
    with pytest.raises(TaskCancelledError):
        runtime.get(slow, timeout=10)


def test_streaming(mode):
    assert [runtime.get(r) for r in count.remote(5)] == [0, 1, 2, 3, 4]


def test_async_driver(mode):
    async def main():
        return await asyncio.gather(*[async_add.remote(i, 1) for i in range(5)])

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_placement_group(mode):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(20)
    strategy = PlacementGroupSchedulingStrategy(pg, 0)
    assert runtime.get(add.options(scheduling_strategy=strategy).remote(2, 2)) == 4
    remove_placement_group(pg)


def test_tasks_share_the_cpus(mode):
    @runtime.remote
    def stamp():
        start = time.monotonic()
        time.sleep(0.2)
        return start, time.monotonic()

    spans = runtime.get([stamp.remote() for _ in range(4)])
    # Never more than two at once: each start is after all but one earlier end.
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2
