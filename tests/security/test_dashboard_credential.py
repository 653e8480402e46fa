"""Issue 15, item 5 (part): the dashboard URL never carries the cluster token, its own
read-only credential cannot join the mesh, and a bad IPv6 request target answers 400.

A real head with ``--dashboard-port 0``; HTTP and the mesh handshake over raw sockets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.core.wire import protocol as p
from tests.conftest import HeadProcess, start_head, stop_process

from . import raw

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dash_head(tmp_path: Path) -> Iterator[HeadProcess]:
    h = start_head(tmp_path, "--num-cpus", "0", "--dashboard-port", "0")
    try:
        yield h
    finally:
        stop_process(h.proc)


def _printed_url(h: HeadProcess) -> str:
    with open(os.path.join(h.env["RUNTIME_TMPDIR"], "head.json")) as f:
        base = json.load(f)["dashboard"]
    deadline_text = h.log()
    m = re.search(rf"dashboard: ({re.escape(base)}/\?token=([0-9a-f]+))", deadline_text)
    assert m, deadline_text
    return m.group(1)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_printed_dashboard_url_does_not_hold_the_cluster_token(
    dash_head: HeadProcess,
) -> None:
    url = _printed_url(dash_head)
    assert dash_head.token.hex() not in dash_head.log()
    assert _get(url) == 200
    assert _get(url.replace("/?", "/api/summary?")) == 200


def test_the_dashboard_credential_cannot_join_the_mesh(dash_head: HeadProcess) -> None:
    credential = _printed_url(dash_head).rpartition("=")[2]
    for secret in (bytes.fromhex(credential), credential.encode()):
        verdict = raw.handshake(dash_head.address, secret)
        assert isinstance(verdict, p.Refused), verdict
    assert isinstance(raw.handshake(dash_head.address, dash_head.token), p.Welcome)


def test_a_bad_ipv6_request_target_answers_400_without_a_traceback(
    dash_head: HeadProcess,
) -> None:
    base = _printed_url(dash_head).split("/?")[0]
    host, _, port = base.removeprefix("http://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET //[::1/api/nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert "Traceback" not in dash_head.log()


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_dashboard_clients_cannot_hold_the_heads_descriptors(
    dash_head: HeadProcess,
) -> None:
    url = _printed_url(dash_head)
    host, _, port = url.split("/?")[0].removeprefix("http://").rpartition(":")
    before = _open_fds(dash_head.proc.pid)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
    try:
        for s in idle:
            s.sendall(b"GET / HTTP/1.1\r\n")  # and never the end of the request
        status = _get(url)  # held ones are at the cap: this one may be refused, never hang
        assert status in (200, 503)
        held = _open_fds(dash_head.proc.pid) - before
        assert held <= 64 + 8, f"the head holds {held} more descriptors for 200 slow clients"
        assert isinstance(raw.handshake(dash_head.address, dash_head.token), p.Welcome)
    finally:
        for s in idle:
            s.close()
