"""Calls that travelled in batch frames (``wire.gather``) are sent again, in order, to an
actor that restarts after its node is killed (a fresh mesh: the test kills a node)."""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime.core.objects.refs import current_worker

from ..actors import Recorder

pytestmark = pytest.mark.timeout(90)


def test_calls_sent_in_batches_are_sent_again_in_order_after_the_actor_restarts(mesh):
    r = Recorder.options(max_restarts=1, max_task_retries=-1).remote()
    pid = runtime.get(r.pid.remote())
    before = current_worker().caller.gather.batches
    first = [r.record.remote(i) for i in range(2_000)]
    os.kill(pid, signal.SIGKILL)
    later = [r.record.remote(i) for i in range(2_000, 4_000)]
    assert runtime.get(first + later, timeout=60) == list(range(4_000))
    assert current_worker().caller.gather.batches > before
    seen = runtime.get(r.history.remote())
    assert seen == sorted(seen)  # the restarted actor got what it got in submission order
    assert seen[-1] == 3_999
    assert runtime.get(r.pid.remote()) != pid
