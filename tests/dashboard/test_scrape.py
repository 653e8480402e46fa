"""The head's /metrics merges every process's metrics (head, nodes, driver): tasks, actor
calls and their latency, the store, loop lag, connections, CPU and memory, and application
metrics recorded in actors; it parses with prometheus_client's parser and passes `promtool
check metrics` (where promtool is installed). Per-member endpoints for service discovery."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import runtime
from runtime.util.metrics import Counter

from .conftest import DashboardCluster, http_get

pytestmark = pytest.mark.timeout(120)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote
def fails() -> None:
    raise ValueError("this task fails on purpose")


@runtime.remote
class Recorder:
    def __init__(self) -> None:
        self.hits = Counter("app_hits", description="Hits seen", tag_keys=("kind",))

    def hit(self, kind: str) -> int:
        self.hits.inc(tags={"kind": kind})
        return 1


def _scrape(dash: DashboardCluster, path: str = "/metrics") -> dict[str, Any]:
    status, body = dash.get(path)
    assert status == 200, body[:300]
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _values(family: Any, sample: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_one_scrape_shows_the_work_of_every_process(dash: DashboardCluster) -> None:
    assert runtime.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
    with pytest.raises(ValueError):
        runtime.get(fails.remote())
    rec = Recorder.remote()
    assert sum(runtime.get([rec.hit.remote("a") for _ in range(7)])) == 7
    Counter("app_driver_events", tag_keys=()).inc(3)

    families = _scrape(dash)
    finished = families["runtime_tasks_finished"]
    assert sum(_values(finished, "runtime_tasks_finished_total", outcome="succeeded")) >= 20
    assert sum(_values(finished, "runtime_tasks_finished_total", outcome="failed")) >= 1
    calls = families["runtime_actor_call_latency_seconds"]
    assert sum(_values(calls, "runtime_actor_call_latency_seconds_count")) >= 7
    assert sum(_values(families["app_hits"], "app_hits_total", kind="a")) == 7
    [driver_events] = _values(families["app_driver_events"], "app_driver_events_total")
    assert driver_events == 3
    roles = {s.labels["role"] for s in families["runtime_process_resident_memory_bytes"].samples}
    assert roles == {"head", "node", "driver"}
    assert all(s.value > 10e6 for s in families["runtime_process_resident_memory_bytes"].samples)
    for name in ("runtime_process_cpu_seconds", "runtime_connections", "runtime_loop_lag_seconds",
                 "runtime_object_store_bytes", "runtime_tasks", "runtime_actors",
                 "runtime_heartbeat_age_seconds", "runtime_members",
                 "runtime_object_spilled_bytes", "runtime_tasks_owned"):  # fmt: skip
        assert name in families, name
    where = {s.labels["where"] for s in families["runtime_object_store_bytes"].samples}
    assert where == {"memory", "spilled", "pinned"}
    alive = _values(families["runtime_actors"], "runtime_actors", state="ALIVE")
    assert sum(alive) >= 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_scrape_passes_promtool_check_metrics(dash: DashboardCluster) -> None:
    status, body = dash.get("/metrics")
    assert status == 200
    checked = subprocess.run(
        ["promtool", "check", "metrics"], check=False, input=body, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_each_member_has_its_own_endpoint_for_service_discovery(dash: DashboardCluster) -> None:
    targets = dash.json("/api/prometheus_sd")
    assert len(targets) >= 3
    host = dash.base.removeprefix("http://")
    for group in targets:
        assert group["targets"] == [host]
        node_id = group["labels"]["node_id"]
        assert group["labels"]["__metrics_path__"] == f"/metrics/{node_id}"
        one = _scrape(dash, f"/metrics/{node_id}")
        ids = {s.labels["node_id"] for s in one["runtime_process_cpu_seconds"].samples}
        assert ids == {node_id}
    assert dash.get("/metrics/no-such-member")[0] == 404


def test_metrics_need_the_credential(dash: DashboardCluster) -> None:
    assert http_get(dash.base + "/metrics")[0] == 401
    assert http_get(dash.base + "/metrics", Authorization="Bearer " + "0" * 64)[0] == 401
    status, _ = http_get(dash.base + "/metrics", Authorization="Bearer " + dash.credential)
    assert status == 200


REPO = Path(__file__).resolve().parents[2]


def test_the_grafana_board_queries_only_metrics_the_cluster_exports(
    dash: DashboardCluster,
) -> None:
    from runtime import data, tune
    from runtime.util.metrics import Gauge

    # the libraries' metrics appear once used; Serve's and Train's are made here the same way
    assert len(data.range(10).map_batches(lambda b: b).take_all()) == 10
    tune.run(lambda config: {"score": 1}, num_samples=1, verbose=0, name="board_check")
    from runtime.serve import _metrics as serve_metrics
    from runtime.train import _metrics as train_metrics

    serve_metrics.request(("/", "app", "D"), 200, 0.01)
    serve_metrics.ReplicaCounts().update({("app", "D", "RUNNING"): 1})
    train_metrics.reported("run")
    Gauge("runtime_unused_check", "").set(0)
    exported = set(_scrape(dash))
    board = json.loads((REPO / "deploy" / "grafana" / "runtime.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    for expr in exprs:
        for name in re.findall(r"\bruntime_[a-z_]+", expr):
            family = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert family in exported, f"{name} (in {expr!r}) is not exported"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_prometheus_config_in_deploy_is_valid(tmp_path: Path) -> None:
    credential = tmp_path / "credential"
    credential.write_text("0" * 64)
    text = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/runtime-dashboard.credential", str(credential)))
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], check=False, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
