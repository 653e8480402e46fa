"""Libraries across simulated hosts: Train's ranks on two hosts talk gloo over the bridge."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(180)]


@pytest.mark.xfail(
    strict=True,
    reason="Train's rendezvous is on 127.0.0.1 (train/_controller.py passes ('127.0.0.1', "
    "port) and RankActor.free_port binds 127.0.0.1): a rank on another host dials its own "
    "loopback. Rank 0's node address (NodeManagerAddress) must be used instead.",
)
def test_torch_trainer_runs_two_ranks_on_two_hosts_with_gloo_over_the_bridge(make_cluster):
    pytest.importorskip("torch")
    cluster = make_cluster(3)
    h0, h1, h2 = cluster.hosts
    for host in (h1, h2):
        cluster.start_node(host)
    out = cluster.drive(h0, "train_two_hosts", timeout=150, nodes=2, timeout_s=20)
    assert out["error"] is None, out["error"]
    assert out["metrics"]["sum"] == 3.0  # 1 + 2, all-reduced across the hosts
    assert sorted(out["metrics"]["hosts"]) == ["h1", "h2"]
