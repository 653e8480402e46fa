"""Admission per replica (``max_ongoing_requests`` across every caller) and retries of
requests that did not run on a replica that died."""

from __future__ import annotations

import asyncio
import json

import pytest

import runtime
from runtime import serve

from .conftest import http

pytestmark = pytest.mark.timeout(60)


@serve.deployment(max_ongoing_requests=1, num_replicas=1)
class Peak:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def __call__(self, request: serve.Request | None = None) -> int:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.now -= 1
        return self.peak

    async def get_peak(self) -> int:
        return self.peak


async def test_max_ongoing_requests_holds_across_every_caller(serve_cluster: str) -> None:
    import aiohttp

    handle = serve.run(Peak.bind(), name="peak", route_prefix="/peak")
    # Two routers (this driver's and the proxy's), each sending 5 at once: without a cap
    # held by the replica itself, it would run one request of each router at a time.
    async with aiohttp.ClientSession() as session:

        async def over_http() -> int:
            async with session.get(f"{serve_cluster}/peak") as resp:
                assert resp.status == 200, await resp.text()
                return int(await resp.text())

        results = await asyncio.gather(
            *(handle.remote() for _ in range(5)), *(over_http() for _ in range(5))
        )
    assert len(results) == 10
    assert await handle.get_peak.remote() == 1


@serve.deployment(num_replicas=2)
class Counter:
    async def __call__(self, request: serve.Request) -> str:
        return "ok"


def test_a_post_sent_to_a_replica_that_was_already_dead_goes_to_another(
    serve_cluster: str,
) -> None:
    serve.run(Counter.bind(), name="counter", route_prefix="/counter")
    controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
    tags = list(runtime.get(controller.replica_pids.remote("counter", "Counter")))
    assert len(tags) == 2
    victim = runtime.get_actor(f"SERVE_REPLICA::{tags[0]}", namespace="serve")
    runtime.kill(victim)
    # The proxy's router still lists it until it learns otherwise: a POST sent there is
    # refused as "actor dead" (it did not run) and is sent to the other replica.
    answers = [http(f"{serve_cluster}/counter", method="POST", body=b"{}") for _ in range(10)]
    assert [(status, body) for status, _, body in answers] == [(200, b"ok")] * 10


def test_serve_start_accepts_rays_option_objects(serve_cluster: str) -> None:
    # Serve is running: start() keeps it, whatever the options (as in Ray).
    serve.start(
        proxy_location=serve.ProxyLocation.HeadOnly,
        http_options=serve.HTTPOptions(host="127.0.0.1", port=0),
        grpc_options=serve.gRPCOptions(),
    )
    status, _, body = http(f"{serve_cluster}/-/routes")
    assert status == 200
    assert isinstance(json.loads(body), dict)


async def test_the_controller_sleeps_when_idle_and_reacts_to_a_deploy_at_once(
    serve_cluster: str,
) -> None:
    controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
    before = await controller.loop_iterations.remote()
    await asyncio.sleep(2.0)
    idle = await controller.loop_iterations.remote() - before
    # Woken by the proxy check (1 s) and health checks, not a 50 ms tick (40 in 2 s).
    assert idle <= 8, idle

    @serve.deployment
    def quick() -> str:
        return "up"

    loop = asyncio.get_running_loop()
    start = loop.time()
    handle = await asyncio.to_thread(serve.run, quick.bind(), name="quick", route_prefix=None)
    assert await handle.remote() == "up"
    assert loop.time() - start < 10
