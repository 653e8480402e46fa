"""Warm memory for batch functions: numpy arrays of at least 256 KiB made while a batch
function runs come from a per-process cache of touched pages (a C allocator compiled on
first use) and go back to it when they die; values are what numpy's own allocator gives."""

from __future__ import annotations

import gc
import importlib
import time

import numpy as np
import pytest

from runtime import data
from runtime.data import _warm as W

umath = importlib.import_module("numpy._core._multiarray_umath")


@pytest.fixture
def hook() -> W._Hook:
    got = W.get_hook()
    if got is None:
        pytest.skip("no C compiler or no numpy allocator hook here")
    return got


def test_a_big_array_freed_is_reused_for_the_next_one_of_its_size(hook: W._Hook) -> None:
    x = np.arange(600_000, dtype=np.float64)  # 4.8 MB
    with W.warm_arrays():
        first = x * 2.0
    address = first.ctypes.data
    del first
    reused = hook.stats()["reused"]
    with W.warm_arrays():
        second = x * 3.0
    assert second.ctypes.data == address and hook.stats()["reused"] == reused + 1
    np.testing.assert_array_equal(second, np.arange(600_000) * 3.0)


def test_zeros_from_a_reused_mapping_are_zeros(hook: W._Hook) -> None:
    with W.warm_arrays():
        dirty = np.full(400_000, 7.0)
    del dirty
    with W.warm_arrays():
        clean = np.zeros(400_000)
    assert not clean.any()


def test_a_resized_array_keeps_its_values(hook: W._Hook) -> None:
    with W.warm_arrays():
        a = np.arange(300_000, dtype=np.int64)
        a.resize(500_000, refcheck=False)  # numpy's realloc
    np.testing.assert_array_equal(a[:300_000], np.arange(300_000))
    small = np.arange(10, dtype=np.int64)
    with W.warm_arrays():
        small.resize(400_000, refcheck=False)  # from the C allocator's block to a mapping
    np.testing.assert_array_equal(small[:10], np.arange(10))


def test_the_hook_applies_only_inside_the_block_and_small_arrays_are_untouched(
    hook: W._Hook,
) -> None:
    def handed_out() -> int:
        stats = hook.stats()
        return stats["mapped"] + stats["reused"]

    before = handed_out()
    with W.warm_arrays():
        assert umath.get_handler_name() == "runtime_data_warm"
        small = np.ones(1000)
    assert umath.get_handler_name() == "default_allocator"
    assert handed_out() == before
    assert small.sum() == 1000
    outside = np.ones(1_000_000)
    assert handed_out() == before
    del outside


def test_a_pending_exception_survives_an_array_freed_into_the_cache(hook: W._Hook) -> None:
    def fails() -> None:
        with W.warm_arrays():
            big = np.ones(500_000)
            raise KeyError(float(big[0]))  # big is freed while the KeyError is pending

    with pytest.raises(KeyError, match=r"1\.0"):
        fails()
    read_only = np.ones(500_000)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"), W.warm_arrays():
        np.multiply(np.ones(500_000), 2.0, out=read_only)


def test_the_cache_gives_its_memory_back_when_idle(hook: W._Hook) -> None:
    with W.warm_arrays():
        a = np.ones(700_000)
    del a
    assert hook.stats()["kept"] > 0
    hook.last_used = time.monotonic() - 2 * W.IDLE_S  # as if idle for long: the trimmer
    deadline = time.monotonic() + W.IDLE_S  # looks every IDLE_S / 2
    while hook.stats()["kept"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.stats()["kept"] == 0


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(60)
def test_map_batches_runs_the_function_under_the_hook_and_results_are_exact() -> None:
    if W.get_hook() is None:  # the workers share this host and its compiler
        pytest.skip("no C compiler or no numpy allocator hook here")

    def normalise(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = batch["data"].astype("float32") / 255.0
        return {"data": out, "hooked": np.full(len(out), umath.get_handler_name())}

    pixels = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    got = data.from_numpy(pixels).map_batches(normalise, batch_size=8).take_all()
    gc.collect()
    assert {r["hooked"] for r in got} == {"runtime_data_warm"}
    np.testing.assert_array_equal(
        np.stack([r["data"] for r in got]), pixels.astype("float32") / 255.0
    )
