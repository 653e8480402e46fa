"""Issue 15, item 9 (part): a driver stopped with SIGTERM removes its session directory and
the cluster token in it, and its node processes go too; it still dies of SIGTERM.

A real driver process that starts a local mesh, then a real signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_gone

pytestmark = pytest.mark.timeout(60)

DRIVER = """
import sys, runtime
info = runtime.init(num_cpus=1)
print(info["session_dir"], flush=True)
sys.stdin.read()  # until the test is done with us
"""


def _start_driver(tmp_path: Path, code: str) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "RUNTIME_TMPDIR": str(tmp_path / "rt")}
    env.pop("RUNTIME_AUTH_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    session = Path(proc.stdout.readline().strip())
    assert (session / "token").exists(), session
    return proc, session


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def test_sigterm_removes_the_session_dir_and_its_token(tmp_path: Path) -> None:
    import psutil

    proc, session = _start_driver(tmp_path, DRIVER)
    try:
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == -signal.SIGTERM  # still dies of the signal
    finally:
        _reap(proc)
    assert not session.exists(), sorted(p.name for p in session.rglob("*"))
    assert wait_gone(children) == []


def test_a_program_with_its_own_sigterm_handler_keeps_it(tmp_path: Path) -> None:
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('mine', flush=True), sys.exit(3)))\n"
        + DRIVER
    )
    proc, _session = _start_driver(tmp_path, code)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 3
        assert proc.stdout is not None and proc.stdout.read().strip() == "mine"
    finally:
        _reap(proc)


def test_a_session_left_by_a_killed_driver_is_swept_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime

    proc, session = _start_driver(tmp_path, DRIVER)
    try:
        proc.kill()  # SIGKILL: nothing runs to clean up
        proc.wait(20)
    finally:
        _reap(proc)
    assert session.exists()
    kept = tmp_path / "rt" / "session_of_a_head"  # a head's state (no owner file): kept
    kept.mkdir(mode=0o700)
    monkeypatch.setenv("RUNTIME_TMPDIR", str(tmp_path / "rt"))
    runtime.init(num_cpus=1)
    try:
        assert not session.exists()
        assert kept.exists()
    finally:
        runtime.shutdown()
