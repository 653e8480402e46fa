"""Chaos scenarios 2 and 3: ``kill -9`` of the node that hosts an actor.

With ``max_restarts`` and ``max_task_retries`` the actor comes back on a live node and every
numbered call arrives, in submission order; without task retries the calls in flight fail
fast with ``ActorDiedError`` ("may have run") and later calls reach the restarted actor;
without restarts the actor stays dead and every call says so.
"""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime.exceptions import ActorDiedError

from ..actors import Recorder

pytestmark = pytest.mark.timeout(90)


def _kill_host(actor) -> int:
    pid = runtime.get(actor.pid.remote())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


def test_an_actor_with_retries_survives_its_node_and_every_call_arrives_in_order(mesh):
    r = Recorder.options(max_restarts=1, max_task_retries=-1).remote()
    first = [r.record.remote(i) for i in range(50)]
    old_pid = _kill_host(r)
    later = [r.record.remote(i) for i in range(50, 100)]
    assert runtime.get(first + later, timeout=60) == list(range(100))
    seen = runtime.get(r.history.remote())
    assert seen == sorted(seen)  # the restarted actor got what it got in submission order
    assert seen[-1] == 99
    assert runtime.get(r.pid.remote()) != old_pid


def test_without_retries_calls_in_flight_fail_and_later_calls_reach_the_restarted_actor(mesh):
    r = Recorder.options(max_restarts=1).remote()
    pid = runtime.get(r.pid.remote())
    napping = r.nap.remote(30)
    assert runtime.wait([napping], timeout=0.3) == ([], [napping])  # sent, and running
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError, match="may have run"):
        runtime.get(napping, timeout=60)
    assert runtime.get(r.record.remote("after"), timeout=60) == "after"
    assert runtime.get(r.pid.remote()) != pid


def test_an_actor_without_restarts_stays_dead_when_its_node_dies(mesh):
    r = Recorder.remote()
    _kill_host(r)
    with pytest.raises(ActorDiedError, match="died"):
        runtime.get(r.record.remote(1), timeout=60)
    with pytest.raises(ActorDiedError):
        runtime.get(r.record.remote(2), timeout=60)
