"""Replica lifecycles: autoscaling (to zero and back), health checks, a killed replica
process, graceful shutdown, and a controller that restarts with its state."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable

import pytest

import runtime
from runtime import serve

from .conftest import exists, http, http_json, touch, until_exists

pytestmark = pytest.mark.timeout(90)


def _eventually(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.02)


def _running(app: str, dep: str) -> int:
    st = serve.status().applications.get(app)
    if st is None or dep not in st.deployments:
        return -1
    return st.deployments[dep].replica_states.get("RUNNING", 0)


@serve.deployment(
    max_ongoing_requests=10,
    autoscaling_config={
        "min_replicas": 0,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 0.5,
    },
)
class Scaled:
    async def __call__(self, request: serve.Request) -> dict:
        gate = request.query_params.get("gate")
        if gate:
            await until_exists(gate)
        return {"pid": os.getpid()}


def test_autoscaling_from_zero_up_under_load_and_back_to_zero(
    serve_cluster: str, tmp_path: object
) -> None:
    serve.run(Scaled.bind(), name="scaled", route_prefix="/scaled")
    assert _running("scaled", "Scaled") == 0
    assert http(f"{serve_cluster}/scaled")[0] == 200  # a request brings up a replica
    gate = os.path.join(str(tmp_path), "gate")

    async def load() -> list[int]:
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.get(f"{serve_cluster}/scaled?gate={gate}") as resp:
                    await resp.read()
                    return resp.status

            tasks = [asyncio.ensure_future(one()) for _ in range(6)]
            for _ in range(3000):
                if _running("scaled", "Scaled") == 2:
                    break
                await asyncio.sleep(0.02)
            touch(gate)
            return await asyncio.gather(*tasks)

    assert asyncio.run(load()) == [200] * 6
    assert serve.status().applications["scaled"].deployments["Scaled"].target_replicas >= 1
    _eventually(lambda: _running("scaled", "Scaled") == 0, what="scale down to zero")
    assert http(f"{serve_cluster}/scaled")[0] == 200  # and back up on demand
    serve.delete("scaled")


@serve.deployment(num_replicas=1, health_check_period_s=0.1, health_check_timeout_s=2)
class Fragile:
    def __init__(self, marker_dir: str) -> None:
        self.dir = marker_dir

    def check_health(self) -> None:
        if exists(os.path.join(self.dir, f"sick-{id(self)}")):
            raise RuntimeError("this replica is sick")

    async def __call__(self, request: serve.Request) -> dict:
        return {"id": id(self)}


def test_failing_health_check_replaces_the_replica(serve_cluster: str, tmp_path: object) -> None:
    d = str(tmp_path)
    serve.run(Fragile.bind(d), name="fragile", route_prefix="/fragile")
    first = http_json(f"{serve_cluster}/fragile")["id"]
    touch(os.path.join(d, f"sick-{first}"))
    _eventually(lambda: http_json(f"{serve_cluster}/fragile")["id"] != first, what="a new replica")
    assert _running("fragile", "Fragile") == 1
    serve.delete("fragile")


@serve.deployment(graceful_shutdown_timeout_s=20)
class Lingering:
    async def __call__(self, request: serve.Request) -> str:
        touch(request.query_params["started"])
        await until_exists(request.query_params["gate"])
        return "completed"


async def test_delete_waits_for_requests_in_flight(serve_cluster: str, tmp_path: object) -> None:
    import aiohttp

    d = str(tmp_path)
    started, gate = os.path.join(d, "started"), os.path.join(d, "gate")
    await asyncio.to_thread(serve.run, Lingering.bind(), name="linger", route_prefix="/linger")
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(
            session.get(f"{serve_cluster}/linger?started={started}&gate={gate}")
        )
        await until_exists(started)
        deleting = asyncio.ensure_future(asyncio.to_thread(serve.delete, "linger"))
        for _ in range(500):  # the route is gone at once; the replica drains meanwhile
            if "linger" not in serve.status().applications or deleting.done():
                break
            if serve.status().applications["linger"].status == "DELETING":
                break
            await asyncio.sleep(0.01)
        assert not deleting.done()
        touch(gate)
        async with await request as resp:
            assert (resp.status, await resp.read()) == (200, b"completed")
        await deleting
    assert "linger" not in serve.status().applications


def test_controller_restart_recovers_apps_and_keeps_replicas(serve_cluster: str) -> None:
    @serve.deployment(num_replicas=2)
    class Survivor:
        async def __call__(self, request: serve.Request) -> dict:
            return {"pid": os.getpid(), "id": id(self)}

    serve.run(Survivor.bind(), name="survivor", route_prefix="/survivor")
    before = {json.dumps(http_json(f"{serve_cluster}/survivor")) for _ in range(20)}
    controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
    runtime.kill(controller, no_restart=False)
    # Traffic keeps flowing while the controller is gone: it is not on the request path.
    for _ in range(10):
        assert http(f"{serve_cluster}/survivor")[0] == 200
    _eventually(lambda: "survivor" in serve.status().applications, what="restored state")
    st = serve.status().applications["survivor"]
    assert st.status == "RUNNING"
    after = {json.dumps(http_json(f"{serve_cluster}/survivor")) for _ in range(20)}
    assert after <= before  # the very same replicas, not new ones
    handle = serve.run(Survivor.options(num_replicas=1).bind(), name="survivor", route_prefix="/s")
    assert handle.remote(None).result(timeout_s=30)["pid"] > 0
    assert http(f"{serve_cluster}/s")[0] == 200
    serve.delete("survivor")
