"""Failure detection: nodes prove they are alive to the head on a path of their own.

Each node runs a :class:`HeartbeatSender` thread with its own blocking, authenticated
socket to the head, so neither user code on the node's threads nor a blocked event loop
keeps the heartbeats from going out. The head's :class:`FailureDetector` marks a node
*suspect* when it has been silent for ``suspect_after`` seconds and declares it *dead*
after ``dead_after``: its id is retired for good, and a node that learns it was evicted
rejoins under a new id.

Timeouts come from the environment, so tests (and their child processes) can shorten them:
``RUNTIME_HEARTBEAT_INTERVAL_S`` (default 1: a beat costs both ends a wake-up, and a
hundred processes on one host beat at once), ``RUNTIME_SUSPECT_AFTER_S`` (default 3)
and ``RUNTIME_DEAD_AFTER_S`` (default 10).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..common.exceptions import AuthenticationError, ProtocolError
from . import protocol as p
from .admission import make_ticket
from .integrity import Seals, derive_keys
from .tls import TlsConfig

log = logging.getLogger("runtime.heartbeat")

_PREFIX = struct.Struct(">II")


@dataclass(frozen=True)
class DetectorConfig:
    """How often nodes beat, and when the head suspects them and declares them dead."""

    interval: float = 1.0
    suspect_after: float = 3.0
    dead_after: float = 10.0

    @classmethod
    def from_env(cls) -> DetectorConfig:
        def num(name: str, default: float) -> float:
            value = os.environ.get(name)
            return float(value) if value else default

        return cls(
            num("RUNTIME_HEARTBEAT_INTERVAL_S", cls.interval),
            num("RUNTIME_SUSPECT_AFTER_S", cls.suspect_after),
            num("RUNTIME_DEAD_AFTER_S", cls.dead_after),
        )


class FailureDetector:
    """The head's record of when each node was last heard from (plain state, no I/O).

    Silence is counted on the head's own clock, which stops while the head cannot listen:
    ``deafened(s)`` takes out the seconds its loop was stalled (starved of CPU, paused, or
    busy), during which beats may have been sent and not read, or not sent because the
    whole machine stalled with it. A member is never judged on time the head itself was
    not there; one that really stopped is declared dead ``dead_after`` seconds of the
    head's listening after its last beat (the bound, plus the head's own stalls).
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        #: node id -> the head's clock (``now - deaf``) at its last beat.
        self.last_seen: dict[str, float] = {}
        self.suspects: set[str] = set()
        #: Seconds the head could not listen, in all (taken out of everyone's silence).
        self.deaf = 0.0

    def deafened(self, seconds: float) -> None:
        """The head's loop could not run for ``seconds``: they count against no one."""
        if seconds > 0:
            self.deaf += seconds

    def silence(self, node_id: str, now: float) -> float | None:
        """How long ``node_id`` has been silent, on the head's clock (None: not watched)."""
        seen = self.last_seen.get(node_id)
        return None if seen is None else max(0.0, now - self.deaf - seen)

    def watch(self, node_id: str, now: float) -> None:
        self.last_seen[node_id] = now - self.deaf

    def forget(self, node_id: str) -> None:
        self.last_seen.pop(node_id, None)
        self.suspects.discard(node_id)

    def beat(self, node_id: str, now: float) -> bool:
        """A heartbeat; False when the node is not (or no longer) watched."""
        if node_id not in self.last_seen:
            return False
        self.last_seen[node_id] = now - self.deaf
        if node_id in self.suspects:
            self.suspects.discard(node_id)
            log.info("node %s is no longer suspect", node_id)
        return True

    def check(self, now: float) -> list[str]:
        """Update the suspects; return the nodes to declare dead now."""
        dead = []
        clock = now - self.deaf
        suspect_after, dead_after = self.config.suspect_after, self.config.dead_after
        for node_id, seen in self.last_seen.items():
            silent = clock - seen
            if silent >= dead_after:
                dead.append(node_id)
            elif silent >= suspect_after and node_id not in self.suspects:
                self.suspects.add(node_id)
                log.warning("node %s is suspect: silent for %.1f s", node_id, silent)
        for node_id in dead:
            self.forget(node_id)
        return dead


