"""A streaming task (generator) with a runtime_env runs in that environment's pool process,
as other tasks with one do: its items come back in order through the node, large ones too,
and the consumer's pace holds the generator back (real processes)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

import runtime
from runtime.util import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(90)

ROLE = "runtime.io/role"


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    runtime.init(num_cpus=2)
    try:
        yield next(n["NodeID"] for n in runtime.nodes() if n["Schedulable"])
    finally:
        runtime.shutdown()


@runtime.remote(num_returns="streaming")
def produce(n: int, big: bool):
    for i in range(n):
        payload = np.full(300_000, i, dtype=np.uint8) if big else None  # stays in a store
        yield i, os.environ.get("RT_STREAM"), os.getpid(), payload


@runtime.remote(num_returns="streaming", _generator_backpressure_num_objects=2)
def paced(log: str):
    for i in range(6):
        with open(log, "a") as f:
            f.write(f"{i}\n")
        yield i


def test_a_streaming_task_with_a_runtime_env_runs_in_the_env_s_process(node):
    pinned = NodeAffinitySchedulingStrategy(node, soft=False)
    node_pid = next(n["Pid"] for n in runtime.nodes() if n["NodeID"] == node)
    for big in (False, True):
        gen = produce.options(
            scheduling_strategy=pinned, runtime_env={"env_vars": {"RT_STREAM": "green"}}
        ).remote(5, big)
        items = [runtime.get(ref, timeout=30) for ref in gen]
        assert [i for i, *_ in items] == list(range(5))
        assert {env for _, env, _, _ in items} == {"green"}
        (pid,) = {pid for _, _, pid, _ in items}
        pools = {n["Pid"] for n in runtime.nodes() if n["Alive"] and n["Labels"].get(ROLE) == "env"}
        assert pid != node_pid and pid in pools  # not in the node that received it
        if big:
            assert [int(x[3][0]) for x in items] == list(range(5))
    # Without an environment it runs in the node itself, which sees no RT_STREAM.
    plain = [
        runtime.get(r, timeout=30)
        for r in produce.options(scheduling_strategy=pinned).remote(2, False)
    ]
    assert {(env, pid) for _, env, pid, _ in plain} == {(None, node_pid)}


def test_the_consumer_s_pace_reaches_the_generator_in_its_pool(node, tmp_path):
    log = tmp_path / "made"
    gen = paced.options(runtime_env={"env_vars": {"RT_STREAM": "x"}}).remote(str(log))
    first = next(gen)
    assert runtime.get(first, timeout=30) == 0
    # The window is 2: with one item taken, the generator cannot run far ahead.
    import time

    time.sleep(1.0)  # give a runaway generator time to show itself
    assert len(log.read_text().split()) <= 4
    rest = [runtime.get(r, timeout=30) for r in gen]
    assert rest == [1, 2, 3, 4, 5]
