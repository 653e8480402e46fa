"""The dashboard's HTTP server (aiohttp, on the head's loop): the page, its JSON API, charts
drawn as SVG, the log view and the cluster's Prometheus metrics.

Routes (every one needs the credential, ``?token=HEX`` or ``Authorization: Bearer HEX``):

- ``/``: the page; ``/static/*``: its script and style, and ``/favicon.ico`` (shipped in the
  package; the routes open without the credential: they hold nothing of the cluster);
- ``/api/summary``, ``/api/nodes``, ``/api/actors``, ``/api/tasks``, ``/api/objects``,
  ``/api/placement_groups``, ``/api/jobs``, ``/api/serve``, ``/api/tune``, ``/api/train``:
  JSON tables; ``/api/page``: all the page shows, in one answer;
- ``/api/chart/{cpu,memory,store,tasks,calls}.svg`` and ``/api/chart/tune.svg?experiment=&metric=``;
- ``/logs?node_id=&actor=&task=&who=`` (or ``?job=ID``): the log view, from the nodes' own
  rings of output (``python -m runtime logs``); ``/api/logs``: the same lines as JSON;
- ``/api/timeline``: the recent tasks and actor calls as Chrome trace events (``python -m
  runtime timeline``; ``?download=1``: as a file); ``/api/stacks``: every member's threads
  and asyncio tasks (``python -m runtime stack``; ``?format=text``: as it prints them);
  ``/api/memory?group_by=owner|call_site|node``: what pins memory (``python -m runtime
  memory``; ``?format=text``);
- ``/metrics``: every process's metrics merged (Prometheus text format);
  ``/metrics/{node_id}``: one process's; ``/api/prometheus_sd``: the targets for Prometheus'
  HTTP service discovery (one per process, each scraped through the head).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import importlib.resources
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from runtime.core.api.memory import format_memory, read_memory
from runtime.core.api.observe import format_stacks, gather, read_stacks
from runtime.core.api.timeline import read_timeline
from runtime.core.tools.dashboard import read_only_credential
from runtime.core.wire import protocol as p

from . import _prometheus, _views
from ._history import History
from ._logs import job_log, node_logs
from ._svg import line_chart

if TYPE_CHECKING:
    from runtime.core.process.worker import Worker

log = logging.getLogger("runtime.dashboard")

#: The most connections held at once; more are answered 503 and closed.
MAX_CONNECTIONS: Final = 64
#: How long a client may take to send its first request, and to keep an idle connection.
READ_TIMEOUT_S: Final = 10.0
#: How often the cluster is sampled for the charts (``RUNTIME_DASHBOARD_SAMPLE_S``).
SAMPLE_S: Final = float(os.environ.get("RUNTIME_DASHBOARD_SAMPLE_S", "2") or 2)
#: How long a member may take to answer for its metrics.
ASK_TIMEOUT_S: Final = 5.0
#: Finished tasks and actor calls each member lists in the Tasks table (its last ones).
RECENT_TASKS: Final = 100

_CHARTS: Final = {
    # name: (title, unit, index in History points, rate, scale)
    "cpu": ("CPU per process (%)", "%", 0, True, 100.0),
    "memory": ("Resident memory per process", "bytes", 1, False, 1.0),
    "store": ("Object store in memory", "bytes", 2, False, 1.0),
    "tasks": ("Tasks finished per second", "/s", 3, True, 1.0),
    "calls": ("Actor calls per second", "/s", 4, True, 1.0),
}
_TABLES: Final = ("nodes", "actors", "tasks", "objects", "placement_groups", "jobs", "serve",
                  "tune", "train")  # fmt: skip


class _Refuse(asyncio.Protocol):
    """What a connection past :data:`MAX_CONNECTIONS` gets: 503, then closed once what the
    client sent is read (closing over unread bytes would reset the connection before the
    client reads the answer), within a second at most."""

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self.transport = transport
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        self.transport.close()

    def eof_received(self) -> bool:
        return False  # close


class Dashboard:
    """The head's dashboard: ``await start(host, port)``, ``await close()``."""

    def __init__(self, worker: Worker, token: bytes) -> None:
        self.worker = worker
        self._secrets = (read_only_credential(token).encode(), token.hex().encode())
        self._read_only = self._secrets[0].decode()
        self.address = ""
        self.history = History()
        #: ids of the connections that sent a whole request (until their read timeout check)
        self._served: set[int] = set()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (0: any free port); returns ``http://host:port``."""
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/favicon.ico", self._favicon)
        app.router.add_get("/logs", self._log_page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/metrics/{node_id}", self._metrics_of)
        app.router.add_get("/api/logs", self._api_logs)
        app.router.add_get("/api/chart/{name}.svg", self._chart)
        app.router.add_get("/api/prometheus_sd", self._service_discovery)
        app.router.add_get("/api/page", self._api_page)
        app.router.add_get("/api/timeline", self._api_timeline)
        app.router.add_get("/api/stacks", self._api_stacks)
        app.router.add_get("/api/memory", self._api_memory)
        app.router.add_get("/api/{what}", self._api_table)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, keepalive_timeout=READ_TIMEOUT_S
        )
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        loop = asyncio.get_running_loop()

        def connection() -> asyncio.BaseProtocol:
            if len(handlers.connections) >= MAX_CONNECTIONS:
                return _Refuse()
            handler = handlers()
            loop.call_later(READ_TIMEOUT_S, self._drop_if_silent, handler)
            return handler

        try:
            self._server = await loop.create_server(connection, host, port)
        except OSError:  # a taken port: the caller goes on without a dashboard
            await self._runner.cleanup()
            raise
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.address = f"http://{sock_host}:{sock_port}"
        self._write_address()
        self._sampler = asyncio.ensure_future(self._sample_forever())
        return self.address

    def _write_address(self) -> None:
        """``dashboard.json`` in the state directory: the address, and the link with the
        read-only credential (how ``runtime.init(include_dashboard=True)`` is found)."""
        state_dir = self.worker.state_dir
        if not state_dir:
            return
        path = os.path.join(state_dir, "dashboard.json")
        with contextlib.suppress(OSError):
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"address": self.address, "url": self.url()}, f)
            os.replace(path + ".tmp", path)

    def url(self) -> str:
        """The address with the read-only credential (never the cluster token)."""
        return f"{self.address}/?token={self._read_only}"

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sampler
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()

    def _drop_if_silent(self, handler: Any) -> None:
        """A client that sent no whole request within the read timeout is cut off."""
        if id(handler) in self._served:
            self._served.discard(id(handler))
        elif handler.transport is not None:
            handler.transport.close()

    # --- sampling ----------------------------------------------------------------------------

    async def collect(self) -> list[dict[str, Any]]:
        """Every live member's metrics snapshot, this head's first."""
        worker = self.worker
        others = await worker.ask_members(p.ReadMetrics, ASK_TIMEOUT_S)
        return [worker.metrics_snapshot(), *[a for a in others if "families" in a]]

    async def _sample_forever(self) -> None:
        while True:
            try:
                self.history.add(time.time(), await self.collect())
            except Exception:  # a bad sample must not end the sampling
                log.exception("dashboard: sampling the cluster failed")
            await asyncio.sleep(SAMPLE_S)

    # --- requests ----------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._served.add(id(request.protocol))
        if not request.raw_path.startswith("/") or request.raw_path.startswith("//"):
            bad = web.Response(status=400, text="bad request target\n")
            bad.force_close()  # a malformed request line: answered, then the connection ends
            return bad
        refused = getattr(request.match_info, "http_exception", None)
        if isinstance(refused, web.HTTPMethodNotAllowed):
            raise refused  # says nothing of the cluster: answered before the credential
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip()
        secret = given.encode()
        # the page's script, style and icon (browsers ask for /favicon.ico): no state
        public = request.path.startswith("/static/") or request.path == "/favicon.ico"
        if not public and not any(hmac.compare_digest(secret, s) for s in self._secrets):
            return web.Response(status=401, text="the dashboard credential is needed: ?token=HEX\n")
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug here must not take the head down
            log.exception("dashboard request failed")
            return web.Response(status=500, text=f"error: {type(exc).__name__}\n")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=_asset("favicon.svg"), content_type="image/svg+xml")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kinds = {
            "app.js": "application/javascript",
            "style.css": "text/css",
            "favicon.svg": "image/svg+xml",
        }
        if name not in kinds:
            raise web.HTTPNotFound()
        return web.Response(text=_asset(name), content_type=kinds[name], charset="utf-8")

    async def _table(self, what: str) -> Any:
        worker, head = self.worker, self.worker.head
        assert head is not None
        match what:
            case "nodes":
                return _views.nodes(head)
            case "actors":
                return _views.actors(head)
            case "tasks":
                recent = await gather(worker, "timeline", {"tail": RECENT_TASKS})
                return _views.tasks(await worker.list_tasks(), self.history, recent)
            case "objects":
                return await worker.list_objects()
            case "placement_groups":
                return head._list("placement_groups")
            case "jobs":
                return _views.jobs(worker.state_dir)
            case "serve":
                return _views.serve(self.history)
            case "tune":
                return _views.tune(self.history)
            case "train":
                return _views.train(self.history)
        raise web.HTTPNotFound()

    async def _summary(self) -> dict[str, Any]:
        from runtime.core.tools.cli import _status  # what `python -m runtime status` prints

        head = self.worker.head
        assert head is not None
        return _status(self.worker.address, _views.nodes(head), head._list("actors"))

    async def _api_table(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        if what == "summary":
            return web.json_response(await self._summary(), dumps=_dumps)
        if what not in _TABLES:
            raise web.HTTPNotFound()
        return web.json_response(await self._table(what), dumps=_dumps)

    async def _api_page(self, request: web.Request) -> web.StreamResponse:
        page: dict[str, Any] = {"summary": await self._summary()}
        for what in _TABLES:
            if what != "objects":  # not on the page (each member would be asked every 2 s)
                page[what] = await self._table(what)
        return web.json_response(page, dumps=_dumps)

    async def _chart(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "tune":
            exp, metric = request.query.get("experiment", ""), request.query.get("metric", "")
            svg = line_chart(f"{exp}: {metric}", "", self.history.trial_series(exp, metric))
        elif name in _CHARTS:
            title, unit, index, rate, scale = _CHARTS[name]
            svg = line_chart(title, unit, self.history.member_series(index, rate, scale))
        else:
            raise web.HTTPNotFound()
        return web.Response(text=svg, content_type="image/svg+xml")

    async def _log_rows(self, request: web.Request) -> list[dict[str, Any]]:
        q = request.query
        try:
            tail = max(1, min(int(q.get("tail", "500")), 20_000))
        except ValueError:
            raise web.HTTPBadRequest(text="tail must be a number\n") from None
        if q.get("job"):
            return job_log(self.worker.state_dir, q["job"])[-tail:]
        return await node_logs(
            self.worker,
            node_id=q.get("node_id", ""),
            actor=q.get("actor", ""),
            task=q.get("task", ""),
            who=q.get("who", ""),
            tail=tail,
        )

    async def _api_logs(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._log_rows(request), dumps=_dumps)

    async def _api_timeline(self, request: web.Request) -> web.StreamResponse:
        response = web.json_response(await read_timeline(self.worker), dumps=_dumps)
        if request.query.get("download"):
            response.headers["Content-Disposition"] = 'attachment; filename="timeline.json"'
        return response

    async def _api_stacks(self, request: web.Request) -> web.StreamResponse:
        stacks = await read_stacks(self.worker, request.query.get("node_id") or None)
        if request.query.get("format") == "text":
            every = bool(request.query.get("all"))
            return web.Response(text=format_stacks(stacks, all_threads=every))
        return web.json_response(stacks, dumps=_dumps)

    async def _api_memory(self, request: web.Request) -> web.StreamResponse:
        try:
            summary = await read_memory(self.worker, request.query.get("group_by", "owner"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if request.query.get("format") == "text":
            return web.Response(text=format_memory(summary))
        return web.json_response(summary, dumps=_dumps)

    async def _log_page(self, request: web.Request) -> web.StreamResponse:
        rows = await self._log_rows(request)
        what = ", ".join(f"{k}={v}" for k, v in request.query.items() if k != "token") or "all"
        body = "".join(
            f'<div class="{"err" if r["stderr"] else "out"}"><span class="who">('
            f"{html.escape(r['who'])})</span> {html.escape(r['line'])}</div>"
            for r in rows
        )
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>logs: '
            f'{html.escape(what)}</title><link rel="stylesheet" href="/static/style.css">'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml"></head><body>'
            f"<main><h1>Logs: {html.escape(what)}</h1>"
            f"<p class=muted>{len(rows)} line(s), newest last</p>"
            f'<pre id="lines" class="logs">{body or "(no output yet)"}</pre></main></body></html>'
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        text = _prometheus.render(await self.collect())
        return web.Response(body=text, headers={"Content-Type": _prometheus.CONTENT_TYPE})

    async def _metrics_of(self, request: web.Request) -> web.StreamResponse:
        node_id = request.match_info["node_id"]
        snaps = [s for s in await self.collect() if s.get("node_id") == node_id]
        if not snaps:
            raise web.HTTPNotFound(text=f"no live member {node_id}\n")
        return web.Response(
            body=_prometheus.render(snaps), headers={"Content-Type": _prometheus.CONTENT_TYPE}
        )

    async def _service_discovery(self, request: web.Request) -> web.StreamResponse:
        target = self.address.removeprefix("http://")
        head = self.worker.head
        assert head is not None
        groups = [
            {
                "targets": [target],
                "labels": {
                    "__metrics_path__": f"/metrics/{n.node_id}",
                    "node_id": n.node_id,
                    "role": "driver" if n.is_driver else "node",
                },
            }
            for n in head.nodes.values()
            if n.alive
        ]
        return web.json_response(groups)


def _asset(name: str) -> str:
    return (importlib.resources.files("runtime.dashboard") / "static" / name).read_text("utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
