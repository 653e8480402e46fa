"""The HTTP ingress: an aiohttp server inside an actor, routing by longest route prefix.

It follows the controller's route table by long poll and sends each request straight to a
replica of the app's ingress deployment through that deployment's router (power of two
choices, bounded queue), so the controller is never on the request path. Full queues
answer 503, unknown routes 404, unsupported methods 405, a replica that died mid-request
503, an application error 500 with a JSON body naming it. A client that disconnects
cancels its request on the replica (and the handle calls the replica made for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from typing import Any

from . import _client, _http
from ._exceptions import BackPressureError, DeploymentUnavailableError
from ._router import get_router, is_replica_gone, is_retryable

log = logging.getLogger(__name__)

_RETRIES = 3
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def _json(status: int, error: str, message: str) -> Any:
    from aiohttp import web

    return web.Response(
        status=status,
        body=_http.error_body(status, error, message),
        content_type="application/json",
    )


class ServeProxy:
    """One HTTP server (aiohttp's low-level server on the node's loop)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._bound: int | None = None
        self._server: Any = None
        self._aio_server: Any = None
        self._routes: list[tuple[str, str, str]] = []  # (prefix, app, ingress), longest first
        self._version = -1
        self._poller: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    async def ready(self, port: int | None = None) -> int:
        """Start the server if it is not up (idempotent); returns the port it listens on.

        ``port``: where to listen if it is not up yet (a restarted proxy takes the port
        its first life was given, even if that was picked with port 0).
        """
        if port:
            self._port = port
        if self._bound is not None:
            return self._bound
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._bound is None:
                await self._start()
        assert self._bound is not None
        return self._bound

    async def _start(self) -> None:
        await asyncio.to_thread(importlib.import_module, "aiohttp.web")  # slow: off the loop
        from aiohttp import web

        loop = asyncio.get_running_loop()
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._aio_server = await loop.create_server(
            self._server, self._host, self._port, reuse_address=True, backlog=4096
        )
        self._bound = self._aio_server.sockets[0].getsockname()[1]
        self._poller = loop.create_task(self._poll_routes())
        log.info("serve: HTTP proxy listening on %s:%s", self._host, self._bound)

    async def stop(self) -> None:
        """Stop listening (in-flight requests get a bounded moment to finish)."""
        if self._poller is not None:
            self._poller.cancel()
        if self._aio_server is not None:
            self._aio_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._aio_server.wait_closed(), 2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.shutdown(2)
        self._bound = None

    async def _poll_routes(self) -> None:
        delay = 0.05
        while True:
            try:
                controller = await _client.controller_async()
                version, routes = await controller.listen.remote("routes", self._version)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("serve proxy: route poll failed: %r", exc)
                if isinstance(exc, ValueError):
                    _client.forget_controller()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._version = version
            table = [(prefix, app, ingress) for prefix, (app, ingress) in routes.items()]
            table.sort(key=lambda r: len(r[0]), reverse=True)
            self._routes = table

    async def wait_routes(self, version: int, timeout: float = 10.0) -> bool:
        """Wait (bounded) until this proxy routes by table ``version`` or newer."""
        for _ in range(int(timeout / 0.005)):
            if self._version >= version:
                return True
            await asyncio.sleep(0.005)
        return False

    def _match(self, path: str) -> tuple[str, str, str] | None:
        for prefix, app, ingress in self._routes:
            if prefix in ("/", path) or path.startswith(prefix.rstrip("/") + "/"):
                return prefix, app, ingress
        return None

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        path = request.path
        if path.startswith("/-/"):
            if path == "/-/healthz":
                return web.Response(text="success")
            if path == "/-/routes":
                return web.json_response({p: app for p, app, _ in self._routes})
        route = self._match(path)
        if route is None:
            return _json(404, "NotFound", f"no application serves the path {path!r}")
        method = request.method
        if method not in _METHODS:
            return _json(405, "MethodNotAllowed", f"method {method} is not supported")
        prefix, app, ingress = route
        body = await request.read()
        router = get_router(app, ingress, asyncio.get_running_loop())
        headers_blob = _http.encode_request(request.headers)
        request_id = os.urandom(8).hex()
        for attempt in range(_RETRIES + 1):
            try:
                slot = router.try_assign() or await router.assign()
            except BackPressureError as exc:
                return _json(503, "BackPressureError", str(exc))
            except DeploymentUnavailableError as exc:
                return _json(503, "DeploymentUnavailableError", str(exc))
            handle = slot.handle
            try:
                blob = await handle.handle_http.remote(
                    request_id, method, path, request.query_string, headers_blob, body, prefix
                )
                break
            except asyncio.CancelledError:
                handle.cancel_request.remote(request_id)  # the client went away
                raise
            except Exception as exc:  # every failure becomes an HTTP answer
                if is_retryable(exc) and attempt < _RETRIES:
                    router.replica_failed(slot, exc)
                    continue  # refused by a replica that is going away: it did not run
                if is_replica_gone(exc) or is_retryable(exc):
                    router.replica_failed(slot, exc)
                    return _json(503, type(exc).__name__, f"the replica serving this died: {exc}")
                return _json(500, type(exc).__name__, str(exc))
            finally:
                router.release(slot)
        status, headers, out, streaming = _http.unpack_answer(blob)
        if not streaming:
            return web.Response(status=status, headers=headers, body=out)
        return await self._stream(request, handle, request_id, status, headers)

    async def _stream(
        self, request: Any, handle: Any, request_id: str, status: int, headers: Any
    ) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(status=status, headers=headers)
        resp.enable_chunked_encoding()
        finished = False
        try:
            await resp.prepare(request)
            while True:
                more, item = await handle.next_chunk.remote(request_id)
                if not more:
                    finished = True
                    break
                await resp.write(_http.chunk_bytes(item))
            await resp.write_eof()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("serve proxy: stream %s ended early: %r", request_id, exc)
        finally:
            if not finished:
                handle.cancel_request.remote(request_id)
        return resp
