"""A node holding a placement group bundle dies: the bundle is placed again elsewhere and
a restartable actor in it comes back there."""

from __future__ import annotations

import os
import signal
import time

import pytest

import runtime
from runtime.util import (
    PlacementGroupSchedulingStrategy,
    placement_group,
    placement_group_table,
)

pytestmark = pytest.mark.timeout(90)


@runtime.remote
class Where:
    def node(self):
        return runtime.get_runtime_context().get_node_id(), os.getpid()


def test_lost_bundle_is_placed_again(mesh):
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(20)
    strategy = PlacementGroupSchedulingStrategy(pg, 0)
    actor = Where.options(
        num_cpus=1, scheduling_strategy=strategy, max_restarts=1, max_task_retries=1
    ).remote()
    node, pid = runtime.get(actor.node.remote())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            new_node, _ = runtime.get(actor.node.remote(), timeout=10)
            break
        except runtime.exceptions.RuntimeBaseError:
            assert time.monotonic() < deadline
    assert new_node != node
    row = next(r for r in placement_group_table() if r["placement_group_id"] == pg.id)
    assert row["state"] == "CREATED"
    assert row["bundles_to_node_id"][0] == new_node


def test_a_restarted_head_keeps_its_placement_groups(tmp_path):

    from runtime.util import get_placement_group

    from ..conftest import cpus_back, start_head, stop_process, until

    head = start_head(tmp_path, "--num-cpus", "0")
    node = head.start_node("--num-cpus", "2", "--procs", "1")  # one process holds the bundle
    restarted = None
    try:
        runtime.init(address=head.address, token=head.token)
        pg = placement_group([{"CPU": 1}], name="kept", lifetime="detached")
        assert pg.wait(30)
        head.proc.kill()
        head.proc.wait(10)
        restarted = head.restart()
        until(lambda: cpus_back(2), timeout=60)  # the driver is back
        assert get_placement_group("kept") == pg
        row = next(r for r in placement_group_table() if r["placement_group_id"] == pg.id)
        assert row["state"] == "CREATED"
        # Its bundle is still held on the node: a second whole-node group does not fit now.
        other = placement_group([{"CPU": 2}])
        assert not other.wait(1)
    finally:
        runtime.shutdown()
        stop_process(node)
        if restarted is not None:
            stop_process(restarted)
        stop_process(head.proc)
