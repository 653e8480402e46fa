"""The autoscaler end to end with the local-process provider: demand appears, a node
starts, the work runs, the idle node stops after the timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runtime
from runtime.autoscaler import NODE_LABEL, Autoscaler, LocalProcessProvider, NodeType, sdk
from runtime.util import placement_group, remove_placement_group
from runtime.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from tests.conftest import start_head, stop_process, until

SRC = Path(__file__).resolve().parents[2] / "src"


def node_id() -> str:
    return runtime.get_runtime_context().get_node_id()


def provider_nodes() -> dict[str, str]:
    """Alive node processes of provider nodes: node id -> the provider's id."""
    return {
        n["NodeID"]: n["Labels"][NODE_LABEL]
        for n in runtime.nodes()
        if n["Alive"] and not n["IsDriver"] and NODE_LABEL in n["Labels"]
    }


@pytest.fixture
def scaler(tmp_path, monkeypatch):
    # Placement groups nobody can hold wait for the autoscaler (not the default 5 s).
    env = {**os.environ, "RUNTIME_PG_INFEASIBLE_S": "120"}
    head = start_head(tmp_path, "--num-cpus", "0", env=env)
    token = os.path.join(head.state_dir, "token")
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", token)
    runtime.init(address=head.address, log_to_driver=False)
    provider = LocalProcessProvider(head.address, token_file=token, env=head.env)
    auto = Autoscaler(provider, [NodeType("cpu2", {"CPU": 2.0}, max_workers=2)],
                      idle_timeout_s=2.0, period_s=0.2)  # fmt: skip
    auto.start()
    try:
        yield auto
    finally:
        auto.stop()
        runtime.shutdown()
        provider.close()
        stop_process(head.proc)


@pytest.mark.timeout(150)
def test_pending_placement_group_starts_a_node_that_runs_the_work_then_stops_when_idle(scaler):
    provider = scaler.provider
    assert runtime.cluster_resources().get("CPU", 0) == 0
    pg = placement_group([{"CPU": 2.0}])
    runtime.get(pg.ready(), timeout=90)
    assert len(provider.non_terminated_nodes()) == 1  # one node holds the one bundle
    strategy = PlacementGroupSchedulingStrategy(pg)
    ran_on = runtime.get(runtime.remote(node_id).options(scheduling_strategy=strategy).remote())
    assert ran_on in provider_nodes()
    remove_placement_group(pg)
    # Idle for the timeout: the autoscaler stops it (it drains and leaves).
    until(lambda: not provider.non_terminated_nodes() and not provider.pids(), 60,
          lambda: f"errors: {scaler.errors}, last: {scaler.last}")  # fmt: skip
    until(lambda: not provider_nodes(), 30)
    assert scaler.errors == []


@pytest.mark.timeout(150)
def test_request_resources_scales_up_ahead_of_demand_and_withdrawing_it_scales_down(scaler):
    provider = scaler.provider
    sdk.request_resources(num_cpus=3)
    assert sdk.requested_resources() == [{"CPU": 1.0}] * 3
    until(lambda: runtime.cluster_resources().get("CPU", 0) >= 4, 90,
          lambda: f"errors: {scaler.errors}, last: {scaler.last}")  # fmt: skip
    assert len(provider.non_terminated_nodes()) == 2  # 3 CPUs: two nodes of 2
    # Idle, but requested: they stay past the idle timeout.
    assert scaler.last is not None and scaler.last.terminate == []
    sdk.request_resources(num_cpus=0)
    until(lambda: not provider.pids(), 60)
    until(lambda: not provider_nodes(), 30)


def test_request_resources_refuses_bad_input(scaler):
    with pytest.raises(ValueError, match="num_cpus must be an int"):
        sdk.request_resources(num_cpus=-1)
    with pytest.raises(ValueError, match="must map to a number"):
        sdk.request_resources(bundles=[{"CPU": "two"}])


def test_ray_autoscaler_sdk_is_runtime_s_under_runtime_compat(tmp_path):
    script = tmp_path / "uses_ray.py"
    script.write_text(
        textwrap.dedent("""
        import ray.autoscaler.sdk
        from ray.autoscaler.sdk import request_resources
        import runtime.autoscaler.sdk
        assert request_resources is runtime.autoscaler.sdk.request_resources
        print("same")
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-m", "runtime.compat", str(script)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


@pytest.mark.timeout(150)
def test_the_autoscaler_command_scales_for_requests_and_takes_its_nodes_when_it_stops(
    tmp_path, monkeypatch
):
    head = start_head(tmp_path, "--num-cpus", "0")
    token = os.path.join(head.state_dir, "token")
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", token)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.autoscaler", "--address", head.address,
         "--token-file", token, "--node-type", 'cpu1={"CPU": 1}', "--max-workers", "3",
         "--idle-timeout", "1", "--period", "0.2"],
        env=head.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    runtime.init(address=head.address, log_to_driver=False)
    try:
        sdk.request_resources(num_cpus=2)
        until(lambda: runtime.cluster_resources().get("CPU", 0) == 2, 90)
        assert len(provider_nodes()) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        until(lambda: not provider_nodes(), 30)  # its nodes went with it
    finally:
        runtime.shutdown()
        stop_process(proc)
        stop_process(head.proc)
    assert proc.stdout is not None
    with proc.stdout:
        assert "autoscaler running against" in proc.stdout.read().decode()


def test_the_autoscaler_command_refuses_a_bad_node_type():
    out = subprocess.run(
        [sys.executable, "-m", "runtime.autoscaler", "--address", "127.0.0.1:1",
         "--token-file", "t", "--node-type", "cpu1=2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--node-type takes NAME=" in out.stderr
