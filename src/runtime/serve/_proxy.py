"""The HTTP ingress: an aiohttp server inside an actor, routing by longest route prefix.

It follows the controller's route table by long poll and sends each request straight to a
replica of the app's ingress deployment through that deployment's router (power of two
choices, bounded queue), so the controller is never on the request path. Full queues
answer 503, unknown routes 404, unsupported methods 405, a replica that died mid-request
503, an application error 500 with a JSON body naming it. A client that disconnects
cancels its request on the replica (and the handle calls the replica made for it).

It protects itself from its clients (``HTTPOptions``): a connection that has not sent a
whole request head in ``header_timeout_s`` (or sits idle that long between requests) is
closed, a body not read in ``body_timeout_s`` answers 408, bodies over ``max_body_bytes``
413, the bodies held at once are bounded by ``max_queued_bytes`` (503 + ``Retry-After``
beyond), connections beyond ``max_connections`` are closed at once, a response header a
deployment made with CR/LF answers 500, exception text can be hidden, and ``/-/routes``
answers loopback clients only. On shutdown it drains: requests in flight finish, new ones
answer 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import ipaddress
import itertools
import logging
import os
import re
import socket
import time
from typing import Any

import runtime

from . import _client, _gc, _http, _metrics, _websocket
from ._exceptions import BackPressureError, DeploymentUnavailableError, ReplicaFullError
from ._multiplex import MODEL_ID_HEADER
from ._router import ReplicaSlot, Retries, get_router, is_replica_gone, is_retryable
from .config import HTTPOptions

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
#: Methods sent again to another replica even when the one serving them died mid-request
#: (they may have run there): the safe methods. Others are retried only when they surely
#: did not start (the replica was dead, full or draining before it took them).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HIDDEN = "the deployment failed while answering; the replica's log has the details"
#: The listening sockets' accept queue (the kernel caps it at net.core.somaxconn).
_BACKLOG = 4096
#: The most requests one call to a replica carries.
_MAX_BATCH = 64
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def _json(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Any:
    from aiohttp import web

    return web.Response(
        status=status,
        body=_http.error_body(status, error, message),
        content_type="application/json",
        headers=headers,
    )


def _headers_ok(status: int, headers: list[tuple[str, str]]) -> bool:
    """Whether a deployment's status and headers can go on the wire as they are."""
    if not isinstance(status, int) or not 100 <= status <= 599:
        return False
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            return False
        if name not in _GOOD_NAMES:
            if not _TOKEN.match(name):
                return False
            if len(_GOOD_NAMES) < 1024:
                _GOOD_NAMES.add(name)
        if "\r" in value or "\n" in value or "\x00" in value:
            return False
    return True


#: Header names seen to be valid tokens (most answers carry the same few).
_GOOD_NAMES: set[str] = set()


def _is_loopback_peer(request: Any) -> bool:
    peer = request.remote
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        return False


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: each connection takes one, and
    the usual soft default (1,024) would refuse clients below ``max_connections``."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed
        pass


