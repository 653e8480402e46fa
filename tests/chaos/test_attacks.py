"""Chaos scenario 9: peers that attack or misbehave, against a real head process.

A thousand idle connections and a peer that sends half a frame and falls silent cost their
own connections (closed by the handshake timeout), never other clients' service. The other
cases of this scenario (a wrong token, a message before the handshake, an oversized frame,
garbage, a bad message after the handshake, a host that keeps failing the token check) are
the security tests of tests/core/test_security.py; frame fuzzing is test_fuzz_frames.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

import runtime
from runtime.core.wire.transport import HANDSHAKE_TIMEOUT

from ..conftest import HeadProcess

pytestmark = pytest.mark.timeout(90)


def _run_driver(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_truncated_frame_then_silence_is_cut_off_by_the_handshake_timeout(head: HeadProcess):
    host, port = head.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=HANDSHAKE_TIMEOUT + 20) as sock:
        sock.sendall(struct.pack(">II", 4 + 100, 100) + os.urandom(10))  # 10 of 104 bytes
        # Meanwhile the head serves everyone else.
        runtime.init(address=head.address, token=head.token)
        try:

            @runtime.remote
            def f():
                return "served"

            assert runtime.get(f.remote(), timeout=30) == "served"
        finally:
            runtime.shutdown()
        # The head closes it (EOF, or a reset) within the timeout; the socket's own timeout
        # raises TimeoutError if it does not.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    assert head.proc.poll() is None


def test_a_thousand_idle_connections_do_not_hurt_other_clients(head: HeadProcess):
    host, port = head.address.rsplit(":", 1)
    idle = []
    try:
        for _ in range(1000):
            s = socket.create_connection((host, int(port)), timeout=10)
            idle.append(s)
        out = _run_driver(
            """
            import runtime
            runtime.init(address="auto")

            @runtime.remote
            def f():
                return "served"

            print(runtime.get(f.remote(), timeout=30))
            runtime.shutdown()
            """,
            head.env,
        )
        assert out.returncode == 0, out.stderr
        assert "served" in out.stdout
    finally:
        for s in idle:
            s.close()
    assert head.proc.poll() is None
