"""Placement on hosts, each test on a local mesh of its own (real processes)."""

from __future__ import annotations

import os

import pytest

import runtime
from runtime.exceptions import InfeasibleError
from runtime.util import PlacementGroupSchedulingStrategy, placement_group, remove_placement_group

from ..conftest import until


def cpus_free() -> float:
    return float(runtime.available_resources().get("CPU", 0.0))


@runtime.remote
class Holder:
    def where(self) -> dict[str, object]:
        ctx = runtime.get_runtime_context()
        return {
            "pid": os.getpid(),
            "assigned": ctx.get_assigned_resources(),
            "pg": ctx.get_placement_group_id(),
        }


@runtime.remote
def noop() -> int:
    return os.getpid()


def test_strict_pack_bundles_of_two_cpus_fit_a_host_of_four():
    runtime.init(num_cpus=4)
    try:
        pg = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_PACK")
        assert pg.wait(20)
        holders = [
            Holder.options(
                num_cpus=2,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i),
            ).remote()
            for i in range(2)
        ]
        out = runtime.get([h.where.remote() for h in holders], timeout=30)
        assert [o["assigned"] for o in out] == [{"CPU": 2.0}, {"CPU": 2.0}]
        assert out[0]["pid"] != out[1]["pid"]  # one process per bundle: a gang in parallel
        # The host's report of the bundles reaches the driver's view shortly after.
        until(lambda: cpus_free() == 0.0, why=lambda: str(runtime.available_resources()))
        too_big = placement_group([{"CPU": 2}] * 3, strategy="STRICT_PACK")
        with pytest.raises(InfeasibleError):
            too_big.wait(20)
        remove_placement_group(pg)
        until(lambda: cpus_free() == 4.0, why=lambda: str(runtime.available_resources()))
    finally:
        runtime.shutdown()


def test_a_gpu_request_on_a_cluster_without_gpus_fails_at_once():
    runtime.init(num_cpus=1)
    try:
        with pytest.raises(InfeasibleError, match="GPU"):
            runtime.get(noop.options(num_gpus=1).remote(), timeout=30)
    finally:
        runtime.shutdown()


@runtime.remote(num_cpus=2)
def host_of_two() -> str:
    return runtime.get_runtime_context().get_node_id()


def test_a_node_command_offers_a_host_with_its_labels_and_status_shows_it():
    from ..conftest import cli_json, join_hosts, stop_process

    runtime.init(num_cpus=1)
    joined = join_hosts(1, "--num-cpus", "2", "--labels", '{"zone": "b"}')
    try:

        def labelled() -> list[dict[str, object]]:
            return [n for n in runtime.nodes() if n["Labels"].get("zone") == "b"]

        until(lambda: len(labelled()) == 2 and cpus_free() == 3.0)  # one process per CPU
        rows = labelled()
        assert len({n["HostID"] for n in rows}) == 1
        assert all(n["Resources"]["CPU"] == 2.0 for n in rows)  # the host's, shared
        ran_on = runtime.get(host_of_two.options(label_selector={"zone": "b"}).remote(), timeout=30)
        assert ran_on in {n["NodeID"] for n in rows}
        status = cli_json("status")
        assert isinstance(status, dict)
        hosts = {h["processes"]: h["resources"]["CPU"]["total"] for h in status["hosts"]}
        assert hosts == {1: 1.0, 2: 2.0}
    finally:
        runtime.shutdown()
        for proc in joined:
            stop_process(proc)


def test_a_node_offers_the_machines_cores_unless_told():
    from runtime.core.tools import node_main

    args = node_main.build_parser().parse_args(["--address", "127.0.0.1:1"])
    resources = node_main._resources(args)
    assert resources["CPU"] == float(os.cpu_count() or 1)
    assert node_main._host_plan(args, resources).procs == (os.cpu_count() or 1)
    args = node_main.build_parser().parse_args(["--head", "--num-cpus", "3", "--procs", "1"])
    plan = node_main._host_plan(args, node_main._resources(args))
    assert (plan.resources["CPU"], plan.procs, plan.slot) == (3.0, 1, 3.0)