class _Acceptor:
    """Accepts the connections waiting on a listening socket, all of them at each readiness.

    The loop's own server (uvloop's) accepts about one connection per loop pass once the
    loop is busy, so 1,024 clients connecting at once waited seconds in the kernel's accept
    queue while their first requests were already sent (in a py-spy'd run, ~100 accepts/s:
    a p99 of 4 s at 1,024 connections, with a p50 of 0.1 s). Each connection accepted here
    is handed to the loop (``connect_accepted_socket``) with ``factory``'s protocol; those
    beyond ``cap`` open connections (``live()``) are answered 503 and closed at once.
    """

    #: At most this many accepts per readiness, so that a flood of connections cannot hold
    #: the loop for long (the rest are taken on the next pass).
    BATCH = 512

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Any,
        cap: int,
        live: Any,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._cap = cap
        self._live = live
        self._tasks: set[asyncio.Task[Any]] = set()
        self._paused: asyncio.TimerHandle | None = None
        self._closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        sock, loop = self._sock, self._loop
        for _ in range(self.BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, or the like: back off a bit
                log.warning("serve proxy: accept failed: %r", exc)
                self._pause()
                return
            if self._live() + len(self._tasks) >= self._cap:  # counting those being handed
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(_BUSY)
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(self._factory, conn))
            self._tasks.add(task)
            task.add_done_callback(self._handed)

    def _handed(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("serve proxy: a connection failed at once: %r", task.exception())

    def _pause(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._paused = self._loop.call_later(0.1, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Stop listening (the connections already open stay)."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


async def _listen(
    loop: asyncio.AbstractEventLoop, host: str, port: int, reuse_port: bool, backlog: int
) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (one per address it resolves to, as
    ``create_server`` makes them); with port 0, they share the port the first one got."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                sock.bind((addr[0], socks[0].getsockname()[1], *addr[2:]))
            else:
                sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class ServeProxy:
    """One HTTP server (aiohttp's low-level server on the node's loop)."""

    def __init__(self, options: dict[str, Any] | str, port: int | None = None) -> None:
        if isinstance(options, str):  # (host, port), as a checkpoint of an older version has
            options = {"host": options, "port": port or 0}
        known = {f.name for f in dataclasses.fields(HTTPOptions)}
        opts = HTTPOptions.parse({k: v for k, v in options.items() if k in known})
        self._opts = opts
        self._hide = bool(options.get("hide_exception_text", opts.hides_exceptions()))
        self._reuse_port = bool(options.get("reuse_port"))  # one port for a host's proxies
        #: With a proxy on every node, each sends its requests to a replica on its own node
        #: while one has room (as Ray's proxies do): a request then stays in one process.
        #: One proxy for the cluster spreads them (it would load its own node alone).
        self._prefer_local = options.get("proxy_location") == "EveryNode"
        self.served = 0
        self._host = opts.host
        self._port = opts.port
        self._idle_s = min(opts.header_timeout_s, opts.keep_alive_timeout_s)
        self._queued_bytes = 0
        self._draining = False
        self._inflight = 0
        self._idle_event: asyncio.Event | None = None
        # Per connection (aiohttp's RequestHandler): [requests in its handler, idle since].
        self._conn_state: dict[Any, list[float]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        grpc_opts = options.get("grpc") or {}
        self._grpc: Any = None
        if grpc_opts.get("grpc_servicer_functions"):
            from ._grpc import GrpcIngress

            self._grpc = GrpcIngress(
                self._host,
                int(grpc_opts.get("port", 9000)),
                grpc_opts["grpc_servicer_functions"],
                self._hide,
            )
        self._bound: int | None = None
        self._server: Any = None
        self._acceptors: list[_Acceptor] = []
        self._routes: list[tuple[str, str, str]] = []  # (prefix, app, ingress), longest first
        #: The routes as _match reads them: (route, is "/", the prefix as a folder "/a/").
        self._matcher: list[tuple[tuple[str, str, str], bool, str]] = []
        #: Request ids: this proxy's random prefix and a counter (unique on every replica).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count()
        self._loop_time: Any = time.monotonic  # the loop's clock, once the server runs
        self._loop: Any = None
        #: Requests waiting for the end of the loop pass, by replica (see _send).
        self._batches: dict[ReplicaSlot, list[tuple[list[Any], asyncio.Future[bytes]]]] = {}
        self._flush_due = False
        self._flights: set[asyncio.Task[None]] = set()
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
        _raise_open_files_limit()
        from aiohttp import web

        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._loop = loop
        max_body = self._opts.max_body_bytes

        def make_request(*args: Any) -> Any:
            message, payload, protocol, writer, task = args
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_body
            )

        self._server = web.Server(
            self._handle,
            request_factory=make_request,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=self._opts.keep_alive_timeout_s,
        )
        server = self._server
        states = self._conn_state

        def protocol() -> Any:
            handler = server()
            states[handler] = [0, loop.time()]
            return handler

        def live() -> int:
            return len(server._connections)

        socks = await _listen(loop, self._host, self._port, self._reuse_port, _BACKLOG)
        cap = self._opts.max_connections
        self._acceptors = [_Acceptor(loop, sock, protocol, cap, live) for sock in socks]
        self._bound = self._acceptors[0].port
        self._poller = loop.create_task(self._poll_routes())
        self._sweeper = loop.create_task(self._sweep())
        if self._grpc is not None:
            await self._grpc.start(self._reuse_port)
        log.info("serve: HTTP proxy listening on %s:%s", self._host, self._bound)
        _gc.freeze()

    async def _sweep(self) -> None:
        """Close connections that sat without a request in progress for too long."""
        loop = asyncio.get_running_loop()
        period = max(0.05, self._idle_s / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            live = self._server._connections
            for handler in list(self._conn_state):
                state = self._conn_state[handler]
                if handler not in live and now - state[1] > 1:
                    del self._conn_state[handler]  # closed (or never opened)
                elif state[0] == 0 and now - state[1] > self._idle_s:
                    del self._conn_state[handler]
                    handler.force_close()
                    transport = live.get(handler)
                    if transport is not None:
                        transport.close()

    async def stop(self, drain_s: float = 2.0) -> None:
        """Drain and stop: stop listening, answer new requests on open connections with 503
        and ``Retry-After``, let the requests in flight finish (bounded), then close."""
        self._draining = True
        if self._poller is not None:
            self._poller.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for acceptor in self._acceptors:
            acceptor.close()
        if self._grpc is not None:
            await self._grpc.stop()
        if self._inflight:
            self._idle_event = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self._idle_event.wait()
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
            self._matcher = [(r, r[0] == "/", r[0].rstrip("/") + "/") for r in table]

    async def grpc_port(self) -> int | None:
        """The port the gRPC server listens on (None: no gRPC)."""
        return self._grpc.bound if self._grpc is not None else None

    async def stats(self) -> dict[str, Any]:
        """Requests this proxy took, its pid, and whether it is draining."""
        return {"served": self.served, "pid": os.getpid(), "draining": self._draining}

    async def wait_routes(self, version: int, timeout: float = 10.0) -> bool:
        """Wait (bounded) until this proxy routes by table ``version`` or newer."""
        for _ in range(int(timeout / 0.005)):
            if self._version >= version:
                return True
            await asyncio.sleep(0.005)
        return False

    def _match(self, path: str) -> tuple[str, str, str] | None:
        """The route of ``path``: the longest prefix that is the path or a folder of it."""
        for route, is_root, folder in self._matcher:
            if is_root or path == route[0] or path.startswith(folder):
                return route
        return None

    async def _handle(self, request: Any) -> Any:
        state = self._conn_state.get(request.protocol)
        if state is not None:
            state[0] += 1
        self._inflight += 1
        self.served += 1
        started, status = time.monotonic(), 500
        path = request.path
        own = path.startswith("/-/")  # Serve's own health and route checks: not counted
        route = None if own else self._match(path)
        try:
            response = await self._serve(request, path, own, route)
            status = getattr(response, "status", 200)
            return response
        finally:
            if not own:
                _metrics.request(route, status, time.monotonic() - started)
            self._inflight -= 1
            if state is not None:
                state[0] -= 1
                state[1] = self._loop_time()
            if self._inflight == 0 and self._idle_event is not None:
                self._idle_event.set()

    async def _serve(
        self, request: Any, path: str, own: bool, route: tuple[str, str, str] | None
    ) -> Any:
        from aiohttp import web

        if self._draining:
            return _json(503, "ProxyDraining", "this proxy is shutting down", {"Retry-After": "1"})
        if own:
            if path == "/-/healthz":
                return web.Response(text="success")
            if path == "/-/routes" and _is_loopback_peer(request):
                return web.json_response({p: app for p, app, _ in self._routes})
            route = self._match(path)
        if route is None:
            return _json(404, "NotFound", f"no application serves the path {path!r}")
        method = request.method
        if method not in _METHODS:
            return _json(405, "MethodNotAllowed", f"method {method} is not supported")
        opts = self._opts
        if _websocket.is_upgrade(request):
            return await _websocket.proxy(request, route, self._hide, opts.max_body_bytes)
        length = request.content_length
        if length is not None and length > opts.max_body_bytes:
            return _json(413, "PayloadTooLarge", f"the body exceeds {opts.max_body_bytes} bytes")
        reserved = length or 0
        if reserved and self._queued_bytes + reserved > opts.max_queued_bytes:
            return self._full_bytes()
        self._queued_bytes += reserved
        try:
            try:
                if request.body_exists:
                    async with asyncio.timeout(opts.body_timeout_s):
                        body = await request.read()
                else:  # no body to wait for (most GETs): no timer per request
                    body = b""
            except TimeoutError:
                return _json(
                    408, "RequestTimeout", f"the body did not arrive in {opts.body_timeout_s} s"
                )
            except web.HTTPRequestEntityTooLarge:
                return _json(
                    413, "PayloadTooLarge", f"the body exceeds {opts.max_body_bytes} bytes"
                )
            extra = len(body) - reserved
            if extra > 0:  # a chunked body: count it now that its size is known
                if self._queued_bytes + extra > opts.max_queued_bytes:
                    return self._full_bytes()
                self._queued_bytes += extra
                reserved += extra
            if opts.request_timeout_s is None:
                return await self._forward(request, route, body)
            try:
                async with asyncio.timeout(opts.request_timeout_s):
                    return await self._forward(request, route, body)
            except TimeoutError:
                return _json(408, "RequestTimeout", f"no answer within {opts.request_timeout_s} s")
        finally:
            self._queued_bytes -= reserved

    def _full_bytes(self) -> Any:
        return _json(
            503,
            "BackPressureError",
            f"the proxy holds max_queued_bytes={self._opts.max_queued_bytes} of request bodies",
            {"Retry-After": "1"},
        )

    async def _forward(self, request: Any, route: tuple[str, str, str], body: bytes) -> Any:
        from aiohttp import web

        prefix, app, ingress = route
        method = request.method
        path = request.path
        router = get_router(app, ingress, asyncio.get_running_loop(), self._prefer_local)
        model_id = request.headers.get(MODEL_ID_HEADER, "")
        headers_blob = _http.encode_raw_headers(request.raw_headers)
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        retries: Retries | None = None
        refused = False
        while True:
            try:
                if refused:
                    slot = await router.assign(refused=True, model_id=model_id)
                else:
                    slot = router.try_assign(model_id) or await router.assign(model_id=model_id)
                if model_id:
                    router.note_model(model_id, slot)
            except BackPressureError as exc:
                return _json(503, "BackPressureError", str(exc))
            except DeploymentUnavailableError as exc:
                return _json(503, "DeploymentUnavailableError", str(exc))
            handle = slot.handle
            try:
                blob = await self._send(
                    slot,
                    [
                        request_id,
                        method,
                        path,
                        request.query_string,
                        headers_blob,
                        body,
                        prefix,
                        model_id,
                    ],
                )
            except asyncio.CancelledError:
                router.release(slot)
                handle.cancel_request.remote(request_id)  # the client went away
                raise
            except ReplicaFullError:
                # Other callers fill that replica: it did not run this; try another or queue.
                router.release(slot, ran=False)
                refused = True
                continue
            except Exception as exc:  # every failure becomes an HTTP answer
                router.release(slot)
                gone = is_replica_gone(exc) or is_retryable(exc)
                if gone:
                    router.replica_failed(slot, exc)
                    # Sent again: what surely did not run, and idempotent methods in any case.
                    if retries is None:
                        retries = Retries()
                    if retries.again(exc, idempotent=method in _IDEMPOTENT):
                        continue
                    return _json(503, type(exc).__name__, f"the replica serving this died: {exc}")
                log.warning("serve proxy: request %s failed: %r", request_id, exc)
                return _json(500, type(exc).__name__, _HIDDEN if self._hide else str(exc))
            router.release(slot)
            break
        status, headers, out, streaming, failed = _http.unpack_answer(blob)
        if failed and self._hide:
            headers = [("Content-Type", _http.JSON_TYPE)]
            out = _http.error_body(500, "InternalServerError", _HIDDEN)
        if not _headers_ok(status, headers):
            if streaming:
                handle.cancel_request.remote(request_id)
            return _json(
                500,
                "InvalidResponse",
                "the deployment answered with a status or header that cannot be sent "
                "(a CR, LF or NUL in a header, or a status outside 100-599)",
            )
        if not streaming:
            return web.Response(status=status, headers=headers, body=out)
        return await self._stream(request, handle, request_id, status, headers)

    # --- replica calls, batched per loop pass ---------------------------------------------------

    def _send(self, slot: ReplicaSlot, args: list[Any]) -> Any:
        """Send one request to ``slot``'s replica (``handle_http``'s arguments); returns an
        awaitable of its packed answer, raising what the call would raise.

        The first request of a loop pass goes at once; those that follow it in the same
        pass wait for the pass's end and go to their replica in one call
        (``handle_http_batch``), which spares each request a call's own cost on both
        sides (core's call path is about a third of a no-op request's CPU time)."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)
            return slot.handle.handle_http.remote(*args)
        fut: asyncio.Future[bytes] = self._loop.create_future()
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = []
        batch.append((args, fut))
        return fut

    def _flush(self) -> None:
        self._flush_due = False
        batches, self._batches = self._batches, {}
        for slot, items in batches.items():
            live = [item for item in items if not item[1].done()]  # not cancelled meanwhile
            for i in range(0, len(live), _MAX_BATCH):
                self._spawn(self._call(slot, live[i : i + _MAX_BATCH]))

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    async def _call(self, slot: ReplicaSlot, items: list[tuple[list[Any], Any]]) -> None:
        """One call for ``items`` (one ``handle_http``, or a batch); settles their futures."""
        try:
            if len(items) == 1:
                answers = [await slot.handle.handle_http.remote(*items[0][0])]
            else:
                answers = await slot.handle.handle_http_batch.remote([a for a, _ in items])
        except asyncio.CancelledError:
            for _, fut in items:
                fut.cancel()
            raise
        except BaseException as exc:  # the call failed: so did each of its requests
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (args, fut), answer in zip(items, answers, strict=True):
            if fut.done():
                continue  # the client went away
            if answer is None:  # still running when the others were done
                self._spawn(self._late(slot, args[0], fut))
            elif isinstance(answer, BaseException):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)

    async def _late(self, slot: ReplicaSlot, request_id: str, fut: Any) -> None:
        try:
            answer = await slot.handle.http_result.remote(request_id)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(answer)

    async def _stream(
        self, request: Any, handle: Any, request_id: str, status: int, headers: Any
    ) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(status=status, headers=headers)
        resp.enable_chunked_encoding()
        stream = handle.stream.options(num_returns="streaming").remote(request_id, True)
        finished = False
        try:
            await resp.prepare(request)
            async for ref in stream:
                await resp.write(await ref)
            finished = True
            await resp.write_eof()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("serve proxy: stream %s ended early: %r", request_id, exc)
        finally:
            if not finished:
                # The client went away (or the stream failed): stop the generator on its
                # replica, and the handle calls it made.
                runtime.cancel(stream)
                handle.cancel_request.remote(request_id)
        return resp
