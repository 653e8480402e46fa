"""The caller's per-call records live outside the cyclic collector (``OwnedObject``,
``PendingTask``: msgspec structs with ``gc=False``), which is only sound while no garbage
cycle runs through them: a process shut down with calls still in flight (each record holding
the callee's handle token, whose table leads back to the worker) must leave nothing behind
that only the collector could free.
"""

from __future__ import annotations

import gc
import os
import time
import weakref

import pytest

import runtime
from runtime.core.objects import refs as refs_mod

from ..conftest import until

pytestmark = pytest.mark.timeout(120)


@runtime.remote
class Slow:
    def wait_for(self, path):
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
        return "opened"

    def items(self, n):
        yield from range(n)


def test_a_shutdown_with_calls_in_flight_frees_their_records_and_what_they_hold(tmp_path):
    runtime.init(num_cpus=1)
    try:
        slow = Slow.remote()
        gate = str(tmp_path / "never")
        pending = [slow.wait_for.remote(gate) for _ in range(3)]
        stream = slow.items.options(num_returns="streaming").remote(2)
        tasks = refs_mod.current_worker().tasks  # type: ignore[attr-defined]
        until(lambda: len(tasks) >= 4)
        records = list(tasks.values())
        assert not any(gc.is_tracked(r) for r in records)
        token = weakref.ref(slow._token)  # held by every call in flight to the actor
        del records
    finally:
        runtime.shutdown()
    del pending, stream, slow
    gc.collect()
    assert token() is None
