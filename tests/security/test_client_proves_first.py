"""Issue 15, item 4: the dialer proves first, so connecting gives nothing to test token
guesses against offline; the head proves itself in its Welcome (mutual authentication)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import pytest

import runtime
from runtime.core.wire import protocol as p
from runtime.exceptions import AuthenticationError
from tests.conftest import HeadProcess

from . import raw

pytestmark = pytest.mark.timeout(60)


def test_the_heads_challenge_carries_nothing_to_guess_against(head: HeadProcess) -> None:
    host, _, port = head.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw.frame(p.Hello(p.PROTOCOL_VERSION, "guesser", os.urandom(16))))
        challenge = raw.recv(sock)
    assert isinstance(challenge, p.Challenge)
    assert challenge.mac == b""  # before: HMAC(token, nonces, id), checkable offline


def test_a_fake_head_without_the_token_is_caught_by_its_welcome() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got_proof = threading.Event()

    def fake_head() -> None:
        conn, _ = server.accept()
        with conn:
            hello = raw.recv(conn)
            assert isinstance(hello, p.Hello)
            conn.sendall(raw.frame(p.Challenge("fake-head", os.urandom(16))))
            if isinstance(raw.recv(conn), p.Proof):
                got_proof.set()
            conn.sendall(raw.frame(p.Welcome(os.urandom(32))))  # a proof it cannot make
            with contextlib.suppress(OSError):
                conn.recv(1)

    t = threading.Thread(target=fake_head, daemon=True)
    t.start()
    try:
        with pytest.raises(AuthenticationError, match="does not hold the cluster token"):
            runtime.init(address=f"127.0.0.1:{port}", token=os.urandom(32))
        assert not runtime.is_initialized()
        assert got_proof.is_set()
    finally:
        server.close()
        t.join(10)
