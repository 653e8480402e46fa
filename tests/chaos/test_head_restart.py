"""Chaos scenario 4: ``kill -9`` of the head mid-workload, and a restart on its state dir.

While the head is down, calls between existing actors go on and what needs the head fails
with a clear error instead of hanging; restarted on the same address and state dir, it
takes its state up again: nodes and drivers reconnect, named and detached actors are found
again, and the work that was running completes undisturbed.
"""

from __future__ import annotations

import time

import pytest

import runtime
from runtime.exceptions import NodeDiedError

from ..conftest import HeadProcess, cpus_back, start_head, stop_process, until

pytestmark = pytest.mark.timeout(90)


def test_calls_that_need_a_dead_head_fail_instead_of_hanging(head: HeadProcess):
    runtime.init(address=head.address, token=head.token)
    try:
        assert runtime.cluster_resources()["CPU"] == 1.0
        head.proc.kill()
        head.proc.wait(10)
        with pytest.raises(NodeDiedError, match="head"):
            for _ in range(100):  # until the driver has seen the connection close (bounded)
                runtime.nodes()
                time.sleep(0.05)
    finally:
        runtime.shutdown()


def test_a_restarted_head_takes_up_its_state_and_work_goes_on(tmp_path):
    head = start_head(tmp_path, "--num-cpus", "0")
    node = head.start_node("--num-cpus", "1")
    restarted = None
    try:
        runtime.init(address=head.address, token=head.token)

        @runtime.remote
        class Keeper:
            def __init__(self):
                self.n = 0

            def incr(self):
                self.n += 1
                return self.n

        deadline = time.monotonic() + 30
        while runtime.cluster_resources().get("CPU", 0) < 1:  # until the node has joined
            assert time.monotonic() < deadline
            time.sleep(0.05)
        keeper = Keeper.options(name="keeper", lifetime="detached").remote()
        runtime.get(runtime.put("kv-less warm up"))
        assert runtime.get(keeper.incr.remote()) == 1

        @runtime.remote(max_retries=0)  # a rerun would hide a task the head's death disturbed
        def slow(i):
            time.sleep(0.2)
            return i

        refs = [slow.remote(i) for i in range(8)]  # the workload the head dies under
        runtime.wait(refs, num_returns=1, timeout=30)
        head.proc.kill()
        head.proc.wait(10)
        # Calls go node to node: the actor keeps serving while the head is down.
        assert runtime.get(keeper.incr.remote(), timeout=30) == 2
        with pytest.raises(NodeDiedError):
            runtime.nodes()

        restarted = head.restart()
        until(lambda: cpus_back(1), timeout=60)  # node and driver back
        again = runtime.get_actor("keeper")
        assert runtime.get(again.incr.remote(), timeout=30) == 3  # the same, living actor
        assert runtime.get(refs, timeout=60) == list(range(8))  # the work completed
        assert runtime.get(slow.remote(8), timeout=60) == 8  # and new work runs
    finally:
        runtime.shutdown()
        stop_process(node)
        if restarted is not None:
            stop_process(restarted)
        stop_process(head.proc)
