"""Tune, Train, Data and Serve record through runtime.util.metrics, and the dashboard shows
them: trials by state with their last results and a metric-over-time chart, a Train run's
reports, the rows a Data operator output, and Serve requests by deployment and route."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.conftest import until

from .conftest import DashboardCluster

pytestmark = pytest.mark.timeout(120)


def _family(dash: DashboardCluster, name: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = dash.get("/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == name:
            return list(fam.samples)
    return []


def _objective(config: dict[str, Any]) -> None:
    from runtime import tune

    for step in range(3):
        tune.report({"score": config["x"] * (step + 1)})


def test_tune_trials_show_with_their_results_and_a_chart(
    dash: DashboardCluster, tmp_path: Any
) -> None:
    from runtime import tune

    tune.run(
        _objective,
        config={"x": tune.grid_search([1, 2])},
        name="dash_exp",
        storage_path=str(tmp_path),
        verbose=0,
    )

    def experiment() -> dict[str, Any]:
        found = [e for e in dash.json("/api/tune")["experiments"] if e["experiment"] == "dash_exp"]
        return found[0] if found else {}

    until(lambda: experiment().get("trials") == {"TERMINATED": 2}, 20)  # the next sample
    assert experiment()["metrics"] == ["score"]
    view = dash.json("/api/tune")
    trials = [t for t in view["trials"] if t["experiment"] == "dash_exp"]
    assert sorted(t["results"]["score"] for t in trials) == [3.0, 6.0]
    assert {t["state"] for t in trials} == {"TERMINATED"}
    status, svg = dash.get("/api/chart/tune.svg?experiment=dash_exp&metric=score")
    assert status == 200 and svg.count(b"<polyline") == 2


def test_a_data_pipeline_counts_rows_per_operator(dash: DashboardCluster) -> None:
    from runtime import data

    ds = data.range(300, override_num_blocks=3).map_batches(lambda b: {"id": b["id"] * 2})
    assert ds.count() == 300
    rows = {
        s.labels["operator"]: s.value
        for s in _family(dash, "runtime_data_output_rows")
        if s.name.endswith("_total")
    }
    assert any(v >= 300 for op, v in rows.items() if "MapBatches" in op or "Map" in op), rows


def test_a_train_run_reports_and_its_rate(dash: DashboardCluster, tmp_path: Any) -> None:
    from runtime import train

    def loop() -> None:
        for i in range(4):
            train.report({"step": i})

    trainer = train.DataParallelTrainer(
        loop,
        scaling_config=train.ScalingConfig(num_workers=1),
        run_config=train.RunConfig(name="dash_run", storage_path=str(tmp_path)),
    )
    trainer.fit()

    def run() -> dict[str, Any]:
        return next((r for r in dash.json("/api/train") if r["run"] == "dash_run"), {})

    # the samples after fit() returned: four reports, and no rank left (the run ended)
    until(lambda: run().get("reports") == 4 and run().get("workers") == 0, 20, why=run)


def test_serve_requests_count_by_deployment_and_route(dash: DashboardCluster) -> None:
    from runtime import serve

    @serve.deployment
    class Echo:
        async def __call__(self, request: Any) -> dict[str, str]:
            print("the echo replica answers")
            return {"ok": "yes"}

    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    try:
        serve.run(Echo.bind(), name="dash_app", route_prefix="/echo")
        base = f"http://127.0.0.1:{serve.status().http_port}"
        for _ in range(5):
            with urllib.request.urlopen(base + "/echo", timeout=20) as r:
                assert json.loads(r.read()) == {"ok": "yes"}
        until(lambda: any(r["requests"] >= 5 for r in dash.json("/api/serve")), 20)
        [row] = [r for r in dash.json("/api/serve") if r["app"] == "dash_app"]
        assert row["deployment"] == "Echo" and row["replicas"] == {"RUNNING": 1}
        assert row["errors"] == 0 and row["mean_latency_ms"] > 0
        until(lambda: dash.json("/api/logs?" + row["logs"]), 20)  # the replica's own lines
        lines = {r["line"] for r in dash.json("/api/logs?" + row["logs"])}
        assert lines == {"the echo replica answers"}
        codes = {
            (s.labels["route"], s.labels["code"]): s.value
            for s in _family(dash, "runtime_serve_requests")
            if s.name.endswith("_total") and s.labels["deployment"] == "Echo"
        }
        assert codes == {("/echo", "200"): 5.0}
    finally:
        serve.shutdown()
