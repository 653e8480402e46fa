"""A runtime.init() that fails after it started a local mesh stops that mesh: no node process
outlives the failed call (before, they lived on until the driver exited).

Each case runs in a driver process of its own, which reports which of its mesh's processes
are still running right after init() raised (its children die with it anyway).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

DRIVER = r"""
import json, os, signal, sys
import runtime
from runtime.core.process import launcher

started = []
original = launcher.start_local_mesh

def start_and_record(*args, **kwargs):
    mesh = original(*args, **kwargs)
    started.append(mesh)
    if sys.argv[1] == "interrupt" and len(started) == 1:  # Ctrl-C while the nodes start
        os.kill(os.getpid(), signal.SIGINT)
    return mesh

launcher.start_local_mesh = start_and_record
try:
    runtime.init(num_cpus=2)
    error = None
except BaseException as exc:
    error = type(exc).__name__
procs = [p for mesh in started for p in mesh.procs]
report = {
    "error": error,
    "pids": [p.pid for p in procs],
    "running": [p.pid for p in procs if p.poll() is None],
    "session_dirs": [mesh.state_dir for mesh in started if os.path.exists(mesh.state_dir)],
    "initialized": runtime.is_initialized(),
}
if sys.argv[1] == "interrupt":  # and this process can start a mesh again
    runtime.init(num_cpus=1)
    report["again"] = runtime.get(runtime.put(7))
    runtime.shutdown()
print(json.dumps(report))
"""


def _run(case: str, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, case],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_bad_option_checked_after_the_mesh_started_leaves_no_process() -> None:
    # Half a TLS configuration: the driver's own connection refuses it, after the mesh started.
    report = _run("late-check", RUNTIME_TLS_CERT="/nonexistent/cert.pem")
    assert report["error"] == "ValueError"
    assert len(report["pids"]) == 3  # type: ignore[arg-type]  # the head and two nodes
    assert report["running"] == []
    assert report["session_dirs"] == []
    assert report["initialized"] is False


def test_ctrl_c_while_the_nodes_start_leaves_no_process() -> None:
    report = _run("interrupt")
    assert report["error"] == "KeyboardInterrupt"
    assert len(report["pids"]) == 3  # type: ignore[arg-type]
    assert report["running"] == []
    assert report["session_dirs"] == []
    assert report["initialized"] is False  # its driver's worker is closed too
    assert report["again"] == 7
