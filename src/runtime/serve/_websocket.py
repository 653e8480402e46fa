"""WebSockets through the proxy, to an ASGI app (plain, Starlette or FastAPI) on a replica.

The proxy takes the client's upgrade request, picks a replica through the app's router (a
connection counts as one ongoing request of its replica for as long as it is open) and
opens one core streaming call (``websocket``) on it: the app's ASGI ``send`` messages come
back on that stream as they are sent (accept, text or bytes, close), with the stream's
backpressure. The client's messages go to the replica one actor call each
(``websocket_receive``), in order, each awaited before the next is read from the client, so
a slow app slows its client down instead of filling memory. The handshake is answered only
once the app accepted (with the subprotocol it chose); an app that closes before accepting,
or a deployment that takes no WebSockets, answers 403. A client that goes away is told to
the app as ``websocket.disconnect``; an app that does not end within a grace period then is
cancelled (``runtime.cancel`` on the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import runtime

from . import _http
from ._exceptions import BackPressureError, DeploymentUnavailableError, ReplicaFullError
from ._multiplex import MODEL_ID_HEADER
from ._router import Retries, get_router, is_replica_gone, is_retryable

log = logging.getLogger(__name__)

#: Messages a connection holds on the replica, each way, before its sender waits.
QUEUE = 64
#: How long an app may take to end after its client went away before it is cancelled.
DISCONNECT_GRACE_S = 2.0
#: The ASGI messages an app may send, and what the proxy does with them.
_SEND_TYPES = frozenset({"websocket.accept", "websocket.send", "websocket.close"})

AsgiCall = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def is_upgrade(request: Any) -> bool:
    """Whether an aiohttp request asks for a WebSocket."""
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


# --- replica side ------------------------------------------------------------------------------


def scope(path: str, query: str, headers: list[tuple[str, str]], route_prefix: str) -> dict:
    """The ASGI scope of a WebSocket connection."""
    offered = [
        p.strip()
        for k, v in headers
        if k.lower() == "sec-websocket-protocol"
        for p in v.split(",")
        if p.strip()
    ]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": route_prefix if route_prefix != "/" else "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "subprotocols": offered,
        "state": {},
    }


class Session:
    """One connection on the replica: the ASGI ``receive`` and ``send`` of its app."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self.ended = asyncio.Event()
        self._connected = False
        self._closed = False

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind not in _SEND_TYPES:
            raise ValueError(f"an ASGI WebSocket app cannot send {kind!r} here")
        if self._closed:
            raise RuntimeError("the WebSocket is closed: nothing more can be sent")
        out: dict[str, Any] = {"type": kind}
        if kind == "websocket.accept":
            out["subprotocol"] = message.get("subprotocol")
            out["headers"] = [(_text(k), _text(v)) for k, v in message.get("headers") or ()]
        elif kind == "websocket.send":
            if message.get("bytes") is not None:
                out["bytes"] = bytes(message["bytes"])
            else:
                out["text"] = str(message.get("text") or "")
        else:
            self._closed = True
            out["code"] = int(message.get("code") or 1000)
            out["reason"] = str(message.get("reason") or "")
        await self.outbox.put(out)

    async def deliver(self, message: dict[str, Any]) -> bool:
        """A message from the client: waits while the app has ``QUEUE`` unread; False if
        the app ended (nothing reads it any more)."""
        if self.ended.is_set():
            return False
        if not self.inbox.full():
            self.inbox.put_nowait(message)
            return True
        put = asyncio.ensure_future(self.inbox.put(message))
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({put, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            ended.cancel()
        return put.done() and not put.cancelled()


async def run(app: AsgiCall, asgi_scope: dict[str, Any], session: Session) -> AsyncIterator[Any]:
    """Run ``app`` on the connection; yields what it sends, as it sends it."""

    async def runner() -> None:
        try:
            await app(asgi_scope, session.receive, session.send)
        finally:
            await session.outbox.put(None)  # the end (the reader is there until it comes)

    task = asyncio.ensure_future(runner())
    try:
        while True:
            message = await session.outbox.get()
            if message is None:
                break
            yield message
        await task  # the app's own error, if it raised
    finally:
        session.ended.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


# --- proxy side --------------------------------------------------------------------------------


async def proxy(request: Any, route: tuple[str, str, str], hide: bool, max_message: int) -> Any:
    """Answer an upgrade request: connect the client to the app on a replica."""
    from aiohttp import web

    prefix, app, ingress = route
    router = get_router(app, ingress, asyncio.get_running_loop())
    model_id = request.headers.get(MODEL_ID_HEADER, "")
    headers_blob = _http.encode_request(request.headers)
    request_id = os.urandom(8).hex()
    retries, refused = Retries(), False
    while True:
        try:
            if refused:
                slot = await router.assign(refused=True, model_id=model_id)
            else:
                slot = router.try_assign(model_id) or await router.assign(model_id=model_id)
        except (BackPressureError, DeploymentUnavailableError) as exc:
            return _error(503, type(exc).__name__, str(exc))
        handle = slot.handle
        stream = handle.websocket.options(num_returns="streaming").remote(
            request_id, request.path, request.query_string, headers_blob, prefix
        )
        try:
            first = await _next(stream)
        except asyncio.CancelledError:
            router.release(slot)
            runtime.cancel(stream)
            raise
        except ReplicaFullError:
            router.release(slot, ran=False)
            refused = True
            continue
        except Exception as exc:
            router.release(slot)
            if is_replica_gone(exc) or is_retryable(exc):
                router.replica_failed(slot, exc)
                if retries.again(exc):
                    continue
                return _error(503, type(exc).__name__, f"the replica serving this died: {exc}")
            log.warning("serve proxy: WebSocket %s failed to open: %r", request_id, exc)
            return _error(500, type(exc).__name__, "the app failed" if hide else str(exc))
        break
    relay: asyncio.Task[None] | None = None
    try:
        if first is None or first["type"] != "websocket.accept":
            reason = first.get("reason", "") if first is not None else ""
            return _error(403, "WebSocketRejected", reason or "the app did not accept it")
        ws = web.WebSocketResponse(
            protocols=[first["subprotocol"]] if first.get("subprotocol") else (),
            max_msg_size=max_message,
        )
        for name, value in first.get("headers") or ():
            if name.lower() not in ("sec-websocket-protocol", "content-length"):
                ws.headers[name] = value
        await ws.prepare(request)
        # In a task of its own: aiohttp cancels this handler when the client's connection
        # closes, and the app must still be told (and the slot released) after that.
        relay = asyncio.ensure_future(_relay(ws, stream, handle, request_id))
        relay.add_done_callback(lambda _: _end(router, slot, stream))
        _relays.add(relay)
        relay.add_done_callback(_relays.discard)
        await asyncio.shield(relay)
        return ws
    finally:
        if relay is None:
            _end(router, slot, stream)


#: Connections whose relay runs on (the handler may be gone): kept until they end.
_relays: set[asyncio.Task[None]] = set()


def _end(router: Any, slot: Any, stream: Any) -> None:
    router.release(slot)
    runtime.cancel(stream)  # a no-op once the stream ended


async def _relay(ws: Any, stream: Any, handle: Any, request_id: str) -> None:
    """Carry messages both ways until either side closes."""
    from aiohttp import WSMsgType

    outgoing = asyncio.ensure_future(_send_out(ws, stream, request_id))
    code = 1005
    try:
        async for msg in ws:
            if outgoing.done():
                break
            if msg.type == WSMsgType.TEXT:
                message = {"type": "websocket.receive", "text": msg.data}
            elif msg.type == WSMsgType.BINARY:
                message = {"type": "websocket.receive", "bytes": msg.data}
            else:
                continue
            if not await handle.websocket_receive.remote(request_id, message):
                break  # the app's end of the connection is gone
        code = ws.close_code or 1005
    finally:
        if not outgoing.done():
            # The client went away first: tell the app, give it a moment to end.
            with contextlib.suppress(Exception):
                await handle.websocket_receive.remote(
                    request_id, {"type": "websocket.disconnect", "code": code}
                )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(outgoing), DISCONNECT_GRACE_S)
            outgoing.cancel()
        with contextlib.suppress(BaseException):
            await outgoing


async def _send_out(ws: Any, stream: Any, request_id: str) -> None:
    """The app's messages to the client, until the app closes or ends."""
    try:
        while True:
            message = await _next(stream)
            if message is None:
                await ws.close()
                return
            if message["type"] == "websocket.send":
                if "bytes" in message:
                    await ws.send_bytes(message["bytes"])
                else:
                    await ws.send_str(message["text"])
            elif message["type"] == "websocket.close":
                await ws.close(code=message["code"], message=message["reason"].encode())
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("serve proxy: WebSocket %s: the app failed: %r", request_id, exc)
        await ws.close(code=1011, message=b"the app failed")


async def _next(stream: Any) -> Any:
    """The next item of a streaming call, or None at its end."""
    try:
        ref = await stream.__anext__()
    except StopAsyncIteration:
        return None
    return await ref


def _error(status: int, error: str, message: str) -> Any:
    from aiohttp import web

    return web.Response(
        status=status,
        body=_http.error_body(status, error, message),
        content_type="application/json",
    )
