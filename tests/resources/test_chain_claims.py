"""Runs of tasks on a node's thread (``execution.chain``) give way to another process of
the host that claims resources: a request for the whole host, queued among one-CPU tasks
on a two-process host, is granted, every task answers once, and the host's count is exact
afterwards."""

from __future__ import annotations

import os
import time

import pytest

import runtime
from runtime.util import NodeAffinitySchedulingStrategy

from ..actors import gate
from ..conftest import until, workers

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def short(i: int) -> int:
    time.sleep(0.002)
    return i


@runtime.remote(num_cpus=2)
def whole_host() -> str:
    return "whole"


def test_a_request_for_the_whole_host_is_not_starved_by_runs_of_small_tasks() -> None:
    runtime.init(num_cpus=2)  # two one-CPU node processes sharing one host ledger
    try:
        refs = [short.remote(i) for i in range(300)]
        big = whole_host.remote()
        refs += [short.remote(i) for i in range(300, 600)]
        assert runtime.get(big, timeout=60) == "whole"
        assert runtime.get(refs, timeout=60) == list(range(600))
        until(lambda: runtime.available_resources().get("CPU") == 2.0)
    finally:
        runtime.shutdown()


def test_a_run_under_way_stops_for_another_process_s_claim_and_its_rest_run_after(
    tmp_path,
) -> None:
    runtime.init(num_cpus=2)
    try:
        a, b = sorted(workers())
        on_a = NodeAffinitySchedulingStrategy(a, soft=False)
        on_b = NodeAffinitySchedulingStrategy(b, soft=False)
        files = {k: str(tmp_path / k) for k in ("s1", "g1", "s2", "g2")}
        first = gate.options(scheduling_strategy=on_a).remote(files["s1"], files["g1"])
        until(lambda: os.path.exists(files["s1"]))
        lead = gate.options(scheduling_strategy=on_a).remote(files["s2"], files["g2"])
        rest = [short.options(scheduling_strategy=on_a).remote(i) for i in range(20)]
        open(files["g1"], "w").close()  # the lead starts a run holding the twenty
        until(lambda: os.path.exists(files["s2"]))
        big = whole_host.options(scheduling_strategy=on_b).remote()  # B claims the host
        until(lambda: runtime.get(first, timeout=5) == "opened")
        open(files["g2"], "w").close()  # the run must stop and give its CPU back
        assert runtime.get(big, timeout=60) == "whole"
        assert runtime.get(lead, timeout=30) == "opened"
        assert runtime.get(rest, timeout=60) == list(range(20))
        until(lambda: runtime.available_resources().get("CPU") == 2.0)
    finally:
        runtime.shutdown()
