"""A head with a dashboard, a second node and this process as its driver, shared by the tests
of a module (a cluster costs seconds to start). The dashboard samples every 0.3 s here."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import runtime
from runtime.core.tools.dashboard import read_only_credential
from tests.conftest import HeadProcess, start_head, stop_process, until

pytest.importorskip("aiohttp", reason="the dashboard needs the `dashboard` extra (aiohttp)")
pytest.importorskip("prometheus_client", reason="the dashboard needs prometheus_client")


@dataclass
class DashboardCluster:
    head: HeadProcess
    base: str  # http://host:port
    credential: str  # the read-only one

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={self.credential}"

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        return http_get(self.url(path) if "token" not in headers else self.base + path, **headers)

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)


def http_get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardCluster]:
    tmp = tmp_path_factory.mktemp("dashboard")
    env = dict(os.environ, RUNTIME_DASHBOARD_SAMPLE_S="0.3")
    head = start_head(tmp, "--num-cpus", "1", "--dashboard-port", "0", env=env)
    node = None
    try:
        with open(os.path.join(head.env["RUNTIME_TMPDIR"], "head.json")) as f:
            base = json.load(f)["dashboard"]
        node = head.start_node("--num-cpus", "1")
        runtime.init(address=head.address, token=head.token)
        until(lambda: len([n for n in runtime.nodes() if n.get("Alive", True)]) >= 3, 30)
        yield DashboardCluster(head, base, read_only_credential(head.token))
    finally:
        runtime.shutdown()
        if node is not None:
            stop_process(node)
        stop_process(head.proc)
