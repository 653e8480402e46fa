"""A stream dropped early by its consumer while it runs in a runtime_env's pool process
leaves nothing behind there: the pool, idle, goes away (real processes)."""

from __future__ import annotations

import numpy as np
import pytest

import runtime

from ..conftest import until

pytestmark = pytest.mark.timeout(90)

ROLE = "runtime.io/role"


@runtime.remote(num_returns="streaming")
def big_items():
    for i in range(1000):
        yield np.full(300_000, i % 250, dtype=np.uint8)  # each one stays in the pool's store


def pools() -> set[int]:
    return {n["Pid"] for n in runtime.nodes() if n["Alive"] and n["Labels"].get(ROLE) == "env"}


def test_a_dropped_stream_s_items_are_freed_in_its_pool_which_then_stops(monkeypatch):
    monkeypatch.setenv("RUNTIME_ENV_POOL_IDLE_S", "1")
    runtime.init(num_cpus=1)
    try:
        gen = big_items.options(runtime_env={"env_vars": {"RT_DROP": "1"}}).remote()
        first = runtime.get(next(gen), timeout=30)
        assert int(first[0]) == 0
        assert pools()
        del gen, first  # the consumer is done: the producer stops, what it made is freed
        until(lambda: not pools(), 60, why=lambda: str(runtime.util.state.list_objects()))
    finally:
        runtime.shutdown()
