"""The dashboard in a real browser: headless Chromium (the system's, Debian's `chromium`)
driven by Playwright loads the page of a running cluster; the charts render as non-empty SVG,
an actor's and a task's rows link to their logs showing the lines they printed, the timeline,
stack and memory links answer, and no JavaScript error occurs.
A screenshot of the page goes to the test's tmp dir (and, with RUNTIME_DOCS_SCREENSHOTS=DIR,
to DIR: that is how docs/img/ is made)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runtime
from tests.conftest import until

from .conftest import DashboardCluster

pytestmark = pytest.mark.timeout(120)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need Playwright (the dashboard-tests extra)"
)
CHROMIUM = os.environ.get("RUNTIME_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
if CHROMIUM is None:
    pytest.skip("no Chromium installed (apt-get install chromium)", allow_module_level=True)

CHARTS = ("cpu", "memory", "store", "tasks", "calls")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page whose JavaScript errors (uncaught, or logged as errors) fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield pg
        assert errors == [], errors
    finally:
        context.close()


@runtime.remote
class Greeter:
    def greet(self, n: int) -> int:
        print(f"hello from the greeter, call {n}")
        return n


@runtime.remote
def busy(i: int) -> int:
    return i


@runtime.remote
def announce(word: str) -> str:
    print(f"the task announces {word}")
    return runtime.get_runtime_context().get_task_id()


def _work(dash: DashboardCluster) -> None:
    """Give the charts something to draw, and an actor a line of output."""
    g = Greeter.options(name="greeter", get_if_exists=True).remote()
    assert runtime.get([g.greet.remote(i) for i in range(3)]) == [0, 1, 2]
    runtime.get([busy.remote(i) for i in range(50)])
    until(lambda: dash.json("/api/logs?who=greeter")[-1:], 20)


def _open(page: Any, dash: DashboardCluster) -> None:
    page.goto(dash.url("/"))
    page.wait_for_selector("body[data-loaded]", timeout=30_000)
    for name in CHARTS:  # two samples at least: rates need two points
        page.wait_for_selector(f"#chart-{name} svg polyline", state="attached", timeout=30_000)


def test_the_page_renders_charts_and_tables_without_errors(
    dash: DashboardCluster, page: Any
) -> None:
    _work(dash)
    _open(page, dash)
    for name in CHARTS:
        points = page.locator(f"#chart-{name} svg polyline").first.get_attribute("points")
        assert points and len(points.split()) >= 1, name
        box = page.locator(f"#chart-{name} svg").bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
    page.wait_for_selector("#table-actors td:text('greeter')")
    assert page.locator("#table-nodes tr").count() >= 4  # a header and three members
    assert "node(s)" in page.locator("#summary").inner_text()


def test_an_actor_row_links_to_the_lines_it_printed(dash: DashboardCluster, page: Any) -> None:
    _work(dash)
    _open(page, dash)
    row = page.locator("#table-actors tr", has=page.locator("td:text('greeter')")).first
    link = row.locator("a.logs")
    assert "actor=" in (link.get_attribute("href") or "")
    link.click()
    page.wait_for_selector("#lines")
    text = page.locator("#lines").inner_text()
    assert "hello from the greeter, call 2" in text
    assert "(greeter pid=" in text


def test_a_finished_tasks_row_links_to_the_lines_it_printed(
    dash: DashboardCluster, page: Any
) -> None:
    task_id = runtime.get(announce.remote("in the browser"))
    until(lambda: dash.json("/api/logs?task=" + task_id), 20)
    _open(page, dash)
    cell = f"td[title='{task_id}']"  # the page shortens ids; the title is whole
    page.wait_for_selector(f"#table-tasks {cell}", timeout=30_000)
    row = page.locator("#table-tasks tr", has=page.locator(cell))
    assert row.count() == 1
    assert "FINISHED" in row.inner_text()
    link = row.locator("a.logs")
    assert f"task={task_id}" in (link.get_attribute("href") or "")
    link.click()
    page.wait_for_selector("#lines")
    text = page.locator("#lines").inner_text()
    assert "the task announces in the browser" in text
    assert "greeter" not in text  # that task's lines only


def test_the_timeline_stacks_and_memory_links_answer(dash: DashboardCluster, page: Any) -> None:
    _open(page, dash)
    with page.expect_download() as download:
        page.locator("#timeline-link").click()
    assert download.value.suggested_filename == "timeline.json"
    for name, expected in (("stacks", "--- thread "), ("memory", "object stores:")):
        page.goto(dash.base + (page.locator(f"#{name}-link").get_attribute("href") or ""))
        assert expected in page.locator("body").inner_text(), name
        page.go_back()


def _slow_objective(config: dict[str, Any]) -> None:
    import time

    from runtime import tune

    for step in range(8):
        time.sleep(0.15)  # a few samples per trial, for the chart
        tune.report({"loss": config["lr"] * 10 / (step + 1)})


def test_a_screenshot_of_the_dashboard(dash: DashboardCluster, page: Any, tmp_path: Path) -> None:
    out = os.environ.get("RUNTIME_DOCS_SCREENSHOTS")
    if out:  # the docs' pictures show a Tune experiment too
        from runtime import tune

        tune.run(
            _slow_objective,
            config={"lr": tune.grid_search([0.1, 0.2, 0.3])},
            name="docs_experiment",
            storage_path=str(tmp_path),
            verbose=0,
        )
    _work(dash)
    _open(page, dash)
    loaded = page.locator("body").get_attribute("data-loaded")  # one more refresh: the charts
    page.wait_for_function(f"document.body.dataset.loaded !== '{loaded}'", timeout=30_000)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if out:  # refresh the docs' pictures: RUNTIME_DOCS_SCREENSHOTS=docs/img pytest ...
        os.makedirs(out, exist_ok=True)
        page.screenshot(path=os.path.join(out, "dashboard.png"), full_page=True)
        page.locator("#overview").screenshot(path=os.path.join(out, "dashboard-charts.png"))
        page.goto(dash.url("/logs?who=greeter"))
        page.wait_for_selector("#lines")
        page.screenshot(path=os.path.join(out, "dashboard-logs.png"))
