"""Many members: a host of many processes forked from one, and the head's view broadcasts."""

from __future__ import annotations

import os

import psutil
import pytest

import runtime
from runtime.core.process import launcher

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def where() -> int:
    return os.getpid()


def test_a_host_of_many_processes_is_forked_from_one_and_every_process_serves_and_stops() -> None:
    n = launcher.FORK_ABOVE + 2
    runtime.init(num_cpus=n)
    try:
        nodes = [x for x in runtime.nodes() if x["Alive"] and not x["IsDriver"]]
        assert len(nodes) == n + 1  # the head, and the host's processes
        me = psutil.Process()
        zygotes = [c for c in me.children() if "--fork" in c.cmdline()]
        assert len(zygotes) == 1
        members = zygotes[0].children()
        assert len(members) == n
        pids = set(runtime.get([where.remote() for _ in range(4 * n)], timeout=60))
        assert pids <= {m.pid for m in members}
        everyone = [zygotes[0], *members]
    finally:
        runtime.shutdown()
    _, alive = psutil.wait_procs(everyone, timeout=10)
    assert not alive


@pytest.mark.timeout(120)
def test_two_hundred_simulated_members_with_churn_join_beat_and_leave_without_a_false_death() -> (
    None
):
    from runtime.core.tools import head_sim

    out = head_sim.run(200, procs=2, seconds=4.0, churn=20.0)
    assert out["join errors"] == 0
    assert out["false deaths"] == 0
    assert out["leaves"] >= 40  # churn ran: about 20 a second for 4 s
    assert out["joins"] == 200 + out["leaves"]
    assert out["views received"] > 0
