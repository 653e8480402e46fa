"""The driver's side of the client relay: every connection of a remote driver goes through
one port of the head (:mod:`.relay`), which it dials after proving the cluster token.

:func:`open_tunnel` registers with the relay (which tells the driver the head's mesh address
and the address members will reach the driver at); the worker then dials members with
:meth:`RelayTunnel.dial` and takes the connections members open to it from
:meth:`RelayTunnel.serve`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from ..common.exceptions import AuthenticationError
from ..process.tunnel import Accept
from . import preamble

log = logging.getLogger("runtime.client")

#: The address schemes that mean "through the head's client port".
SCHEMES = ("runtime://", "ray://")


def is_client_address(address: str | None) -> bool:
    return address is not None and address.startswith(SCHEMES)


def relay_address(address: str) -> tuple[str, int]:
    """``(host, port)`` from ``runtime://HOST:PORT`` (or ``ray://``); ValueError if malformed."""
    rest = address.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a remote driver's address is runtime://HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


class RelayTunnel:
    """A remote driver's registration with the relay, and its way to open connections."""

    def __init__(self, host: str, port: int, token: bytes) -> None:
        self.relay = (host, port)
        self.token = token
        self.head_address = ""
        self._address = ""
        self._sid = ""
        self._control: socket.socket | None = None
        self._accept: Accept | None = None
        self._waiting: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str:
        return self._address

    async def register(self) -> None:
        """Announce this driver; learn the head's address and this driver's relayed one."""
        sock, words = await self._request("REGISTER")
        if len(words) != 4:
            sock.close()
            raise ConnectionError(f"the relay at {self._where()} answered {words!r}")
        self._sid, self._address, self.head_address = words[1:]
        self._control = sock
        self._spawn(self._listen(sock))

    def serve(self, accept: Accept) -> None:
        self._accept = accept
        waiting, self._waiting = self._waiting, []
        for n in waiting:
            self._spawn(self._take(n))

    async def dial(self, host: str, port: int) -> socket.socket:
        sock, _ = await self._request(f"DIAL {host}:{port}")
        return sock

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        for task in list(self._tasks):
            task.cancel()

    # --- the relay's control line ---------------------------------------------------------

    async def _listen(self, sock: socket.socket) -> None:
        """``ACCEPT N`` lines: a member opened a connection to this driver; take it."""
        loop = asyncio.get_running_loop()
        buf = b""
        while True:
            try:
                data = await loop.sock_recv(sock, 4096)
            except OSError:
                data = b""
            if not data:
                if self._control is not None:
                    log.warning("the client relay at %s closed this driver's line", self._where())
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                verb, _, n = line.decode("ascii", "replace").partition(" ")
                if verb != "ACCEPT" or not n.isdigit():
                    continue
                if self._accept is None:
                    self._waiting.append(int(n))
                else:
                    self._spawn(self._take(int(n)))

    async def _take(self, n: int) -> None:
        try:
            sock, _ = await self._request(f"ACCEPT {self._sid} {n}")
        except (OSError, ConnectionError) as exc:
            log.info("a member's connection through the relay was lost: %s", exc)
            return
        assert self._accept is not None
        await self._accept(sock)

    # --- one request --------------------------------------------------------------------

    async def _request(self, request: str) -> tuple[socket.socket, list[str]]:
        """A new connection to the relay that asked for ``request``; the answer's words."""
        loop = asyncio.get_running_loop()
        host, port = self.relay
        try:
            async with asyncio.timeout(preamble.TIMEOUT_S):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, kind, proto, _, addr = infos[0]
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, addr)
                    greeting = await _read_line(loop, sock)
                    if not greeting.startswith(preamble.GREETING + " "):
                        raise ConnectionError(
                            f"{self._where()} is not a runtime client port (it said "
                            f"{greeting[:60]!r}); a head opens one with --client-port"
                        )
                    nonce = bytes.fromhex(greeting.rsplit(" ", 1)[1])
                    await loop.sock_sendall(sock, preamble.signed(self.token, nonce, request))
                    answer = await _read_line(loop, sock)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise ConnectionError(f"the client relay at {self._where()} did not answer") from None
        words = answer.split()
        if words[:1] == ["OK"]:
            return sock, words
        sock.close()
        reason = answer.removeprefix("ERR ").strip() or "no answer"
        if reason == "wrong cluster token":
            raise AuthenticationError(f"the client relay at {self._where()} refused: {reason}")
        raise ConnectionError(f"the client relay at {self._where()} refused {request}: {reason}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _where(self) -> str:
        return "{}:{}".format(*self.relay)


async def _read_line(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> str:
    """One line, read a byte at a time: what follows it belongs to the relayed connection."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = await loop.sock_recv(sock, 1)
        if not byte:
            raise ConnectionError("the client relay closed the connection")
        line += byte
        if len(line) > preamble.MAX_LINE:
            raise ConnectionError("the client relay sent an overlong line")
    return line.decode("ascii", "replace").rstrip("\n")


async def open_tunnel(address: str, token: bytes) -> RelayTunnel:
    """Register with the relay at ``runtime://HOST:PORT``."""
    host, port = relay_address(address)
    tunnel = RelayTunnel(host, port, token)
    await tunnel.register()
    return tunnel


__all__ = ["SCHEMES", "RelayTunnel", "is_client_address", "open_tunnel", "relay_address"]
