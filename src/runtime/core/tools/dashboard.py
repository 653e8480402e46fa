"""A small read-only dashboard on the head: ``python -m runtime.node --head --dashboard-port N``.

One page (``/``) that shows the cluster's nodes, actors, live tasks, objects and placement
groups, refreshed every two seconds, over a JSON API (``/api/summary``, ``/api/nodes``,
``/api/actors``, ``/api/tasks``, ``/api/objects``, ``/api/placement_groups``). It is served
by the head's own event loop with a minimal HTTP/1.1 responder (GET only, one request per
connection), so it costs no dependency and nothing at start-up.

Security is on, as everywhere else: every request needs a credential, as ``?token=HEX``
or ``Authorization: Bearer HEX``. The URL the head prints carries the dashboard's own
read-only credential (:func:`read_only_credential`, an HMAC of the cluster token), never the
cluster token itself: the mesh does not accept it, so a leaked dashboard URL cannot submit
work. The cluster token is accepted too (its holders are trusted anyway). The dashboard
listens on the head's ``--host`` (loopback by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from ..process.worker import Worker

log = logging.getLogger("runtime.dashboard")

#: The most a request's head may take (bytes), and how long a client may take to send it.
MAX_REQUEST: Final = 16 * 1024
READ_TIMEOUT_S: Final = 10.0
#: The most connections the dashboard holds at once; more are answered 503 and closed, so
#: slow clients cannot take the head's descriptors (and lock out the mesh port).
MAX_CONNECTIONS: Final = 64
_TABLES: Final = ("nodes", "actors", "tasks", "objects", "placement_groups")
_READ_ONLY_LABEL: Final = b"runtime dashboard read-only credential v1"


def read_only_credential(token: bytes) -> str:
    """The dashboard's credential (hex) for the cluster ``token``: good for reading the
    dashboard only; the mesh's handshake does not accept it."""
    return hmac.new(token, _READ_ONLY_LABEL, hashlib.sha256).hexdigest()


class Dashboard:
    """The head's HTTP dashboard (runs on the head worker's loop)."""

    def __init__(self, worker: Worker, token: bytes) -> None:
        self.worker = worker
        self._token = token.hex().encode()
        self._read_only = read_only_credential(token).encode()
        self._server: asyncio.Server | None = None
        self.address = ""
        self._open = 0

    async def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (0: any free port); returns ``http://host:port``."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.address = f"http://{sock_host}:{sock_port}"
        return self.address

    def url(self) -> str:
        """The address with the read-only credential (never the cluster token), to open in a
        browser."""
        return f"{self.address}/?token={self._read_only.decode()}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # --- one request ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            writer.close()  # the descriptor goes once these few bytes are sent
            return
        self._open += 1
        try:
            await self._serve_one(reader, writer)
        finally:
            self._open -= 1

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = await self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        except Exception as exc:  # a bug here must not take the head down
            log.exception("dashboard request failed")
            status, ctype, body = 500, "text/plain", f"error: {exc}\n".encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 500: "Internal Server Error"}[status]  # fmt: skip
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1]
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        try:
            url = urlsplit(target)  # "//[::1/" raises: a bad request, not a bug of ours
        except ValueError:
            return 400, "text/plain", b"bad request target\n"
        given = parse_qs(url.query).get("token", [""])[0].encode()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization" and value.strip().startswith("Bearer "):
                given = value.strip()[len("Bearer ") :].encode()
        if not (
            hmac.compare_digest(given, self._read_only) or hmac.compare_digest(given, self._token)
        ):
            return 401, "text/plain", b"the dashboard credential is needed: ?token=HEX\n"
        if url.path == "/":
            return 200, "text/html; charset=utf-8", _PAGE.encode()
        what = url.path.removeprefix("/api/")
        if what == "summary":
            return 200, "application/json", _json(await self._summary())
        if what in _TABLES:
            return 200, "application/json", _json(await self._table(what))
        return 404, "text/plain", b"not found\n"

    async def _table(self, what: str) -> Any:
        worker = self.worker
        if what == "tasks":
            return await worker.list_tasks()
        if what == "objects":
            return await worker.list_objects()
        if what == "nodes":
            return self._nodes()
        assert worker.head is not None
        return worker.head._list(what)

    def _nodes(self) -> list[dict[str, Any]]:
        assert self.worker.head is not None
        return [
            {f: getattr(n, f) for f in n.__struct_fields__ if f != "labels"}
            for n in self.worker.head.nodes.values()
        ]

    async def _summary(self) -> dict[str, Any]:
        from .cli import _status  # the summary `python -m runtime status` prints

        assert self.worker.head is not None
        return _status(self.worker.address, self._nodes(), self.worker.head._list("actors"))


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()


_PAGE: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>runtime dashboard</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; }
th { border-bottom: 1px solid #999; } tr:nth-child(even) { background: #f3f3f3; }
.muted { color: #777; }
</style></head>
<body>
<h1>runtime cluster <span id="addr" class="muted"></span></h1>
<div id="summary"></div>
<h2>Nodes</h2><div id="nodes"></div>
<h2>Actors</h2><div id="actors"></div>
<h2>Tasks (live)</h2><div id="tasks"></div>
<h2>Objects</h2><div id="objects"></div>
<h2>Placement groups</h2><div id="placement_groups"></div>
<p class="muted">Refreshed every 2 s. JSON: /api/summary, /api/nodes, /api/actors, /api/tasks,
/api/objects, /api/placement_groups (each needs ?token=).</p>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
const esc = (v) => String(typeof v === "object" && v !== null ? JSON.stringify(v) : v)
  .replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
function table(rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  const keys = Object.keys(rows[0]);
  return "<table><tr>" + keys.map((k) => "<th>" + esc(k) + "</th>").join("") + "</tr>" +
    rows.slice(0, 500).map((r) => "<tr>" + keys.map((k) => "<td>" + esc(r[k] ?? "") +
    "</td>").join("") + "</tr>").join("") + "</table>";
}
async function get(what) {
  const r = await fetch("/api/" + what + "?token=" + encodeURIComponent(token));
  if (!r.ok) throw new Error(what + ": " + r.status);
  return r.json();
}
async function refresh() {
  try {
    const s = await get("summary");
    document.getElementById("addr").textContent = s.address;
    const res = Object.entries(s.resources).map(([k, v]) =>
      esc(k) + ": " + v.available + " of " + v.total + " free").join(", ");
    const act = Object.entries(s.actors).map(([k, v]) => v + " " + esc(k)).join(", ");
    document.getElementById("summary").innerHTML = s.nodes + " node(s), " + s.drivers +
      " driver(s); " + res + "; actors: " + (act || "none");
    for (const what of ["nodes", "actors", "tasks", "objects", "placement_groups"]) {
      document.getElementById(what).innerHTML = table(await get(what));
    }
  } catch (e) {
    document.getElementById("summary").textContent = "cannot read the cluster: " + e;
  }
}
refresh(); setInterval(refresh, 2000);
</script>
</body></html>
"""
