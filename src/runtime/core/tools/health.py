"""Health endpoints of a node (``--health-port``), for Kubernetes probes and load balancers.

``GET /healthz`` answers 200 while the node is live, ``GET /readyz`` 200 while it is ready,
503 otherwise; the body says why in one line. A node process serves them on its own event
loop (:class:`HealthServer`), so an answer at all means the loop is responsive. A host of
several node processes serves them from its supervisor (:class:`HostHealth`), which asks
each process on a loopback port of its own and answers 200 only when all of them do.

Plain HTTP/1.1 with the standard library only: ``import runtime`` stays light, and the
endpoints carry no secrets (no token is asked; they say "ok" or why not).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import http.server

#: (healthy, why) of one check.
Check = Callable[[], tuple[bool, str]]
#: The paths served, and which check each runs.
PATHS = {"/healthz": "live", "/livez": "live", "/readyz": "ready"}
#: A request line and its headers must arrive within this many seconds and bytes.
_READ_S = 5.0
_MAX_HEAD = 8192


def _response(code: int, body: str, head_only: bool = False) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    data = (body + "\n").encode()
    lines = [
        f"HTTP/1.1 {code} {reason.get(code, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head_only else data)


def answer(method: str, target: str, checks: dict[str, Check]) -> tuple[int, str]:
    """(status, body) for one request, given the named checks."""
    if method not in ("GET", "HEAD"):
        return 405, "only GET and HEAD"
    path = target.split("?", 1)[0]
    which = PATHS.get(path)
    if which is None:
        return 404, f"unknown path {path[:100]!r}; try /healthz or /readyz"
    try:
        ok, why = checks[which]()
    except Exception as exc:  # a check that fails is a failed check, not a crashed server
        ok, why = False, f"{type(exc).__name__}: {exc}"
    return (200 if ok else 503), (why or ("ok" if ok else "not ok"))


class HealthServer:
    """``/healthz`` and ``/readyz`` on the running event loop."""

    def __init__(self, live: Check, ready: Check) -> None:
        self.checks = {"live": live, "ready": ready}
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
    ) -> None:
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_S)
            parts = head[:_MAX_HEAD].split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                writer.write(_response(400, "bad request"))
            else:
                code, body = answer(parts[0], parts[1], self.checks)
                writer.write(_response(code, body, head_only=parts[0] == "HEAD"))
            await asyncio.wait_for(writer.drain(), _READ_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None


def probe(host: str, port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET ``path`` of a health server: (status, body); (0, why) when it does not answer."""
    import http.client  # lazily: a node process that serves no health port never needs it

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"no answer: {type(exc).__name__}: {exc}"
    finally:
        conn.close()


class HostHealth:
    """The endpoints of a host of ``n`` node processes, served by their supervisor from a
    thread (started at once): process ``i`` serves its own on the loopback socket ``fds[i]``
    (passed to it as ``--health-fd``); the host is live (ready) when every process is
    ``alive(i)`` and answers 200 on its ``/healthz`` (``/readyz``)."""

    def __init__(
        self,
        host: str,
        port: int,
        n: int,
        alive: Callable[[int], bool],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        import http.server  # lazily (as in probe)

        self.alive, self.draining = alive, draining
        self._socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
        self.fds = [s.fileno() for s in self._socks]
        self.ports = [int(s.getsockname()[1]) for s in self._socks]
        checks = {"live": lambda: self._all("/healthz"), "ready": self._ready}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(False)

            def do_HEAD(self) -> None:
                self._answer(True)

            def _answer(self, head_only: bool) -> None:
                code, body = answer(self.command, self.path, checks)
                self.wfile.write(_response(code, body, head_only))
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds: not worth a log line each

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = type(
            "HostHealthServer",
            (http.server.ThreadingHTTPServer,),
            {"address_family": family, "daemon_threads": True},
        )
        self.server: http.server.ThreadingHTTPServer = server((host, port), Handler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="runtime-health", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def wire(
        self, specs: list[tuple[list[str], tuple[int, ...]]]
    ) -> list[tuple[list[str], tuple[int, ...]]]:
        """The processes' (arguments, descriptors to pass), each given its health socket."""
        return [
            ([*argv, "--health-fd", str(fd)], (*fds, fd))
            for (argv, fds), fd in zip(specs, self.fds, strict=True)
        ]

    def _ready(self) -> tuple[bool, str]:
        if self.draining():
            return False, "draining: the host is stopping"
        return self._all("/readyz")

    def _all(self, path: str) -> tuple[bool, str]:
        for i, port in enumerate(self.ports):
            if not self.alive(i):
                return False, f"node process {i} is not running"
            code, body = probe("127.0.0.1", port, path)
            if code != 200:
                return False, f"node process {i}: {body}"
        return True, f"ok: {len(self.ports)} node processes"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for sock in self._socks:
            sock.close()


__all__ = ["PATHS", "HealthServer", "HostHealth", "answer", "probe"]
