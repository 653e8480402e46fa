"""Issue 15, item 2 (part): connections that have not proved the token cost the head little
memory (2,000 of them once grew it by 470 MB: a 256 KiB buffer each before the handshake).

A real head; 600 idle connections from four loopback addresses (under the per-host cap of
connections waiting in the handshake, so none is pushed out). Token holders still get in.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import runtime
from tests.conftest import HeadProcess

pytestmark = pytest.mark.timeout(60)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_600_idle_unauthenticated_connections_cost_little_memory(head: HeadProcess) -> None:
    host, _, port = head.address.rpartition(":")
    before = _rss_kib(head.proc.pid)
    held: list[socket.socket] = []
    try:
        for i in range(600):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i % 4}", 0))
            s.connect((host, int(port)))
            held.append(s)
        # The head has accepted all of them once a token holder's handshake, queued
        # behind them, completes.
        runtime.init(address=head.address, token=head.token)
        try:
            assert runtime.is_initialized()
        finally:
            runtime.shutdown()
        grown_mib = (_rss_kib(head.proc.pid) - before) / 1024
        assert grown_mib < 48, f"600 idle connections grew the head by {grown_mib:.0f} MiB"
    finally:
        for s in held:
            s.close()
