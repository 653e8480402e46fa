"""Objects: inline and large values, numpy buffers, and memory that stays bounded."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest

import runtime
from runtime.exceptions import ObjectLostError

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def total(a):
    return float(a.sum()), a.flags.writeable


@runtime.remote
def make(n):
    return np.ones(n, dtype=np.uint8)


def test_put_and_get_small_and_large_values(cluster):
    assert runtime.get(runtime.put({"a": [1, 2]})) == {"a": [1, 2]}
    big = np.arange(1_000_000, dtype=np.int64)
    got = runtime.get(runtime.put(big))
    assert np.array_equal(got, big)
    assert not got.flags.writeable  # a read-only view of the stored bytes


def test_a_put_copies_so_later_changes_do_not_leak_in(cluster):
    arr = np.zeros(100_000)
    ref = runtime.put(arr)
    arr[:] = 1
    assert runtime.get(ref).sum() == 0


def test_numpy_arguments_arrive_as_read_only_arrays(cluster):
    arr = np.ones(500_000)
    assert runtime.get(total.remote(arr)) == (500_000.0, False)
    assert runtime.get(total.remote(runtime.put(arr))) == (500_000.0, False)


def test_large_results_stay_on_their_node_until_fetched(cluster):
    ref = make.remote(2_000_000)
    value = runtime.get(ref)
    assert value.nbytes == 2_000_000 and int(value.sum()) == 2_000_000
    # The large result passes to another task by reference, fetched there from its node.
    assert runtime.get(total.remote(ref)) == (2_000_000.0, False)


def test_a_borrowed_ref_keeps_the_object_alive_after_the_owner_drops_its_own(cluster):
    @runtime.remote
    def pass_through(wrapped):
        return wrapped

    ref = runtime.put(5)
    held = runtime.get(pass_through.remote([ref]))[0]  # a borrowed copy keeps it alive
    del ref
    gc.collect()
    assert runtime.get(held) == 5


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_ten_thousand_dropped_puts_of_one_mb_keep_memory_flat(cluster):
    arr = np.ones(1 << 20, dtype=np.uint8)
    for _ in range(200):  # warm up the allocator
        runtime.put(arr)
    gc.collect()
    before = _rss(psutil.Process().pid)
    for _ in range(10_000):
        ref = runtime.put(arr)
        del ref
    gc.collect()
    grown = _rss(psutil.Process().pid) - before
    assert grown < 200 << 20, f"driver memory grew by {grown >> 20} MB over 10 GB of dropped puts"


def test_dropped_large_results_are_freed_on_the_node_that_holds_them(cluster):
    @runtime.remote(resources={"custom": 0.01})
    def produce():
        return np.ones(4 << 20, dtype=np.uint8)

    @runtime.remote(resources={"custom": 0.01})
    def pid_of_custom_node():
        import os

        return os.getpid()

    pid = runtime.get(pid_of_custom_node.remote())
    for _ in range(20):
        runtime.get(produce.remote())
    gc.collect()
    before = _rss(pid)
    for _ in range(300):  # 1.2 GB through the node's store
        runtime.get(produce.remote())
    gc.collect()
    runtime.get(pid_of_custom_node.remote())
    grown = _rss(pid) - before
    assert grown < 200 << 20, f"node memory grew by {grown >> 20} MB"


def test_getting_an_object_whose_owner_freed_it_fails_cleanly(cluster):
    worker_ref = runtime.put(1)
    fake = runtime.ObjectRef(b"\x00" * 16, worker_ref.owner_id, worker_ref.owner_address)
    with pytest.raises(ObjectLostError):
        runtime.get(fake, timeout=10)
