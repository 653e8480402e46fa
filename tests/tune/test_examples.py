"""The Tune examples run end to end (each starts its own local mesh in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(name: str, tmp_path: object) -> str:
    env = dict(os.environ, TUNE_RESULTS_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.timeout(120)
def test_tune_quadratic_example(tmp_path: object) -> None:
    out = _run("tune_quadratic.py", tmp_path)
    assert re.search(r"30 trials, \d+ stopped early by ASHA", out)
    loss = float(re.search(r"loss=([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert loss < 5.0


@pytest.mark.timeout(120)
def test_tune_digits_example(tmp_path: object) -> None:
    out = _run("tune_digits.py", tmp_path)
    accuracy = float(re.search(r"best accuracy ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.9
    assert os.path.isdir(os.path.join(str(tmp_path), "tune_digits"))
