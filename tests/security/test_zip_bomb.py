"""Issue 15, item 9 (part): a job's working_dir package cannot expand without bound.

A real head; the package is submitted with the CLI (``job submit --working-dir``). A file
of zeros compresses ~1000:1; the head must refuse the package before unpacking it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_head, stop_process

pytestmark = pytest.mark.timeout(90)


def test_a_working_dir_that_expands_past_the_cap_is_refused_unpacked(tmp_path: Path) -> None:
    env = {**os.environ, "RUNTIME_MAX_WORKING_DIR_BYTES": str(4 << 20)}
    head = start_head(tmp_path, "--num-cpus", "1", env=env)
    try:
        wd = tmp_path / "wd"
        wd.mkdir()
        with open(wd / "zeros.bin", "wb") as f:
            f.truncate(16 << 20)  # 16 MiB of zeros: a few KiB zipped
        (wd / "main.py").write_text("print('ran')\n")
        out = subprocess.run(
            [sys.executable, "-m", "runtime", "--address", head.address,
             "--token-file", os.path.join(head.state_dir, "token"),
             "job", "submit", "--working-dir", str(wd), "--", "python", "main.py"],
            env=head.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode != 0, out.stdout + out.stderr
        assert "unpacks to" in out.stderr + out.stdout, out.stdout + out.stderr
        assert "ran" not in out.stdout
        packages = Path(head.state_dir) / "jobs" / "_packages"
        unpacked = sum(p.stat().st_size for p in packages.rglob("*") if p.is_file())
        assert unpacked == 0
        assert head.proc.poll() is None
    finally:
        stop_process(head.proc)
