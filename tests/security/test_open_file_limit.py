"""Issue 15, item 2 (part): a node raises its soft open-file limit at start, so the common
default of 1,024 descriptors is not what a flood of idle connections has to exhaust."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

from tests.conftest import start_head, stop_process

pytestmark = pytest.mark.timeout(60)


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit")


def test_a_head_started_with_a_soft_limit_of_1024_raises_it(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit is {hard}: nothing to raise to")
    # The head's python is started under a soft limit of 1,024 (its hard limit unchanged).
    wrapper = tmp_path / "python-1024"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, resource, sys\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
        f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    old = sys.executable
    sys.executable = str(wrapper)  # start_head runs sys.executable
    try:
        head = start_head(tmp_path)
    finally:
        sys.executable = old
    try:
        assert _soft_limit(head.proc.pid) > 1024
    finally:
        stop_process(head.proc)
