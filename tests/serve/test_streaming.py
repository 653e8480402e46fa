"""Streaming end to end on core's streaming calls: chunked HTTP and Server-Sent Events from
generator methods, a FastAPI StreamingResponse sent chunk by chunk, and a client that goes
away cancelling the generator and the handle calls it made."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse as FastAPIStreamingResponse

from runtime import serve

from .conftest import exists, touch, until_exists

pytestmark = pytest.mark.timeout(60)


@serve.deployment(max_ongoing_requests=20)
class Child:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    async def hang(self, tag: str) -> None:
        touch(os.path.join(self.dir, f"{tag}.child-started"))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            touch(os.path.join(self.dir, f"{tag}.child-cancelled"))
            raise


@serve.deployment(max_ongoing_requests=20)
class Events:
    def __init__(self, marker_dir: str, child: serve.DeploymentHandle) -> None:
        self.dir = marker_dir
        self.child = child

    async def __call__(self, request: serve.Request) -> object:
        q = request.query_params
        tag = q.get("tag", "x")
        if q.get("kind") == "sse":
            return serve.StreamingResponse(
                self.ticks(tag, sse=True), media_type="text/event-stream"
            )
        if q.get("kind") == "hang":
            return self.hanging(tag)
        return self.ticks(tag, sse=False)

    async def ticks(self, tag: str, sse: bool) -> AsyncIterator[str]:
        for i in range(3):
            yield f"data: {i}\n\n" if sse else f"tick {i};"
            # The next item comes only once the client has seen this one.
            await until_exists(os.path.join(self.dir, f"{tag}.seen{i}"))

    async def hanging(self, tag: str) -> AsyncIterator[str]:
        try:
            yield "first;"
            await self.child.hang.remote(tag)  # never ends by itself
            yield "never"
        finally:
            touch(os.path.join(self.dir, f"{tag}.generator-closed"))


@pytest.fixture(scope="module")
def events(serve_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("events"))
    serve.run(Events.bind(d, Child.bind(d)), name="events", route_prefix="/events")
    return d


async def _read_each_chunk_before_the_next_is_made(url: str, d: str, tag: str) -> list[bytes]:
    import aiohttp

    got = []
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        headers = dict(resp.headers)
        buffer = b""
        for i in range(3):
            while (b"tick %d;" % i) not in buffer and (b"data: %d\n\n" % i) not in buffer:
                data = await asyncio.wait_for(resp.content.readany(), 20)
                assert data, "the stream ended early"
                buffer += data
            got.append(buffer)
            touch(os.path.join(d, f"{tag}.seen{i}"))  # only now may the next item be made
        assert await resp.content.read() == b""
    return [headers.get("Content-Type", "").encode(), *got]


async def test_a_generator_streams_chunk_by_chunk_over_http(
    events: str, serve_cluster: str
) -> None:
    got = await _read_each_chunk_before_the_next_is_made(
        f"{serve_cluster}/events?tag=chunked", events, "chunked"
    )
    assert got[0].startswith(b"text/plain")
    assert got[-1] == b"tick 0;tick 1;tick 2;"


async def test_server_sent_events_stream_event_by_event(events: str, serve_cluster: str) -> None:
    got = await _read_each_chunk_before_the_next_is_made(
        f"{serve_cluster}/events?tag=sse&kind=sse", events, "sse"
    )
    assert got[0] == b"text/event-stream"
    assert got[-1] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_a_client_that_goes_away_cancels_the_generator_and_its_handle_calls(
    events: str, serve_cluster: str
) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"{serve_cluster}/events?tag=gone&kind=hang")
        assert await asyncio.wait_for(resp.content.readany(), 20) == b"first;"
        await until_exists(os.path.join(events, "gone.child-started"))
        resp.close()  # the client goes away mid-stream
    await until_exists(os.path.join(events, "gone.child-cancelled"))
    await until_exists(os.path.join(events, "gone.generator-closed"))


async def test_cancelling_a_handle_stream_closes_its_generator(events: str) -> None:
    handle = serve.get_app_handle("events").options(stream=True, method_name="hanging")
    gen = handle.remote("handle-gone")
    assert await gen.__anext__() == "first;"
    await until_exists(os.path.join(events, "handle-gone.child-started"))
    gen.cancel()
    await until_exists(os.path.join(events, "handle-gone.generator-closed"))
    await until_exists(os.path.join(events, "handle-gone.child-cancelled"))


app = FastAPI()


@serve.deployment
@serve.ingress(app)
class FastStream:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    @app.get("/ticks")
    def ticks(self) -> FastAPIStreamingResponse:
        async def body() -> AsyncIterator[str]:
            for i in range(3):
                yield f"tick {i};"
                await until_exists(os.path.join(self.dir, f"fastapi.seen{i}"))

        return FastAPIStreamingResponse(body(), media_type="text/plain")


async def test_a_fastapi_streaming_response_is_sent_chunk_by_chunk(
    serve_cluster: str, tmp_path: object
) -> None:
    d = str(tmp_path)
    serve.run(FastStream.bind(d), name="faststream", route_prefix="/fast")
    got = await _read_each_chunk_before_the_next_is_made(
        f"{serve_cluster}/fast/ticks", d, "fastapi"
    )
    assert got[-1] == b"tick 0;tick 1;tick 2;"
    assert not exists(os.path.join(d, "fastapi.seen3"))
