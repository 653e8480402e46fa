"""The caller's per-call path (``api.calling``, ``api.blocking.get_owned``, ``objects.refs``):
what was made cheaper keeps its meaning. A blocking get of owned refs returns their values in
order and raises the first error; values with buffers and values stored in the object store
come back whole; a get that times out leaves no waiter behind on the objects it watched; an
owned object's record stays out of the cyclic collector; a handle's methods are found as
plain attributes once used, and a wrong name still raises.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

import runtime
from runtime.core.objects import refs as refs_mod
from runtime.exceptions import GetTimeoutError, TaskError

pytestmark = pytest.mark.timeout(120)


@runtime.remote
class Box:
    def value(self, x):
        return x

    def fail(self, why):
        raise ValueError(why)

    def array(self, n):
        return np.arange(n, dtype=np.int64)

    def wait_for(self, path):
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
        return "opened"


def test_a_get_of_many_returns_every_value_in_order_whatever_its_kind(cluster):
    box = Box.remote()
    refs = [box.value.remote(i) for i in range(300)]
    refs.append(box.value.remote({"nested": [1, 2.5, None]}))  # pickled, not msgpack
    refs.append(box.array.remote(10))  # a small array: inline, with a buffer
    refs.append(box.array.remote(200_000))  # 1.6 MB: in the object store
    got = runtime.get(refs)
    assert got[:300] == list(range(300))
    assert got[300] == {"nested": [1, 2.5, None]}
    assert got[301].tolist() == list(range(10))
    assert got[302].shape == (200_000,) and int(got[302][-1]) == 199_999


def test_a_get_of_many_raises_the_first_error_in_order(cluster):
    box = Box.remote()
    refs = [box.value.remote(1), box.fail.remote("first"), box.fail.remote("second")]
    with pytest.raises(TaskError, match="first"):
        runtime.get(refs)
    with pytest.raises(ValueError, match="second"):  # the error is also the user's type
        runtime.get(refs[2])


def test_a_get_that_times_out_leaves_no_waiter_on_the_objects_it_watched(cluster, tmp_path):
    box = Box.remote()
    opened = tmp_path / "open"
    slow = box.wait_for.remote(str(opened))
    later = box.value.remote("after")
    worker = refs_mod.current_worker()
    for target in ([slow], [slow, later], slow):
        with pytest.raises(GetTimeoutError):
            runtime.get(target, timeout=0.05)
        entry = worker.refs.owned[slow.id]
        assert not entry.waiters  # the waiter that gave up took itself out
    opened.touch()
    assert runtime.get([slow, later], timeout=60) == ["opened", "after"]


def test_an_owned_objects_record_is_outside_the_cyclic_collector(cluster):
    box = Box.remote()
    ref = box.value.remote(7)
    entry = refs_mod.current_worker().refs.owned[ref.id]
    assert not gc.is_tracked(entry)
    assert runtime.get(ref) == 7
    assert entry.state == refs_mod.READY and not gc.is_tracked(entry)


def test_a_handles_method_is_found_as_an_attribute_once_used_and_a_wrong_name_raises(cluster):
    box = Box.remote()
    first = box.value
    assert box.value is first  # cached on the handle: no lookup hook per call
    assert runtime.get(box.value.remote(3)) == 3
    with pytest.raises(AttributeError, match="no method 'nope'"):
        _ = box.nope
    with pytest.raises(AttributeError):
        _ = box.__nope__
