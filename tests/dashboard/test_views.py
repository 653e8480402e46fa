"""The dashboard's tables and pieces: a job's row links to its driver log, a failed task shows
with its error, charts are drawn for any values, and a job id cannot name a file outside the
jobs folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

import runtime
from runtime.core.tools import jobs
from runtime.dashboard._logs import job_log
from runtime.dashboard._svg import line_chart
from tests.conftest import until

from .conftest import DashboardCluster

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def broken() -> None:
    raise KeyError("the key the dashboard shows")


def test_a_failed_task_shows_with_its_error(dash: DashboardCluster) -> None:
    with pytest.raises(KeyError):
        runtime.get(broken.remote())

    def failed() -> list[dict[str, Any]]:
        rows = dash.json("/api/tasks")  # the timeline has it first, the next sample its error
        return [r for r in rows if r["name"].endswith("broken") and r["error"]]

    until(failed, 20)
    [row] = failed()[:1]
    assert row["state"] == "FAILED" and "the key the dashboard shows" in row["error"]
    assert f"task={row['task_id']}" in row["logs"] and row["node_id"]


def test_a_jobs_row_links_to_its_driver_output(dash: DashboardCluster) -> None:
    manager = jobs.get_manager(dash.head.address)
    code = "print('the job says hello', flush=True)"
    job_id = jobs.submit(manager, dash.head.address, f'python -c "{code}"', job_id="dash-job-1")
    jobs.wait(manager, job_id, 60)
    [row] = [r for r in dash.json("/api/jobs") if r["job_id"] == "dash-job-1"]
    assert row["status"] == "SUCCEEDED" and row["logs"] == "job=dash-job-1"
    lines = [r["line"] for r in dash.json("/api/logs?" + row["logs"])]
    assert "the job says hello" in lines
    status, page = dash.get("/logs?" + row["logs"])
    assert status == 200 and b"the job says hello" in page


def test_charts_draw_any_values() -> None:
    assert "no data yet" in line_chart("empty", "", {})
    one = line_chart("one point", "bytes", {"a": [(1.7e9, 3 * 2**20)]})
    assert "<circle" in one and "3.3 MiB" in one  # the top label, 10 % above the value
    mixed = line_chart("negative", "", {"a": [(0.0, -5.0), (1.0, 5.0)], "b": [(0.5, 0.0)]})
    assert mixed.count("<polyline") == 2
    ys = [float(y) for y in re.findall(r",(-?[0-9.]+)", mixed)]
    assert all(0 <= y <= 170 for y in ys)  # inside the picture
    assert "&lt;script&gt;" in line_chart("<script>", "", {"<b>": [(0.0, 1.0)]})


def test_a_job_id_cannot_reach_outside_the_jobs_folder(tmp_path: Path) -> None:
    secret = tmp_path / "secret.log"
    secret.write_text("not for you\n")
    os.makedirs(tmp_path / "jobs" / "ok")
    (tmp_path / "jobs" / "ok" / "driver.log").write_text("line one\nline two\n")
    assert [r["line"] for r in job_log(str(tmp_path), "ok")] == ["line one", "line two"]
    for bad in ("../secret.log", "..", "ok/../..", "/etc/passwd", "a" * 65):
        assert job_log(str(tmp_path), bad) == []
