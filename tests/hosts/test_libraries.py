"""Libraries across simulated hosts: Train's ranks on two hosts talk gloo over the bridge."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(180)]


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
