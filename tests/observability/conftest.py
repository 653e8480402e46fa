"""Helpers of the observability tests: the CLI run as a subprocess against this driver's mesh."""

from __future__ import annotations

import os
import subprocess
import sys

from runtime.core.api import session as _api


def cli_argv(*args: str) -> list[str]:
    """``python -m runtime --address HEAD --token-file TOKEN ARGS`` for this driver's mesh."""
    session = _api._session
    assert session is not None and session.mesh is not None, "needs a local mesh"
    mesh = session.mesh
    token_file = os.path.join(mesh.state_dir, "token")
    return [sys.executable, "-m", "runtime", "--address", mesh.head_address,
            "--token-file", token_file, *args]  # fmt: skip


def run_cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end (bounded); fails the test when it exits with an error."""
    out = subprocess.run(
        cli_argv(*args),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    assert out.returncode == 0, f"{args} exited {out.returncode}: {out.stderr}"
    return out
