"""Every example is also a smoke test: it runs to the end and prints what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.timeout(120)
def test_quickstart_runs_and_reports_each_step(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for expected in (
        "squares of 0..9 = [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "3*3 + 4 = 13",
        "counter after 5 increments = 105",
        "sum from a task = 499999500000",
        "re-raised here: TypeError",
        "last = 1000",
    ):
        assert expected in out.stdout, out.stdout


def test_import_runtime_stays_light() -> None:
    code = (
        "import sys, runtime; heavy = ('torch', 'gymnasium', 'optuna', 'pyarrow', 'pandas',"
        " 'aiohttp', 'ray', 'numpy', 'mypy'); print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
