"""The head's dashboard (``--dashboard-port``): a page and a JSON API over the cluster's
state, behind the cluster token; bad requests get clear errors and the head runs on."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

import runtime
from runtime.core.tools.dashboard import read_only_credential
from tests.conftest import HeadProcess, start_head, stop_process, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dashboard_head(tmp_path: os.PathLike[str]) -> Any:
    h = start_head(tmp_path, "--num-cpus", "1", "--dashboard-port", "0")
    try:
        yield h
    finally:
        stop_process(h.proc)


def _base(h: HeadProcess) -> str:
    with open(os.path.join(h.env["RUNTIME_TMPDIR"], "head.json")) as f:
        return str(json.load(f)["dashboard"])


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_page_and_the_api_show_the_cluster(dashboard_head: HeadProcess) -> None:
    h = dashboard_head
    base, token = _base(h), read_only_credential(h.token)
    assert f"dashboard: {base}/?token={token}" in h.log()
    assert h.token.hex() not in h.log()
    status, page = _get(f"{base}/?token={token}")
    assert status == 200 and b"<title>runtime dashboard</title>" in page

    runtime.init(address=h.address, token=h.token)
    try:

        @runtime.remote
        class Shown:
            def ping(self) -> int:
                return 1

        a = Shown.options(name="on-the-dashboard").remote()
        runtime.get(a.ping.remote())
        until(lambda: _get(f"{base}/api/summary?token={token}")[0] == 200)
        _, raw = _get(f"{base}/api/summary", Authorization=f"Bearer {token}")
        summary = json.loads(raw)
        # The head, and the node process that offers its CPU (the head hosts no user code).
        assert summary["address"] == h.address and summary["nodes"] == 2
        assert summary["resources"]["CPU"]["total"] == 1.0 and summary["actors"]["ALIVE"] == 1
        _, raw = _get(f"{base}/api/actors?token={token}")
        assert [r["name"] for r in json.loads(raw)] == ["on-the-dashboard"]
        _, raw = _get(f"{base}/api/nodes?token={token}")
        assert any(not n["is_driver"] for n in json.loads(raw))
        for what in ("tasks", "objects", "placement_groups"):
            status, raw = _get(f"{base}/api/{what}?token={token}")
            assert status == 200 and isinstance(json.loads(raw), list)
        runtime.kill(a)
    finally:
        runtime.shutdown()


def test_no_token_wrong_token_and_bad_requests(dashboard_head: HeadProcess) -> None:
    base, token = _base(dashboard_head), dashboard_head.token.hex()
    assert _get(f"{base}/api/nodes")[0] == 401
    assert _get(f"{base}/api/nodes?token={'0' * len(token)}")[0] == 401
    assert _get(f"{base}/api/nodes", Authorization="Bearer nope")[0] == 401
    assert _get(f"{base}/api/secrets?token={token}")[0] == 404
    host, port = base.removeprefix("http://").rsplit(":", 1)
    too_long = b"GET / HTTP/1.1\r\n" + b"x" * 70000
    for raw in (b"garbage\r\n\r\n", b"POST / HTTP/1.1\r\n\r\n", too_long):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(raw)  # not half-closed: aiohttp, as most servers, drops a client at EOF
            answer = s.recv(200)
        assert answer.split(b" ")[1] in (b"400", b"405"), answer
    assert _get(f"{base}/api/summary?token={token}")[0] == 200  # the head runs on
    assert dashboard_head.proc.poll() is None
