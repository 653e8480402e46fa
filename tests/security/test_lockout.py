"""Issue 15, item 2 (part): a flood from a host without the token does not keep token
holders out. Wrong proofs (enough to trigger the slowdown) and a stream of idle connections
from 127.0.0.1, while 8 token-holding clients handshake from the same address: every one of
them gets in (the slowdown now applies to wrong proofs only, and idle connections are pushed
out before half-way handshakes)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime.core.wire import protocol as p
from tests.conftest import HeadProcess

pytestmark = pytest.mark.timeout(60)

PREFIX = struct.Struct(">II")


def _frame(msg: p._Msg) -> bytes:
    header = p.encode(msg)
    return PREFIX.pack(4 + len(header), len(header)) + header


def _recv(sock: socket.socket) -> p.Message:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the head")
            out += chunk
        return out

    body_len, header_len = PREFIX.unpack(exactly(8))
    return p.decode(exactly(body_len - 4)[:header_len])


def _handshake(address: str, secret: bytes) -> p.Message:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        nonce = os.urandom(16)
        sock.sendall(_frame(p.Hello(p.PROTOCOL_VERSION, "client", nonce)))
        challenge = _recv(sock)
        assert isinstance(challenge, p.Challenge), challenge
        proof = hmac.new(secret, b"C" + challenge.nonce + nonce + b"client", hashlib.sha256)
        sock.sendall(_frame(p.Proof(proof.digest())))
        return _recv(sock)


def test_a_flood_without_the_token_does_not_lock_out_token_holders(head: HeadProcess) -> None:
    wrong = os.urandom(32)
    with ThreadPoolExecutor(25) as pool:  # past the 20 failures that trigger the slowdown
        refusals = list(pool.map(lambda _: _handshake(head.address, wrong), range(25)))
    assert all(isinstance(r, p.Refused) for r in refusals)
    host, _, port = head.address.rpartition(":")
    stop = threading.Event()
    idle: list[socket.socket] = []

    def flood() -> None:  # ~400 idle connections, more than the 256 pending slots
        while not stop.is_set() and len(idle) < 400:
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((host, int(port)), timeout=5))

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(lambda _: _handshake(head.address, head.token), range(8)))
    finally:
        stop.set()
        flooder.join()
        for s in idle:
            s.close()
    assert all(isinstance(v, p.Welcome) for v in verdicts), verdicts
