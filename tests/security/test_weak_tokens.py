"""Issue 15, item 4 (part): a cluster token shorter than 16 bytes is refused everywhere it
is given, with a message that says how to make a good one (a short token can be guessed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from tests.conftest import HeadProcess

pytestmark = pytest.mark.timeout(60)

HOW = "secrets.token_hex(32)"


@pytest.mark.parametrize("token", [b"ab", "abcd", "0011", b"x" * 15])
def test_init_refuses_a_short_token(head: HeadProcess, token: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"at least 16 random bytes.*token_hex"):
        runtime.init(address=head.address, token=token)
    assert not runtime.is_initialized()


def test_a_node_and_the_cli_refuse_a_short_token_file(head: HeadProcess, tmp_path: Path) -> None:
    weak = tmp_path / "weak"
    weak.write_text("abcd")  # two bytes of hex
    node = subprocess.run(
        [sys.executable, "-m", "runtime.node", "--address", head.address,
         "--token-file", str(weak), "--num-cpus", "1"],
        env=head.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert node.returncode == 2 and HOW in node.stderr and "Traceback" not in node.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "runtime", "--address", head.address,
         "--token-file", str(weak), "status"],
        env=head.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert cli.returncode == 2 and HOW in cli.stderr and "Traceback" not in cli.stderr


def test_a_short_token_in_the_environment_is_refused(
    head: HeadProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_AUTH_TOKEN", "pw")
    with pytest.raises(ValueError, match="RUNTIME_AUTH_TOKEN"):
        runtime.init(address=head.address)
    assert os.environ["RUNTIME_AUTH_TOKEN"] == "pw"


def test_a_full_length_token_still_joins(head: HeadProcess) -> None:
    runtime.init(address=head.address, token=head.token)
    try:
        assert runtime.is_initialized()
    finally:
        runtime.shutdown()
