"""A replica's process killed with SIGKILL mid-traffic: every GET is served (those in flight
on it are retried elsewhere), and the replica is replaced (its own mesh of three nodes, as
the test kills one)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

import runtime
from runtime import serve

from .conftest import http_json
from .test_lifecycle import _eventually


@pytest.mark.timeout(120)
def test_killing_a_replica_process_mid_traffic_fails_cleanly_and_replaces_it(
    tmp_path: object,
) -> None:
    runtime.init(num_cpus=3)
    try:
        serve.start(http_options={"port": 0})
        url = f"http://127.0.0.1:{serve.status().http_port}/victim"

        @serve.deployment(num_replicas=2)
        class Victim:
            async def __call__(self, request: serve.Request) -> dict:
                return {"pid": os.getpid()}

        serve.run(Victim.bind(), name="victim", route_prefix="/victim")
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        pids = set(runtime.get(controller.replica_pids.remote("victim", "Victim")).values())
        assert len(pids) == 2
        victim = max(pids)
        seen: list[tuple[int, dict]] = []

        async def traffic() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as session:

                async def client() -> None:
                    for _ in range(150):
                        async with session.get(url) as resp:
                            body = await resp.read()
                            seen.append((resp.status, json.loads(body)))

                tasks = [asyncio.ensure_future(client()) for _ in range(4)]
                for _ in range(1000):
                    if len(seen) >= 40:
                        break
                    await asyncio.sleep(0.01)
                os.kill(victim, signal.SIGKILL)
                await asyncio.gather(*tasks)

        asyncio.run(traffic())
        # GET is idempotent: one that was running on the killed replica is sent to the
        # other one, so none is lost.
        assert len(seen) == 600
        assert {s for s, _ in seen} == {200}, [b for s, b in seen if s != 200][:3]

        def replaced() -> bool:
            now = list(runtime.get(controller.replica_pids.remote("victim", "Victim")).values())
            return len(now) == 2 and victim not in now

        _eventually(replaced, timeout=60, what="a replacement replica")
        answers = [http_json(url)["pid"] for _ in range(10)]
        assert victim not in answers
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()


@pytest.mark.timeout(120)
def test_serve_works_again_after_the_runtime_restarts_without_serve_shutdown() -> None:
    @serve.deployment
    def plus_one(x: int) -> int:
        return x + 1

    for i in range(2):
        runtime.init(num_cpus=1)
        try:
            serve.start(http_options={"port": 0})
            handle = serve.run(plus_one.bind(), name="p", route_prefix=None)
            assert handle.remote(i).result(timeout_s=30) == i + 1
        finally:
            runtime.shutdown()  # no serve.shutdown(): the next session must not see stale state
