"""The Serve examples run to the end and print what they did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.timeout(120)
def test_serve_model_batches_over_two_replicas(tmp_path: Path) -> None:
    out = run_example("serve_model.py", tmp_path)
    assert "200 predictions" in out
    assert "served by 2 replicas" in out
    biggest = int(out.rsplit("largest batch ", 1)[1].split()[0])
    assert biggest > 1


@pytest.mark.timeout(120)
def test_serve_pipeline_composes_three_deployments(tmp_path: Path) -> None:
    out = run_example("serve_pipeline.py", tmp_path)
    assert "'label': 'positive'" in out
    assert "'label': 'negative'" in out
    assert "'label': 'neutral'" in out
    assert "handle {'text': 'good good bad', 'score': 1, 'label': 'positive'}" in out
    assert "app RUNNING" in out
