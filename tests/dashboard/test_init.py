"""``runtime.init(include_dashboard=True, dashboard_port=N)``, Ray's options: the local mesh
init() starts serves its dashboard there (its head's), with the link written to the session
directory; ``include_dashboard=False`` starts none, and bad values are refused."""

from __future__ import annotations

import json
import os
import socket
import warnings

import pytest

import runtime
from tests.conftest import until

from .conftest import http_get

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _link(session_dir: str) -> dict[str, str]:
    path = os.path.join(session_dir, "dashboard.json")
    until(lambda: os.path.exists(path), 30)
    with open(path, encoding="utf-8") as f:
        link: dict[str, str] = json.load(f)
    return link


def test_init_with_a_dashboard_port_serves_the_local_meshs_dashboard_there() -> None:
    port = _free_port()
    info = runtime.init(num_cpus=1, dashboard_port=port)
    try:
        link = _link(info["session_dir"])
        assert link["address"] == f"http://127.0.0.1:{port}"
        assert link["url"].startswith(f"http://127.0.0.1:{port}/?token=")
        token = link["url"].split("token=")[1]
        status, body = http_get(f"{link['address']}/api/nodes?token={token}")
        assert status == 200
        assert len(json.loads(body)) >= 2  # the head and its node (and this driver)
        assert http_get(f"{link['address']}/api/nodes")[0] == 401  # never without it
    finally:
        runtime.shutdown()
    with pytest.raises(OSError):  # gone with the mesh
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_include_dashboard_true_with_port_zero_takes_a_free_port() -> None:
    info = runtime.init(num_cpus=1, include_dashboard=True, dashboard_port=0)
    try:
        link = _link(info["session_dir"])
        status, page = http_get(link["url"])
        assert status == 200 and b"runtime cluster" in page
    finally:
        runtime.shutdown()


def test_include_dashboard_false_starts_none_and_says_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = runtime.init(num_cpus=1, include_dashboard=False, dashboard_port=_free_port())
    try:
        assert not os.path.exists(os.path.join(info["session_dir"], "dashboard.json"))
    finally:
        runtime.shutdown()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"dashboard_port": "8265"}, ValueError),
        ({"dashboard_port": 70_000}, ValueError),
        ({"include_dashboard": "yes"}, TypeError),
    ],
)
def test_bad_dashboard_options_are_refused(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        runtime.init(num_cpus=1, **options)
    assert not runtime.is_initialized()
