"""WebSockets through the proxy to an ASGI app on a replica, with aiohttp's real client."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import pytest

from runtime import serve

from .conftest import exists, touch, until_exists

aiohttp = pytest.importorskip("aiohttp")

pytestmark = pytest.mark.timeout(60)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI WebSocket app: upper-cases text, reverses bytes, closes on 'bye'."""
    assert scope["type"] == "websocket"
    query = parse_qs(scope["query_string"].decode())
    assert (await receive())["type"] == "websocket.connect"
    if "reject" in query:
        await send({"type": "websocket.close", "code": 1008, "reason": "not you"})
        return
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    try:
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                if "gone" in query:
                    touch(query["gone"][0])
                return
            if msg.get("text") == "bye":
                await send({"type": "websocket.close", "code": 4000, "reason": "see you"})
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"][::-1]})
    finally:
        if "ended" in query:
            touch(query["ended"][0])


@serve.deployment
@serve.ingress(echo_app)
class Echo:
    pass


@serve.deployment
class PlainHttp:
    async def __call__(self, request: serve.Request) -> str:
        return "no websockets here"


def test_a_plain_asgi_app_talks_over_a_websocket_through_the_proxy(serve_cluster: str) -> None:
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    url = serve_cluster.replace("http://", "ws://") + "/echo/socket"

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=("v2.chat", "v1.chat")) as ws,
        ):
            assert ws.protocol == "v2.chat"
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=10) == "HELLO"
            await ws.send_bytes(b"\x00\x01\x02")
            assert await ws.receive_bytes(timeout=10) == b"\x02\x01\x00"
            for i in range(200):  # in order, none lost
                await ws.send_str(f"m{i}")
            assert [await ws.receive_str(timeout=10) for _ in range(200)] == [
                f"M{i}" for i in range(200)
            ]
            await ws.send_str("bye")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert (ws.close_code, msg.extra) == (4000, "see you")

    asyncio.run(main())


def test_a_client_that_goes_away_is_told_to_the_app(serve_cluster: str, tmp_path) -> None:
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    gone, ended = str(tmp_path / "gone"), str(tmp_path / "ended")
    url = serve_cluster.replace("http://", "ws://") + f"/echo?gone={gone}&ended={ended}"

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url)
            await ws.send_str("x")
            assert await ws.receive_str(timeout=10) == "X"
            assert not exists(gone)
            await ws.close()
            await until_exists(gone)  # the app received websocket.disconnect
            await until_exists(ended)

    asyncio.run(main())


def test_an_app_that_closes_before_accepting_refuses_the_handshake(serve_cluster: str) -> None:
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    serve.run(PlainHttp.bind(), name="plain", route_prefix="/plain")
    base = serve_cluster.replace("http://", "ws://")

    async def refused(url: str) -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url)
            return info.value.status

    assert asyncio.run(refused(f"{base}/echo?reject=1")) == 403
    assert asyncio.run(refused(f"{base}/plain")) == 403  # a deployment with no ASGI app
    assert asyncio.run(refused(f"{base}/nowhere")) == 404
    serve.delete("plain")


def test_fastapi_websocket_routes_are_bound_to_the_replica(serve_cluster: str) -> None:
    pytest.importorskip("fastapi")
    from tests.serve._ws_fastapi import Counter

    serve.run(Counter.bind(), name="counter", route_prefix="/counter")
    url = serve_cluster.replace("http://", "ws://") + "/counter/ws"

    async def main() -> list[str]:
        out = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # the same replica's state across connections
                async with session.ws_connect(url) as ws:
                    await ws.send_str("a")
                    await ws.send_str("b")
                    out += [await ws.receive_str(timeout=10) for _ in range(2)]
        return out

    assert asyncio.run(main()) == ["a:1", "b:2", "a:3", "b:4"]
    serve.delete("counter")
