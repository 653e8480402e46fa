"""The data examples run to the end and print what they computed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, tmp_path: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.timeout(120)
def test_etl_example_aggregates_what_it_generated(tmp_path: Path) -> None:
    stdout = _run("data_etl.py", tmp_path)
    assert "sum(revenue)" in stdout and "Aggregate" in stdout


@pytest.mark.timeout(120)
def test_batch_inference_example_labels_every_row(tmp_path: Path) -> None:
    stdout = _run("data_batch_inference.py", tmp_path)
    assert "count()" in stdout and "MapBatches(Classifier)" in stdout


@pytest.mark.timeout(120)
def test_tensor_example_learns_the_weights_from_torch_batches(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    stdout = _run("data_tensors.py", tmp_path)
    assert "fixed_shape_tensor" in stdout
    weights = stdout.split("learned weights:")[1].strip()
    assert weights.startswith("[") and "epoch 4" in stdout
    learned = [float(v) for v in weights.strip("[]").split(",")]
    assert all(abs(a - b) < 0.5 for a, b in zip(learned, range(1, 7), strict=True))
