"""A node's health endpoints (``--health-port``: ``/healthz``, ``/readyz``) and its drain on
SIGTERM, on real node processes joined to a real head."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import runtime
from runtime.core.api.blocking import current_worker
from runtime.core.tools.health import probe
from tests.conftest import HeadProcess, start_head, stop_process, until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(port: int, path: str) -> int:
    return probe("127.0.0.1", port, path)[0]


@pytest.fixture
def head(tmp_path: Path):
    port = free_port()
    h = start_head(tmp_path, "--num-cpus", "0", "--health-port", str(port))
    h.health_port = port  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        stop_process(h.proc)


def node(head: HeadProcess, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    token = os.path.join(head.state_dir, "token")
    proc = head.start_node("--token-file", token, "--health-port", str(port), *args)
    return proc, port


def test_the_head_is_live_and_ready_and_unknown_paths_are_not_found(head):
    assert probe("127.0.0.1", head.health_port, "/healthz") == (200, "ok: the event loop answers")
    code, body = probe("127.0.0.1", head.health_port, "/readyz")
    assert (code, body) == (200, f"ok: head at {head.address}")
    assert status(head.health_port, "/metrics") == 404


@pytest.mark.timeout(90)
def test_a_host_is_ready_when_every_node_process_joined_and_not_live_when_one_loop_stops(head):
    proc, port = node(head, "--num-cpus", "2", "--procs", "2")
    try:
        until(lambda: status(port, "/readyz") == 200, 60, head.log)
        assert probe("127.0.0.1", port, "/healthz") == (200, "ok: 2 node processes")
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        # A node process whose event loop does not run fails the host's liveness probe.
        children[1].send_signal(signal.SIGSTOP)
        try:
            code, body = probe("127.0.0.1", port, "/healthz", timeout=10)
            assert code == 503 and body.startswith("node process 1: no answer"), body
        finally:
            children[1].send_signal(signal.SIGCONT)
        until(lambda: status(port, "/healthz") == 200, 20)
    finally:
        stop_process(proc)


def slow(marker: str, seconds: float) -> int:
    Path(marker).touch()
    time.sleep(seconds)
    return os.getpid()


def where() -> int:
    return os.getpid()


@pytest.mark.timeout(120)
def test_sigterm_drains_a_node_whose_running_task_finishes_while_new_work_goes_elsewhere(
    head, tmp_path, monkeypatch
):
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", os.path.join(head.state_dir, "token"))
    a, a_port = node(head, "--num-cpus", "1", "--drain-timeout", "60")
    b = None
    runtime.init(address=head.address, log_to_driver=False)
    try:
        until(lambda: status(a_port, "/readyz") == 200, 60, head.log)
        marker = tmp_path / "running"
        ref = runtime.remote(slow).options(max_retries=0).remote(str(marker), 4.0)
        until(marker.exists, 30)
        b, b_port = node(head, "--num-cpus", "1")
        until(lambda: status(b_port, "/readyz") == 200, 60, head.log)
        (a_id,) = [n["NodeID"] for n in runtime.nodes() if n["Pid"] == a.pid]
        started = time.monotonic()
        a.send_signal(signal.SIGTERM)
        until(lambda: status(a_port, "/readyz") == 503, 10)
        assert probe("127.0.0.1", a_port, "/readyz")[1] == "draining: this node is leaving"
        until(lambda: any(n["NodeID"] == a_id and n["Draining"] for n in runtime.nodes()), 10)
        worker = current_worker()  # the driver's own view, from which it places tasks
        until(lambda: a_id in worker.view and worker.view[a_id].draining, 10)
        # New work goes to the other node while the drained one finishes its task.
        fn = runtime.remote(where)
        assert set(runtime.get([fn.remote() for _ in range(4)], timeout=30)) == {b.pid}
        assert a.poll() is None
        # The running task finished where it ran (max_retries=0: it was not run again).
        assert runtime.get(ref, timeout=30) == a.pid
        assert a.wait(30) == 0
        assert time.monotonic() - started < 30  # it left once idle, not at the bound
        until(lambda: all(n["NodeID"] != a_id or not n["Alive"] for n in runtime.nodes()), 30)
    finally:
        runtime.shutdown()
        stop_process(a)
        if b is not None:
            stop_process(b)


@pytest.mark.timeout(90)
def test_a_drain_that_outlasts_its_bound_stops_the_node_anyway(head, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", os.path.join(head.state_dir, "token"))
    a, a_port = node(head, "--num-cpus", "1", "--drain-timeout", "1")
    runtime.init(address=head.address, log_to_driver=False)
    try:
        until(lambda: status(a_port, "/readyz") == 200, 60, head.log)
        marker = tmp_path / "running"
        runtime.remote(slow).options(max_retries=0).remote(str(marker), 120.0)
        until(marker.exists, 30)
        started = time.monotonic()
        a.send_signal(signal.SIGTERM)
        assert a.wait(20) == 0
        assert 1.0 <= time.monotonic() - started < 20
    finally:
        runtime.shutdown()
        stop_process(a)


def test_a_bad_drain_timeout_is_refused(head):
    proc, _ = node(head, "--drain-timeout", "-1")
    assert proc.wait(30) != 0
    assert "drain timeout must be a number of seconds >= 0" in head.log()


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--host", "0.0.0.0"], "give --advertise-address"),
        (["--advertise-address", "10.0.0.1:7000"], "takes a host, not HOST:PORT"),
        (["--advertise-address", "0.0.0.0"], "must be a reachable host name or IP"),
    ],
)
def test_an_address_other_members_could_not_dial_is_refused(args, why, tmp_path):
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    token.chmod(0o600)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.node",
            "--address",
            "127.0.0.1:1",
            "--token-file",
            str(token),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert why in out.stderr


@pytest.mark.timeout(120)
def test_a_host_of_several_processes_drains_them_all_on_sigterm(head, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN_FILE", os.path.join(head.state_dir, "token"))
    host, port = node(head, "--num-cpus", "2", "--procs", "2")  # the default bound, 20 s
    runtime.init(address=head.address, log_to_driver=False)
    try:
        until(lambda: status(port, "/readyz") == 200, 60, head.log)
        marker = tmp_path / "running"
        ref = runtime.remote(slow).options(max_retries=0).remote(str(marker), 3.0)
        until(marker.exists, 30)
        children = {c.pid for c in psutil.Process(host.pid).children()}
        host.send_signal(signal.SIGTERM)
        until(lambda: status(port, "/readyz") != 200, 10)
        assert runtime.get(ref, timeout=30) in children  # finished where it ran, not retried
        assert host.wait(30) == 0
    finally:
        runtime.shutdown()
        stop_process(host)


def test_a_drivers_local_mesh_stops_at_once_with_work_running(tmp_path):
    runtime.init(num_cpus=1)
    try:
        marker = tmp_path / "running"
        runtime.remote(slow).options(max_retries=0).remote(str(marker), 60.0)
        until(marker.exists, 30)
    finally:
        started = time.monotonic()
        runtime.shutdown()
    assert time.monotonic() - started < 4  # no drain: the mesh would wait 5 s, then kill
