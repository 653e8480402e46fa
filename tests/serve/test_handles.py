"""Handles: composition, chaining unawaited responses, streaming, cancellation, batching,
backpressure, user_config, and converging deploys."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from runtime import serve

from .conftest import exists, fetch_many, http, http_json, touch, until_exists

pytestmark = pytest.mark.timeout(60)


@serve.deployment
class Add:
    def __init__(self, n: int) -> None:
        self.n = n

    async def __call__(self, x: int) -> int:
        return x + self.n


@serve.deployment
class Double:
    def __call__(self, x: int) -> int:  # a sync method: runs on a thread of the replica
        return x * 2


@serve.deployment
class Pipeline:
    def __init__(self, first: serve.DeploymentHandle, second: serve.DeploymentHandle) -> None:
        self.first = first
        self.second = second

    async def __call__(self, request: serve.Request) -> dict:
        x = int(request.query_params["x"])
        # The first response goes, unawaited, into the second call.
        return {"result": await self.second.remote(self.first.remote(x))}

    async def fan_out(self, x: int) -> list[int]:
        return list(await asyncio.gather(self.first.remote(x), self.second.remote(x)))


def test_pipeline_over_http_and_fan_out_over_handles(serve_cluster: str) -> None:
    app = Pipeline.bind(Add.bind(10), Double.bind())
    handle = serve.run(app, name="pipe", route_prefix="/pipe")
    assert http_json(f"{serve_cluster}/pipe?x=1") == {"result": 22}
    assert handle.fan_out.remote(5).result() == [15, 10]
    st = serve.status().applications["pipe"]
    assert st.status == "RUNNING"
    assert set(st.deployments) == {"Pipeline", "Add", "Double"}
    assert serve.get_app_handle("pipe").fan_out.remote(1).result(timeout_s=30) == [11, 2]


def test_unawaited_response_passes_between_driver_calls(serve_cluster: str) -> None:
    serve.run(Add.bind(1), name="adder", route_prefix=None)
    add = serve.get_app_handle("adder")
    r1 = add.remote(1)
    r2 = add.remote(r1)
    r3 = add.remote(r2)
    assert r3.result(timeout_s=30) == 4


async def test_handles_work_on_the_callers_event_loop(serve_cluster: str) -> None:
    serve.run(Add.bind(100), name="adder-async", route_prefix=None)
    add = serve.get_app_handle("adder-async")
    results = await asyncio.gather(*(add.remote(i) for i in range(50)))
    assert results == [i + 100 for i in range(50)]
    assert await add.remote(add.remote(0)) == 200


def test_application_error_reaches_the_handle_caller_with_its_type(serve_cluster: str) -> None:
    @serve.deployment
    class Fails:
        def __call__(self, x: int) -> int:
            raise KeyError(f"no {x}")

    handle = serve.run(Fails.bind(), name="fails", route_prefix=None)
    with pytest.raises(KeyError, match="no 3"):
        handle.remote(3).result()
    serve.delete("fails")


@serve.deployment
class Streamer:
    async def __call__(self, request: serve.Request):
        n = int(request.query_params.get("n", "3"))
        for i in range(n):
            yield f"chunk{i}\n"
            await asyncio.sleep(0.01)

    async def numbers(self, n: int):
        for i in range(n):
            yield i

    async def gated(self, gate: str):
        yield "first"
        await until_exists(gate)
        yield "second"


def test_streamed_http_response_and_stream_handle(serve_cluster: str, tmp_path: object) -> None:
    handle = serve.run(Streamer.bind(), name="stream", route_prefix="/stream")
    status, headers, body = http(f"{serve_cluster}/stream?n=4")
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert body == b"chunk0\nchunk1\nchunk2\nchunk3\n"
    assert list(handle.options(stream=True).numbers.remote(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="stream=True"):
        handle.numbers.remote(2).result()


async def test_stream_chunks_arrive_before_the_generator_ends(
    serve_cluster: str, tmp_path: object
) -> None:
    import aiohttp

    serve.run(Streamer.bind(), name="stream2", route_prefix=None)
    handle = serve.get_app_handle("stream2")
    gate = os.path.join(str(tmp_path), "gate")
    gen = handle.options(stream=True, method_name="gated").remote(gate)
    assert await gen.__anext__() == "first"  # the generator is still blocked on the gate
    touch(gate)
    assert [x async for x in gen] == ["second"]

    @serve.deployment
    class GatedHTTP:
        async def __call__(self, request: serve.Request):
            yield "first;"
            await until_exists(request.query_params["gate"])
            yield "second;"

    serve.run(GatedHTTP.bind(), name="gated-http", route_prefix="/gated")
    gate2 = gate + "2"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{serve_cluster}/gated?gate={gate2}") as resp,
    ):
        first = await resp.content.readuntil(b";")
        assert first == b"first;"
        touch(gate2)
        assert await resp.content.read() == b"second;"


@serve.deployment(max_ongoing_requests=100)
class Slow:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    async def __call__(self, request: serve.Request) -> str:
        tag = request.query_params["tag"]
        touch(os.path.join(self.dir, f"{tag}.started"))
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            touch(os.path.join(self.dir, f"{tag}.cancelled"))
            raise
        return "finished"

    async def work(self, tag: str) -> str:
        touch(os.path.join(self.dir, f"{tag}.started"))
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            touch(os.path.join(self.dir, f"{tag}.cancelled"))
            raise
        return "finished"


def _wait_for(path: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


async def test_client_disconnect_cancels_the_replicas_work(
    serve_cluster: str, tmp_path: object
) -> None:
    import aiohttp

    d = str(tmp_path)
    serve.run(Slow.bind(d), name="slow", route_prefix="/slow")
    async with aiohttp.ClientSession() as session:
        task = asyncio.ensure_future(session.get(f"{serve_cluster}/slow?tag=http"))
        await asyncio.to_thread(_wait_for, os.path.join(d, "http.started"))
        task.cancel()  # the client goes away: its connection closes
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.to_thread(_wait_for, os.path.join(d, "http.cancelled"))


@serve.deployment
class Outer:
    def __init__(self, inner: serve.DeploymentHandle) -> None:
        self.inner = inner

    async def __call__(self, request: serve.Request) -> str:
        return await self.inner.work.remote(request.query_params["tag"])


async def test_client_disconnect_cancels_down_the_call_chain(
    serve_cluster: str, tmp_path: object
) -> None:
    import aiohttp

    d = str(tmp_path)
    await asyncio.to_thread(
        serve.run, Outer.bind(Slow.bind(d)), name="chain", route_prefix="/chain"
    )
    async with aiohttp.ClientSession() as session:
        task = asyncio.ensure_future(session.get(f"{serve_cluster}/chain?tag=inner"))
        await until_exists(os.path.join(d, "inner.started"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await until_exists(os.path.join(d, "inner.cancelled"))  # in the second deployment


def test_response_cancel_cancels_the_replicas_work(serve_cluster: str, tmp_path: object) -> None:
    d = str(tmp_path)
    handle = serve.run(Slow.bind(d), name="slow-handle", route_prefix=None)
    resp = handle.work.remote("handle")
    _wait_for(os.path.join(d, "handle.started"))
    resp.cancel()
    _wait_for(os.path.join(d, "handle.cancelled"))


@serve.deployment(max_ongoing_requests=1, max_queued_requests=2)
class OneAtATime:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    async def __call__(self, request: serve.Request) -> str:
        await until_exists(os.path.join(self.dir, "go"))
        return "done"

    async def call(self) -> str:
        return await self.__call__(None)  # type: ignore[arg-type]


def test_beyond_capacity_requests_queue_then_get_503_and_backpressure_error(
    serve_cluster: str, tmp_path: object
) -> None:
    d = str(tmp_path)
    handle = serve.run(OneAtATime.bind(d), name="bp", route_prefix="/bp")
    held = [handle.call.remote() for _ in range(3)]  # 1 running + 2 queued in this router
    with pytest.raises(serve.BackPressureError, match="max_queued_requests=2"):
        handle.call.remote().result(timeout_s=30)
    # The proxy's router is separate: 1 running + 2 queued there, then 503s.
    answers = []

    async def flood() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                async with session.get(f"{serve_cluster}/bp") as resp:
                    answers.append((resp.status, await resp.read()))

            tasks = [asyncio.ensure_future(one()) for _ in range(6)]
            for _ in range(3000):  # 3 of the 6 are refused at once
                if len(answers) >= 3:
                    break
                await asyncio.sleep(0.01)
            touch(os.path.join(d, "go"))
            await asyncio.gather(*tasks)

    asyncio.run(flood())
    statuses = sorted(s for s, _ in answers)
    assert statuses == [200, 200, 200, 503, 503, 503]
    refused = [json.loads(b) for s, b in answers if s == 503]
    assert all(r["error"] == "BackPressureError" for r in refused)
    assert [r.result(timeout_s=30) for r in held] == ["done"] * 3


@serve.deployment(max_ongoing_requests=32)
class Batched:
    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.5)
    async def __call__(self, xs: list[int]) -> list[dict]:
        if -1 in xs:
            raise ValueError("a bad item in the batch")
        return [{"x": x, "batch_size": len(xs)} for x in xs]


async def test_batch_groups_concurrent_calls(serve_cluster: str) -> None:
    handle = serve.run(Batched.bind(), name="batched", route_prefix=None)
    results = await asyncio.gather(*(handle.remote(i) for i in range(8)))
    assert [r["x"] for r in results] == list(range(8))
    assert max(r["batch_size"] for r in results) == 4
    assert sum(1 for r in results if r["batch_size"] > 1) >= 4
    # A failing batch fails each of its callers.
    outcomes = await asyncio.gather(handle.remote(-1), handle.remote(5), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, ValueError)]
    assert failed and all("bad item" in str(e) for e in failed)


@serve.deployment(user_config={"greeting": "hello"})
class Configurable:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.greeting = "unset"

    def reconfigure(self, config: dict) -> None:
        self.greeting = config["greeting"]

    async def __call__(self, request: serve.Request) -> dict:
        return {"greeting": self.greeting, "pid": self.pid, "id": id(self)}


def test_user_config_is_applied_without_restarting_replicas(serve_cluster: str) -> None:
    serve.run(Configurable.bind(), name="cfg", route_prefix="/cfg")
    first = http_json(f"{serve_cluster}/cfg")
    assert first["greeting"] == "hello"
    serve.run(
        Configurable.options(user_config={"greeting": "bonjour"}).bind(),
        name="cfg",
        route_prefix="/cfg",
    )
    deadline = time.monotonic() + 20
    while (now := http_json(f"{serve_cluster}/cfg"))["greeting"] != "bonjour":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (now["pid"], now["id"]) == (first["pid"], first["id"])  # the same replica


@serve.deployment
class Version:
    def __init__(self, version: str) -> None:
        self.version = version

    async def __call__(self, request: serve.Request) -> dict:
        return {"version": self.version, "id": id(self)}


@serve.deployment
class Other:
    async def __call__(self, request: serve.Request) -> str:
        return "other"


@serve.deployment
class Front:
    def __init__(self, a: serve.DeploymentHandle, b: serve.DeploymentHandle | None = None):
        self.a = a
        self.b = b

    async def __call__(self, request: serve.Request) -> dict:
        return {"a": await self.a.remote(request)}


def test_redeploy_with_changed_code_switches_traffic_with_no_failed_request(
    serve_cluster: str,
) -> None:
    serve.run(Version.bind("v1"), name="roll", route_prefix="/roll")
    assert http_json(f"{serve_cluster}/roll")["version"] == "v1"

    async def traffic(stop: asyncio.Event, seen: list[tuple[int, bytes]]) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                async with session.get(f"{serve_cluster}/roll") as resp:
                    seen.append((resp.status, await resp.read()))

    async def main() -> list[tuple[int, bytes]]:
        stop = asyncio.Event()
        seen: list[tuple[int, bytes]] = []
        clients = [asyncio.ensure_future(traffic(stop, seen)) for _ in range(4)]
        await asyncio.to_thread(serve.run, Version.bind("v2"), name="roll", route_prefix="/roll")
        for _ in range(3000):
            if any(json.loads(b)["version"] == "v2" for s, b in seen[-4:] if s == 200):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the old replica drains and stops meanwhile
        stop.set()
        await asyncio.gather(*clients)
        return seen

    seen = asyncio.run(main())
    assert seen and all(status == 200 for status, _ in seen)
    versions = [json.loads(b)["version"] for _, b in seen]
    assert versions[-1] == "v2"
    assert http_json(f"{serve_cluster}/roll")["version"] == "v2"


def test_deploy_converges_keeping_unchanged_replicas_and_dropping_removed(
    serve_cluster: str,
) -> None:
    serve.run(Front.bind(Version.bind("same"), Other.bind()), name="conv", route_prefix="/conv")
    handle = serve.get_deployment_handle("Version", "conv")
    before = handle.remote(None).result()
    serve.deploy(Front.bind(Version.bind("same")), name="conv", route_prefix="/conv")
    deadline = time.monotonic() + 30
    while "Other" in serve.status().applications["conv"].deployments:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    after = handle.remote(None).result()
    assert after == before  # the same replica object still serves
    assert http_json(f"{serve_cluster}/conv")["a"]["version"] == "same"
    assert serve.status().applications["conv"].status == "RUNNING"


def test_failing_constructor_fails_the_deploy_with_its_error(serve_cluster: str) -> None:
    @serve.deployment
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("cannot load the model")

    with pytest.raises(RuntimeError, match="cannot load the model"):
        serve.run(Broken.bind(), name="broken", route_prefix=None)
    assert serve.status().applications["broken"].status == "DEPLOY_FAILED"
    serve.delete("broken")


def test_many_concurrent_http_requests_all_succeed(serve_cluster: str) -> None:
    serve.run(Version.bind("load"), name="load", route_prefix="/load")
    answers = fetch_many([f"{serve_cluster}/load"] * 300, concurrency=64)
    assert [s for s, _ in answers] == [200] * 300


@serve.deployment(num_replicas=2)
class Tagged:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def __call__(self) -> str:
        return self.tag


def test_after_a_redeploy_returns_no_request_runs_on_the_old_version_even_if_routers_hear_late(
    serve_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.serve import _router

    handle = serve.run(Tagged.bind("old"), name="tagged", route_prefix=None)
    assert handle.remote().result(timeout_s=30) == "old"
    # This process's routers take each replica list from the controller a second late, as
    # a router on a loaded node may: right after serve.run they still name the old replicas.
    update = _router.Router.update

    def late(self: _router.Router, info: object) -> None:
        self.loop.call_later(1.0, update, self, info)

    monkeypatch.setattr(_router.Router, "update", late)
    serve.run(Tagged.bind("new"), name="tagged", route_prefix=None)
    # The old replicas refuse (they were told before serve.run returned); each request goes
    # on to a new one.
    answers = [handle.remote() for _ in range(8)]
    assert [a.result(timeout_s=30) for a in answers] == ["new"] * 8
