"""A raw mesh client for the attack tests: frames, reads and the handshake by hand."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from types import TracebackType

from runtime.core.wire import protocol as p
from runtime.core.wire.integrity import SEAL_MARK, SEAL_MARK_BIG, SEAL_SIZE, Seals, derive_keys

PREFIX = struct.Struct(">II")


def frame(msg: p._Msg, raw: bytes = b"") -> bytes:
    """One frame holding ``msg`` (and ``raw`` as its buffers)."""
    header = p.encode(msg)
    return PREFIX.pack(4 + len(header) + len(raw), len(header)) + header + raw


def _exactly(sock: socket.socket | Sealed, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the head")
        out += chunk
    return out


def recv(sock: socket.socket | Sealed) -> p.Message:
    """The next message on ``sock`` (ConnectionError once the head closes it); seal frames
    are checked on a :class:`Sealed` socket, skipped on a plain one."""
    while True:
        body_len, header_len = PREFIX.unpack(_exactly(sock, 8))
        body = _exactly(sock, body_len - 4)
        if header_len >= SEAL_MARK_BIG:
            if isinstance(sock, Sealed):
                got, sock.got = sock.got, []
                size = sum(len(g) for g in got)
                if not sock.rx.check(got, size, header_len, body):
                    raise AssertionError("the head's seal did not check")
            continue
        if isinstance(sock, Sealed):
            sock.got.append(PREFIX.pack(body_len, header_len) + body)
        return p.decode(body[:header_len])


class Sealed:
    """A socket past a handshake that proved the token: ``sendall`` seals each write as the
    runtime does (so its frames are read); ``send_unsealed`` does not."""

    def __init__(self, sock: socket.socket, send_key: bytes, recv_key: bytes) -> None:
        self.sock = sock
        self.tx = Seals(send_key)
        self.rx = Seals(recv_key)
        #: The frames read since the head's last seal.
        self.got: list[bytes] = []

    def seal(self, data: bytes) -> bytes:
        """``data`` (whole frames) followed by the seal that covers them."""
        return data + self.tx.seal((data,))

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(self.seal(data))

    def send_unsealed(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Sealed:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _mac(secret: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, label + b"".join(parts), hashlib.sha256).digest()


def dial(
    address: str, secret: bytes, peer_id: str = "client"
) -> tuple[socket.socket, p.Message, bytes, p.Challenge]:
    """Dial ``address`` proving ``secret``: (socket, verdict, our nonce, the challenge)."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    try:
        nonce = os.urandom(16)
        sock.sendall(frame(p.Hello(p.PROTOCOL_VERSION, peer_id, nonce)))
        challenge = recv(sock)
        assert isinstance(challenge, p.Challenge), challenge
        sock.sendall(frame(p.Proof(_mac(secret, b"C", challenge.nonce, nonce, peer_id.encode()))))
        return sock, recv(sock), nonce, challenge
    except BaseException:
        sock.close()
        raise


def handshake(address: str, secret: bytes, peer_id: str = "client") -> p.Message:
    """Dial ``address`` proving ``secret`` as the cluster token; the head's verdict."""
    sock, verdict, _, _ = dial(address, secret, peer_id)
    sock.close()
    return verdict


def session(address: str, token: bytes, peer_id: str = "client") -> Sealed:
    """A connection to ``address`` past the handshake (the head's proof checked too)."""
    sock, verdict, nonce, challenge = dial(address, token, peer_id)
    expect = _mac(token, b"S", nonce, challenge.nonce, challenge.peer_id.encode())
    if not (isinstance(verdict, p.Welcome) and hmac.compare_digest(expect, verdict.mac)):
        sock.close()
        raise AssertionError(f"the head did not welcome us: {verdict}")
    keys = derive_keys(token, nonce, challenge.nonce, peer_id, challenge.peer_id)
    return Sealed(sock, *keys)


__all__ = [
    "PREFIX",
    "SEAL_MARK",
    "SEAL_SIZE",
    "Sealed",
    "dial",
    "frame",
    "handshake",
    "recv",
    "session",
]
