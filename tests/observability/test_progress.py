"""Data shows a progress bar per operator while it runs, in a real terminal (a pty): blocks out
of the blocks expected, rows, running tasks; and nothing when its output is not a terminal or
when ``DataContext.enable_progress_bars`` is off."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.timeout(90)

PIPELINE = """
import sys, runtime
from runtime import data
runtime.init(num_cpus=2)
data.DataContext.get_current().enable_progress_bars = {enabled}
ds = data.range(400, override_num_blocks=4).map_batches(lambda b: b).filter(lambda r: True)
rows = ds.random_shuffle(seed=1).map(lambda r: r).take_all()
print("rows", len(rows), file=sys.stdout, flush=True)
runtime.shutdown()
"""


def _env(tmp_path: object) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CI", None)  # bars stay off in CI: this test is about a terminal
    env["RUNTIME_TMPDIR"] = str(tmp_path)
    return env


def run_in_a_terminal(script: str, env: dict[str, str]) -> str:
    """Run ``script`` with its stdout and stderr on a pseudo-terminal; all it wrote."""
    main, child = pty.openpty()
    # A terminal 160 columns wide (a fresh pty is 0 x 0, and tqdm draws nothing in 0 columns).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=child,
            stderr=child,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        os.close(child)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed its side: all is read
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_bar_per_operator_counts_blocks_out_of_those_expected_in_a_terminal(tmp_path):
    pytest.importorskip("tqdm")
    out = run_in_a_terminal(PIPELINE.format(enabled=True), _env(tmp_path))
    assert "rows 400" in out
    fused = "ReadRange->MapBatches(<lambda>)->Filter(<lambda>)"
    assert fused in out and "Map(<lambda>)" in out
    last = {name: out.rsplit(name, 1)[1].split("\n", 1)[0] for name in (fused, "Map(<lambda>)")}
    assert "4/4" in last[fused] and "400 rows" in last[fused], last
    assert "400 rows" in last["Map(<lambda>)"] and "0 running" in last["Map(<lambda>)"], last


def test_no_bar_when_output_is_not_a_terminal_or_bars_are_off(tmp_path):
    env = _env(tmp_path)
    piped = subprocess.run(
        [sys.executable, "-c", PIPELINE.format(enabled=True)],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    assert "rows 400" in piped.stdout and "Map(<lambda>)" not in piped.stderr + piped.stdout
    off = run_in_a_terminal(PIPELINE.format(enabled=False), env)
    assert "rows 400" in off and "Map(<lambda>)" not in off
