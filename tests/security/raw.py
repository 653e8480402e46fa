"""A raw mesh client for the attack tests: frames, reads and the handshake by hand."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

from runtime.core.wire import protocol as p

PREFIX = struct.Struct(">II")


def frame(msg: p._Msg) -> bytes:
    """One frame holding ``msg`` (no raw payload)."""
    header = p.encode(msg)
    return PREFIX.pack(4 + len(header), len(header)) + header


def recv(sock: socket.socket) -> p.Message:
    """The next message on ``sock`` (ConnectionError once the head closes it)."""

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


def handshake(address: str, secret: bytes, peer_id: str = "client") -> p.Message:
    """Dial ``address`` proving ``secret`` as the cluster token; the head's verdict."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        nonce = os.urandom(16)
        sock.sendall(frame(p.Hello(p.PROTOCOL_VERSION, peer_id, nonce)))
        challenge = recv(sock)
        assert isinstance(challenge, p.Challenge), challenge
        proof = hmac.new(secret, b"C" + challenge.nonce + nonce + peer_id.encode(), hashlib.sha256)
        sock.sendall(frame(p.Proof(proof.digest())))
        return recv(sock)