def _mac(token: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, label + b"".join(parts), hashlib.sha256).digest()


def _send(sock: socket.socket, msg: p._Msg) -> None:
    header = p.encode(msg)
    sock.sendall(_PREFIX.pack(4 + len(header), len(header)) + header)


def _recv(sock: socket.socket) -> p.Message:
    prefix = _recv_exact(sock, p.PREFIX_SIZE)
    body_len, header_len = _PREFIX.unpack(prefix)
    if body_len > 4096 or header_len + 4 != body_len:
        raise ProtocolError("the head sent a malformed handshake frame")
    return p.decode(_recv_exact(sock, header_len), handshake=True)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the head closed the connection")
        data += chunk
    return data


class Channel:
    """A blocking socket to the head that has passed the handshake; ``send`` seals each
    frame (:mod:`.integrity`) unless TLS protects the socket."""

    def __init__(self, sock: socket.socket, seals: Seals | None) -> None:
        self.sock = sock
        self._seals = seals

    def send(self, msg: p._Msg) -> None:
        header = p.encode(msg)
        data = _PREFIX.pack(4 + len(header), len(header)) + header
        if self._seals is not None:
            data += self._seals.seal((data,))
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def open_channel(
    address: str, token: bytes, local_id: str, timeout: float, tls: TlsConfig | None = None
) -> Channel:
    """A blocking channel to ``address`` that has passed the mutual HMAC handshake."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    if tls is not None:
        sock = tls.client_context().wrap_socket(sock)
    try:
        nonce = os.urandom(16)
        ticket = make_ticket(token, nonce, local_id)
        _send(sock, p.Hello(p.PROTOCOL_VERSION, local_id, nonce, ticket))
        challenge = _recv(sock)
        if not isinstance(challenge, p.Challenge):
            raise AuthenticationError(f"the head answered {type(challenge).__name__}")
        _send(sock, p.Proof(_mac(token, b"C", challenge.nonce, nonce, local_id.encode())))
        welcome = _recv(sock)
        if not isinstance(welcome, p.Welcome):
            raise AuthenticationError(f"the head refused the heartbeat channel: {welcome}")
        expect = _mac(token, b"S", nonce, challenge.nonce, challenge.peer_id.encode())
        if not hmac.compare_digest(expect, welcome.mac):  # the head proves itself last
            raise AuthenticationError("the head does not hold the cluster token")
        if tls is not None:
            return Channel(sock, None)
        send_key, _ = derive_keys(token, nonce, challenge.nonce, local_id, challenge.peer_id)
        return Channel(sock, Seals(send_key))
    except BaseException:
        sock.close()
        raise


class HeartbeatSender(threading.Thread):
    """Sends ``Heartbeat(node_id)`` to the head every ``interval`` seconds until stopped."""

    def __init__(
        self,
        node_id: str,
        head_address: str,
        token: bytes,
        interval: float,
        *,
        on_refused: Callable[[], None] | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        super().__init__(name="runtime-heartbeat", daemon=True)
        self.node_id = node_id
        self.head_address = head_address
        self.token = token
        self.interval = interval
        self.on_refused = on_refused
        self.tls = tls
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        seq = 0
        sock: Channel | None = None
        while not self._stop_event.is_set():
            try:
                if sock is None:
                    sock = open_channel(
                        self.head_address,
                        self.token,
                        f"{self.node_id}#hb",
                        max(1.0, self.interval),
                        self.tls,
                    )
                seq += 1
                sock.send(p.Heartbeat(self.node_id, seq))
            except AuthenticationError:
                if self.on_refused is not None:
                    self.on_refused()
                return
            except (OSError, ProtocolError) as exc:
                log.debug("heartbeat to %s failed: %s", self.head_address, exc)
                if sock is not None:
                    sock.close()
                    sock = None
            self._stop_event.wait(self.interval)
        if sock is not None:
            sock.close()


def now() -> float:
    return time.monotonic()
