"""The HTTP ingress protects itself from its clients: timeouts, caps, a queue bounded in
bytes, bad response headers, hidden exception text, `/-/routes`, draining on shutdown.

Each test starts its own proxy (the same ServeProxy class the proxy actor runs, here on the
test's event loop, with small limits) in front of a real deployment on the shared mesh, and
talks to it with real HTTP clients (raw sockets where a client must misbehave).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runtime import serve
from runtime.serve._proxy import ServeProxy
from runtime.serve.config import HTTPOptions

from .conftest import http, touch, until_exists

pytestmark = pytest.mark.timeout(60)


@serve.deployment(max_ongoing_requests=10)
class Gate:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    async def __call__(self, request: serve.Request) -> Any:
        q = request.query_params
        if "wait" in q:
            await until_exists(os.path.join(self.dir, q["wait"]))
        if "bad" in q:
            return serve.Response("x", headers={"X-Bad": "a\r\nInjected: yes"})
        if "fail" in q:
            raise ValueError("secret detail 1234")
        return {"n": len(await request.body())}


@pytest.fixture(scope="module")
def gate(serve_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = str(tmp_path_factory.mktemp("gate"))
    serve.run(Gate.bind(d), name="gate", route_prefix="/gate")
    yield d
    serve.delete("gate")


@contextlib.asynccontextmanager
async def local_proxy(**options: Any) -> AsyncIterator[tuple[ServeProxy, int]]:
    """A real proxy with these HTTPOptions on a free port, routing to the mesh's apps."""
    opts = {"host": "127.0.0.1", "port": 0, **options}
    proxy = ServeProxy(opts)
    port = await proxy.ready()
    try:
        for _ in range(3000):
            if proxy._match("/gate") is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("the local proxy never learned the route /gate")
        yield proxy, port
    finally:
        await proxy.stop()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def until(check: Any, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the condition never held")


async def test_a_request_head_never_finished_is_closed_after_header_timeout(gate: str) -> None:
    async with local_proxy(header_timeout_s=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /gate HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        await writer.drain()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the proxy
        assert loop.time() - start >= 0.3
        writer.close()


async def test_a_body_that_never_arrives_answers_408(gate: str) -> None:
    async with local_proxy(body_timeout_s=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /gate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        status, _, body = await asyncio.wait_for(read_answer(reader), 10)
        assert status == 408
        assert json.loads(body)["error"] == "RequestTimeout"
        writer.close()


async def test_bodies_beyond_max_queued_bytes_answer_503_with_retry_after(gate: str) -> None:
    import aiohttp

    async with local_proxy(max_queued_bytes=100_000) as (proxy, port):
        url = f"http://127.0.0.1:{port}/gate"
        async with aiohttp.ClientSession() as session:

            async def post(query: str) -> tuple[int, dict[str, str], bytes]:
                async with session.post(url + query, data=b"x" * 40_000) as resp:
                    return resp.status, dict(resp.headers), await resp.read()

            held = [asyncio.ensure_future(post("?wait=bytes-go")) for _ in range(2)]
            await until(lambda: proxy._queued_bytes == 80_000)
            status, headers, body = await post("")
            assert status == 503, body
            assert headers["Retry-After"] == "1"
            assert "max_queued_bytes=100000" in json.loads(body)["message"]
            touch(os.path.join(gate, "bytes-go"))
            assert [(s, json.loads(b)) for s, _, b in await asyncio.gather(*held)] == [
                (200, {"n": 40_000}),
                (200, {"n": 40_000}),
            ]
            assert proxy._queued_bytes == 0  # released: the next body is taken
            status, _, body = await post("")
            assert (status, json.loads(body)) == (200, {"n": 40_000})


async def test_a_body_over_max_body_bytes_answers_413(gate: str) -> None:
    import aiohttp

    async with local_proxy(max_body_bytes=1000) as (_, port), aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/gate", data=b"x" * 1001) as resp:
            assert resp.status == 413
        async with s.post(f"http://127.0.0.1:{port}/gate", data=b"x" * 1000) as resp:
            assert resp.status == 200
            assert await resp.json() == {"n": 1000}


async def test_connections_beyond_max_connections_are_answered_503_and_closed(
    gate: str,
) -> None:
    async with local_proxy(max_connections=2) as (proxy, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await until(lambda: len(proxy._server.connections) == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in answer
        for _, w in [*held, (reader, writer)]:
            w.close()
        # Once they are gone, connections are taken again.
        await until(lambda: len(proxy._server.connections) == 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await asyncio.wait_for(read_answer(reader), 10)
        assert status == 200
        writer.close()


def test_a_response_header_with_crlf_answers_500(gate: str, serve_cluster: str) -> None:
    status, headers, body = http(f"{serve_cluster}/gate?bad=1")
    assert status == 500
    assert "injected" not in headers
    assert json.loads(body)["error"] == "InvalidResponse"


async def test_exception_text_is_hidden_when_asked(gate: str, serve_cluster: str) -> None:
    # The shared proxy binds loopback: the text is shown (a developer's machine).
    status, _, body = http(f"{serve_cluster}/gate?fail=1")
    assert status == 500
    assert json.loads(body)["message"] == "secret detail 1234"
    import aiohttp

    async with (
        local_proxy(hide_exception_text=True) as (_, port),
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/gate?fail=1") as resp,
    ):
        assert resp.status == 500
        text = await resp.text()
    assert "secret detail" not in text
    assert json.loads(text)["error"] == "InternalServerError"


def test_exception_text_is_hidden_by_default_only_on_non_loopback_binds() -> None:
    assert not HTTPOptions(host="127.0.0.1").hides_exceptions()
    assert not HTTPOptions(host="::1").hides_exceptions()
    assert HTTPOptions(host="0.0.0.0").hides_exceptions()
    assert not HTTPOptions(host="0.0.0.0", hide_exception_text=False).hides_exceptions()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a source address
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") else addr


async def test_routes_answer_loopback_clients_only_and_errors_are_hidden_on_open_binds(
    gate: str,
) -> None:
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    import aiohttp

    async with local_proxy(host="0.0.0.0") as (_, port), aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/-/routes") as resp:
            assert resp.status == 200
            assert (await resp.json())["/gate"] == "gate"
        async with s.get(f"http://{addr}:{port}/-/routes") as resp:
            assert resp.status == 404
        async with s.get(f"http://{addr}:{port}/gate?fail=1") as resp:
            assert resp.status == 500
            assert "secret detail" not in await resp.text()


async def test_a_draining_proxy_finishes_requests_in_flight_and_refuses_new_ones(
    gate: str,
) -> None:
    import aiohttp

    async with local_proxy() as (proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # kept alive
        writer.write(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_answer(reader), 10))[0] == 200
        async with aiohttp.ClientSession() as session:

            async def held() -> tuple[int, bytes]:
                async with session.get(f"http://127.0.0.1:{port}/gate?wait=drain-go") as resp:
                    return resp.status, await resp.read()

            in_flight = asyncio.ensure_future(held())
            await until(lambda: proxy._inflight == 1)
            stopping = asyncio.ensure_future(proxy.stop(drain_s=30))
            await until(lambda: proxy._draining)
            writer.write(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = await asyncio.wait_for(read_answer(reader), 10)
            assert status == 503
            assert headers["retry-after"] == "1"
            assert json.loads(body)["error"] == "ProxyDraining"
            assert not stopping.done()  # it waits for the request in flight
            touch(os.path.join(gate, "drain-go"))
            assert await in_flight == (200, b'{"n":0}')
            await asyncio.wait_for(stopping, 10)
        writer.close()


def test_http_options_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="port"):
        HTTPOptions(port=70000)
    with pytest.raises(ValueError, match="header_timeout_s"):
        HTTPOptions(header_timeout_s=float("nan"))
    with pytest.raises(ValueError, match="max_connections"):
        HTTPOptions(max_connections=0)
    with pytest.raises(ValueError, match="unknown http_options"):
        HTTPOptions.parse({"prot": 1})
    with pytest.raises(ValueError, match="proxy_location"):
        serve.config.ProxyLocation.parse("Everywhere")
