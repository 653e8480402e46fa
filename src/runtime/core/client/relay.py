"""The head's client relay: one port through which remote drivers reach the whole mesh.

A driver that proved the cluster token may ask it to ``DIAL`` a member (the head's own
address, or any address in the cluster view: the relay is no open proxy), and to
``REGISTER``: the relay then listens on a port of the head's address for that driver (its
address in the mesh) and, for each member that connects there, asks the driver over its
control line to ``ACCEPT`` it on a new relayed connection. Bytes are piped unchanged: the
mesh's handshake and TLS run end to end between the driver and the member.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..wire.logsafe import RateLimitedLog, safe_text
from . import preamble

if TYPE_CHECKING:
    from ..process.worker import Worker

log = logging.getLogger("runtime.client")
_refusals = RateLimitedLog(log)

#: Connections a member opened to a driver that the driver has not taken yet, per driver.
MAX_PENDING: Final = 64
#: Bytes read from one side before they are written to the other (and a stream's buffer).
PIPE_CHUNK: Final = 256 << 10


@dataclass
class _Session:
    """One registered driver: its control line, its listener, members waiting for it."""

    sid: str
    control: asyncio.StreamWriter
    server: asyncio.Server | None = None
    address: str = ""
    pending: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(
        default_factory=dict
    )
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class ClientRelay:
    """Listens on ``host:port`` for drivers; ``members()`` says which addresses it may dial."""

    def __init__(
        self,
        token: bytes,
        *,
        host: str,
        advertise: str,
        head: str,
        members: Callable[[], set[str]],
    ) -> None:
        self.token = token
        #: The head's mesh address, which a registered driver joins through the relay.
        self.head = head
        self.host = host
        #: The host part of the addresses drivers get (where members reach the relay).
        self.advertise = advertise
        self.members = members
        self.sessions: dict[str, _Session] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.address = ""

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, port, backlog=256, limit=PIPE_CHUNK
        )
        bound = self._server.sockets[0].getsockname()
        self.address = f"{bound[0]}:{bound[1]}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            self._end_session(session)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- one connection from a driver -------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # the server's task for this client: cancelled by aclose()
        try:
            _keepalive(writer)
            await self._handle(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:  # fmt: skip
            log.debug("client relay: connection from %s ended: %s", _peer(writer), exc)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = os.urandom(16)
        writer.write(f"{preamble.GREETING} {nonce.hex()}\n".encode())
        async with asyncio.timeout(preamble.TIMEOUT_S):
            line = await reader.readuntil(b"\n")
        if len(line) > preamble.MAX_LINE:
            raise ValueError("request line too long")
        words = preamble.check(self.token, nonce, line.decode("ascii", "replace"))
        if words is None:
            await asyncio.sleep(1.0)  # a wrong proof: slow down whoever guesses
            writer.write(b"ERR wrong cluster token\n")
            _refusals.warning("client relay: %s failed the token check", _peer(writer))
            return
        match words:
            case ["REGISTER"]:
                await self._register(reader, writer)
            case ["DIAL", address]:
                await self._dial(reader, writer, address)
            case ["ACCEPT", sid, number] if number.isdigit():
                await self._accept(reader, writer, sid, int(number))
            case _:
                writer.write(b"ERR malformed request\n")

    async def _dial(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        if address not in self.members():
            writer.write(f"ERR {safe_text(address, 80)} is not a member of this cluster\n".encode())
            return
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(preamble.TIMEOUT_S):
                their_reader, their_writer = await asyncio.open_connection(
                    host, int(port), limit=PIPE_CHUNK
                )
        except (OSError, TimeoutError) as exc:
            writer.write(f"ERR cannot reach {address}: {safe_text(exc, 120)}\n".encode())
            return
        writer.write(b"OK\n")
        await _splice(reader, writer, their_reader, their_writer)

    async def _register(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(os.urandom(8).hex(), writer)

        async def member_connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if len(session.pending) >= MAX_PENDING or writer.is_closing():
                w.close()
                return
            n = next(session.numbers)
            session.pending[n] = (r, w)
            asyncio.get_running_loop().call_later(preamble.TIMEOUT_S, self._expire, session, n)
            writer.write(f"ACCEPT {n}\n".encode())

        session.server = await asyncio.start_server(
            member_connected, self.host, 0, limit=PIPE_CHUNK
        )
        port = session.server.sockets[0].getsockname()[1]
        session.address = f"{self.advertise}:{port}"
        self.sessions[session.sid] = session
        writer.write(f"OK {session.sid} {session.address} {self.head}\n".encode())
        log.info("client relay: a driver from %s is at %s", _peer(writer), session.address)
        try:
            await reader.read()  # the driver says nothing more: until it goes
        finally:
            self._end_session(session)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sid: str, n: int
    ) -> None:
        session = self.sessions.get(sid)
        member = session.pending.pop(n, None) if session is not None else None
        if member is None:
            writer.write(b"ERR no such connection waiting\n")
            return
        writer.write(b"OK\n")
        await _splice(reader, writer, *member)

    def _expire(self, session: _Session, n: int) -> None:
        member = session.pending.pop(n, None)
        if member is not None:
            member[1].close()

    def _end_session(self, session: _Session) -> None:
        if self.sessions.pop(session.sid, None) is None:
            return
        if session.server is not None:
            session.server.close()
        for _, w in session.pending.values():
            w.close()
        session.pending.clear()
        log.info("client relay: the driver at %s left", session.address)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(PIPE_CHUNK):
        writer.write(data)
        await writer.drain()


async def _splice(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    r2: asyncio.StreamReader,
    w2: asyncio.StreamWriter,
) -> None:
    """Pipe both ways until either side ends; then close both."""
    pipes = [asyncio.ensure_future(_pipe(r1, w2)), asyncio.ensure_future(_pipe(r2, w1))]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        w1.close()
        w2.close()


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """A driver that vanished without a word (a laptop closed) is noticed within ~1 minute."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


async def start_relay(worker: Worker, host: str, port: int) -> ClientRelay:
    """The head's relay on ``host:port``, for drivers joining ``worker``'s mesh."""

    def members() -> set[str]:
        return {info.address for info in worker.view.values()} | {worker.address}

    relay = ClientRelay(
        worker.token,
        host=host,
        advertise=worker.address.rpartition(":")[0],
        head=worker.address,
        members=members,
    )
    await relay.start(port)
    return relay


__all__ = ["ClientRelay", "start_relay"]
