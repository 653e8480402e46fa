"""Issue 15, item 6: a peer that has not proved the token cannot write the head's log.

A real head process; raw sockets speak the handshake by hand. A ``Hello`` whose peer id
holds a newline and a fake "declared dead" line must not produce that line, the log must
name the socket address, and 300 bad handshakes must write a bounded amount of log.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from runtime.core.wire import protocol as p
from tests.conftest import HeadProcess

from . import raw

pytestmark = pytest.mark.timeout(60)

FORGED = "2026-01-01 00:00:00,000 runtime.head WARNING node n-victim declared dead"


def _bad_handshake(address: str, peer_id: str) -> str:
    """A Hello then a Welcome (only a head may send one: a protocol error); waits until
    the head closes.
    Returns the local address the head saw."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        hello = raw.frame(p.Hello(p.PROTOCOL_VERSION, peer_id, os.urandom(16)))
        sock.sendall(hello + raw.frame(p.Welcome()))
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        name = sock.getsockname()
    return f"{name[0]}:{name[1]}"


def _log_settles(head: HeadProcess, marker: str, timeout: float = 10.0) -> str:
    """The head's log once it holds ``marker`` (logging is asynchronous to our socket)."""
    deadline = time.monotonic() + timeout
    while marker not in (text := head.log()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never reached the log:\n{text[-3000:]}")
        time.sleep(0.02)
    return text


def test_a_newline_in_a_peer_id_does_not_forge_a_log_line(head: HeadProcess) -> None:
    local = _bad_handshake(head.address, "evil\n" + FORGED + "\r\nmore")
    text = _log_settles(head, local)
    assert not any(line.startswith(FORGED) for line in text.splitlines()), text
    line = next(line for line in text.splitlines() if local in line)
    assert "evil\\n" in line, line  # escaped, on the line that names the socket address


def test_300_bad_handshakes_write_a_bounded_amount_of_log(head: HeadProcess) -> None:
    before = len(head.log())
    long_id = "A" * 3500  # as long as the handshake frame allows
    for _ in range(300):
        _bad_handshake(head.address, long_id)
    last = _bad_handshake(head.address, "ok")
    time.sleep(0.5)  # nothing to await: we are checking that lines were NOT written
    grown = len(head.log()) - before
    assert grown < 16 * 1024, f"{grown} bytes of log for 301 bad handshakes"
    assert head.proc.poll() is None
    del last
