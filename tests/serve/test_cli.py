"""The command line: deploy a config file, status, shutdown, and run (against a real head)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import HeadProcess, stop_process

from .conftest import http_json

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(head: HeadProcess, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "runtime.serve", *args],
        env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_deploy_a_config_then_status_then_shutdown(head: HeadProcess, tmp_path: object) -> None:
    config = os.path.join(str(tmp_path), "serve.yaml")
    with open(config, "w") as f:
        f.write(
            "http_options: {host: 127.0.0.1, port: 0}\n"
            "applications:\n"
            "  - name: greet\n"
            "    route_prefix: /greet\n"
            "    import_path: tests.serve.cli_app:app\n"
            "    deployments:\n"
            "      - name: Greeter\n"
            "        num_replicas: 2\n"
            "        user_config: {greeting: hi}\n"
            "  - name: built\n"
            "    route_prefix: /built\n"
            "    import_path: tests.serve.cli_app:build\n"
            "    args: {replicas: 1}\n"
        )
    assert "deployed 'greet'" in cli(head, "deploy", config)
    deadline = time.monotonic() + 60
    while True:
        st = json.loads(cli(head, "status"))
        apps = st["applications"]
        if all(apps.get(a, {}).get("status") == "RUNNING" for a in ("greet", "built")):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    assert apps["greet"]["deployments"]["Greeter"]["replica_states"] == {"RUNNING": 2}
    base = f"http://127.0.0.1:{st['http']['port']}"
    assert http_json(f"{base}/greet") == {"greeting": "hi"}
    assert http_json(f"{base}/built") == {"greeting": "hello"}
    assert "shut down" in cli(head, "shutdown")
    assert json.loads(cli(head, "status"))["applications"] == {}


def test_run_serves_until_interrupted(head: HeadProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve", "run", "tests.serve.cli_app:app", "--port", "0",
         "--route-prefix", "/run"],
        env=head.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving"), line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" on ")[1].strip()
        assert http_json(url) == {"greeting": "hello"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert json.loads(cli(head, "status"))["applications"] == {}


def test_a_bad_import_path_is_a_clear_error(head: HeadProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "runtime.serve", "run", "tests.serve.cli_app:nothing"],
        env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "has no attribute 'nothing'" in out.stderr
