"""What a worker needs of a tunnel: how a remote driver (``runtime.init("runtime://HOST:PORT")``)
reaches the mesh through one port of the head instead of dialing and listening itself.

The tunnel (:mod:`runtime.core.client.tunnel`) opens a socket to any member through the
head's client relay, and hands the worker the connections members open to the address the
relay listens on for it. The mesh's own handshake (token, TLS) runs inside, end to end.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

#: Takes a socket a member opened to this process (through the relay) as an accepted one.
Accept = Callable[[socket.socket], Awaitable[None]]


class Tunnel(Protocol):
    """A remote driver's way into the mesh (the worker holds one, or None)."""

    @property
    def address(self) -> str:
        """Where members dial this process: a port the head's relay listens on for it."""
        ...

    async def dial(self, host: str, port: int) -> socket.socket:
        """A connected socket to the member at ``host:port`` (relayed by the head)."""
        ...

    def serve(self, accept: Accept) -> None:
        """From now on, hand each connection a member opens to :attr:`address` to ``accept``."""
        ...

    def close(self) -> None: ...


__all__ = ["Accept", "Tunnel"]
