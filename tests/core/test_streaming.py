"""Streaming generators (num_returns="streaming") on a real local mesh."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

import runtime
from runtime.exceptions import TaskCancelledError, TaskError

pytestmark = pytest.mark.timeout(60)


@runtime.remote(num_returns="streaming")
def count(n):
    yield from range(n)


@runtime.remote(num_returns="streaming")
def fails_after(n):
    yield from range(n)
    raise ValueError(f"broke after {n}")


@runtime.remote(num_returns="streaming")
def arrays(n, size):
    for i in range(n):
        yield np.full(size, i, dtype=np.int64)


@runtime.remote(num_returns="streaming")
def reused_buffer(n, size):
    """Yields one array, overwritten after each yield (as a producer reusing a buffer does)."""
    buf = np.empty(size, dtype=np.int64)
    for i in range(n):
        buf[:] = i
        yield buf


@runtime.remote(num_returns="streaming")
async def async_count(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@runtime.remote(num_returns="streaming")
def not_a_generator():
    return 3


@runtime.remote
class Log:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)

    def get(self):
        return list(self.items)


@runtime.remote
class Streamer:
    @runtime.method(num_returns="streaming")
    async def agen(self, n):
        for i in range(n):
            yield i * 10

    def sgen(self, n):
        for i in range(n):
            yield -i

    def pid(self):
        return os.getpid()

    @runtime.method(num_returns="streaming")
    def forever(self):
        i = 0
        while True:
            yield i
            i += 1


def test_items_arrive_in_order(cluster):
    gen = count.remote(50)
    assert isinstance(gen, runtime.ObjectRefGenerator)
    assert [runtime.get(ref) for ref in gen] == list(range(50))
    assert gen.completed()


def test_empty_generator(cluster):
    assert list(count.remote(0)) == []


def test_async_generator_task_and_async_iteration(cluster):
    async def consume():
        return [await ref async for ref in async_count.remote(20)]

    assert asyncio.run(consume()) == list(range(20))


def test_large_items_travel_by_location(cluster):
    values = [runtime.get(ref) for ref in arrays.remote(3, 100_000)]
    assert [int(v[0]) for v in values] == [0, 1, 2]
    assert all(v.shape == (100_000,) for v in values)


@pytest.mark.parametrize("size", [16, 2_000, 400_000])  # in-band, inline (16 KB), stored
def test_an_item_keeps_the_values_it_had_when_yielded(cluster, size):
    # Items are written without an extra copy of their buffers, so each must be stored (or,
    # small, owned) before the generator runs on and writes over the array it yielded.
    items = [runtime.get(ref) for ref in reused_buffer.remote(4, size)]
    assert [(int(a.min()), int(a.max()), len(a)) for a in items] == [(i, i, size) for i in range(4)]


def test_error_is_the_next_item(cluster):
    gen = fails_after.remote(3)
    refs = list(gen)
    assert len(refs) == 4
    assert [runtime.get(r) for r in refs[:3]] == [0, 1, 2]
    with pytest.raises(ValueError, match="broke after 3"):
        runtime.get(refs[3])


def test_non_generator_is_a_clear_error(cluster):
    refs = list(not_a_generator.remote())
    with pytest.raises(TaskError, match="not a generator"):
        runtime.get(refs[0])


def test_actor_methods_stream(cluster):
    s = Streamer.remote()
    assert [runtime.get(r) for r in s.agen.remote(5)] == [0, 10, 20, 30, 40]
    gen = s.sgen.options(num_returns="streaming").remote(4)
    assert [runtime.get(r) for r in gen] == [0, -1, -2, -3]


def test_backpressure_pauses_the_producer(cluster):
    @runtime.remote(num_returns="streaming", _generator_backpressure_num_objects=2)
    def stamped(n):
        for _ in range(n):
            yield time.monotonic()

    gen = stamped.remote(8)
    first = runtime.get(next(gen))
    time.sleep(0.5)  # the consumer lags: the producer must wait for it
    rest = [runtime.get(r) for r in gen]
    # At most the window ran ahead during the pause; the rest was made after it.
    assert sum(1 for t in rest if t - first < 0.4) <= 2
    assert len(rest) == 7


def test_dropping_the_generator_stops_the_producer(cluster):
    s = Streamer.remote()
    gen = s.forever.remote()
    assert runtime.get(next(gen)) == 0
    del gen  # the producer is cancelled, so the actor is free for the next call
    assert runtime.get(s.pid.remote(), timeout=10) > 0


def test_cancel_a_stream(cluster):
    s = Streamer.remote()
    gen = s.forever.remote()
    assert runtime.get(next(gen)) == 0
    runtime.cancel(gen)
    refs = list(gen)  # what was produced before, then the cancellation
    assert refs
    with pytest.raises(TaskCancelledError):
        runtime.get(refs[-1])


def test_iterating_on_the_loop_is_refused(cluster):
    @runtime.remote
    class Bad:
        async def run(self):
            gen = count.remote(2)
            try:
                next(gen)
            except RuntimeError as exc:
                return str(exc)
            return "no error"

    assert "async for" in runtime.get(Bad.remote().run.remote())


def test_generator_does_not_pickle(cluster):
    gen = count.remote(1)
    with pytest.raises(TypeError, match="cannot be passed"):
        runtime.put(gen)
    list(gen)


@runtime.remote(num_returns="streaming")
def gated(path):
    yield "first"
    while not os.path.exists(path):
        time.sleep(0.01)
    yield "second"


def test_wait_takes_generators(cluster, tmp_path):
    """As in Ray: a generator is ready when its next item is there, or once it has ended."""
    flag = str(tmp_path / "go")
    gen = gated.remote(flag)
    ready, not_ready = runtime.wait([gen], timeout=20)
    assert ready == [gen] and not_ready == []
    assert runtime.get(next(gen)) == "first"
    # The producer waits for the flag: the generator is not ready, a plain ref is.
    other = runtime.put(1)
    ready, not_ready = runtime.wait([gen, other], num_returns=2, timeout=0.3)
    assert ready == [other] and not_ready == [gen]
    open(flag, "w").close()
    ready, _ = runtime.wait([gen], timeout=20)
    assert ready == [gen] and runtime.get(next(gen)) == "second"
    ready, _ = runtime.wait([gen], timeout=20)  # ended: next() answers at once
    assert ready == [gen]
    with pytest.raises(StopIteration):
        next(gen)
