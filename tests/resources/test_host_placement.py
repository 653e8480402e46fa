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
        assert cpus_free() == 0.0
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
