"""A proxy on every node (``proxy_location="EveryNode"``): the node processes of this host
share one port, each routes straight to the replicas, and a node's death leaves the others
serving (its own mesh, as the test kills a node)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

import runtime
from runtime import serve

from .conftest import http
from .test_lifecycle import _eventually


def _work_nodes() -> list[dict[str, Any]]:
    """The live node processes that host work (not drivers, not the head: it hosts no user
    code, so no proxy or replica goes there)."""
    return [n for n in runtime.nodes() if n["Alive"] and n["Schedulable"]]


@serve.deployment(num_replicas=2)
def where(request: serve.Request) -> dict:
    return {"pid": os.getpid()}


@pytest.mark.timeout(120)
def test_every_node_runs_a_proxy_on_the_shared_port_and_survives_a_node_death() -> None:
    runtime.init(num_cpus=3)
    try:
        serve.start(proxy_location="EveryNode", http_options={"port": 0})
        port = serve.status().http_port
        url = f"http://127.0.0.1:{port}/where"
        serve.run(where.bind(), name="where", route_prefix="/where")
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        nodes = _work_nodes()

        def all_up() -> bool:
            return len(runtime.get(controller.proxies.remote())) == len(nodes)

        _eventually(all_up, timeout=60, what="a proxy on every node")

        def all_up_now() -> bool:
            live = runtime.get(controller.proxies.remote())
            return set(live) == {n["NodeID"] for n in _work_nodes()}

        proxies = runtime.get(controller.proxies.remote())
        assert {runtime.get(p.ready.remote()) for p in proxies.values()} == {port}
        # Every request on a new connection: the kernel spreads them over the proxies.
        for _ in range(60):
            status, _, _ = http(url)
            assert status == 200
        stats = {n: runtime.get(p.stats.remote()) for n, p in proxies.items()}
        served = [s["served"] for s in stats.values()]
        assert sum(served) >= 60
        assert sum(1 for s in served if s > 0) >= 2, stats
        # Kill a node that runs a proxy (not the controller's): the others keep serving.
        controller_pid = runtime.get(controller.ping.remote())["pid"]
        workers = {n["Pid"] for n in nodes if n["Resources"].get("CPU")}  # not the head
        victim = next(
            s["pid"] for s in stats.values() if s["pid"] in workers and s["pid"] != controller_pid
        )
        os.kill(victim, signal.SIGKILL)
        # Connections that reach its socket before the process is gone are lost with it
        # (reset); from then on the kernel sends every new one to a living proxy.
        _eventually(lambda: _gone(victim), timeout=30, what="the killed node's exit")
        for i in range(30):
            try:
                status, _, body = http(url)
            except ConnectionError as exc:
                raise AssertionError(f"request {i} after the kill: {exc!r}") from exc
            assert status == 200, body

        victim_node = next(n["NodeID"] for n in nodes if n["Pid"] == victim)

        def forgotten() -> bool:
            return victim_node not in runtime.get(controller.proxies.remote())

        _eventually(forgotten, timeout=60, what="the dead node's proxy forgotten")
        # The local mesh starts a node process in the dead one's place: it gets a proxy too.
        _eventually(all_up_now, timeout=60, what="a proxy on every node again")
        live = runtime.get(controller.proxies.remote())
        assert victim not in {runtime.get(p.stats.remote())["pid"] for p in live.values()}
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()


def _gone(pid: int) -> bool:
    """Whether every thread of the process has exited (the last one closes its sockets)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
                    return False
    except (FileNotFoundError, ProcessLookupError):
        pass
    return True


@pytest.mark.timeout(120)
def test_killing_a_node_with_a_proxy_and_replicas_under_load_loses_only_its_connections() -> None:
    import asyncio

    import aiohttp

    runtime.init(num_cpus=3)
    try:
        serve.start(proxy_location="EveryNode", http_options={"port": 0})
        url = f"http://127.0.0.1:{serve.status().http_port}/where"
        serve.run(where.options(num_replicas=3).bind(), name="where", route_prefix="/where")
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        nodes = _work_nodes()
        replica_pids = set(runtime.get(controller.replica_pids.remote("where", "where")).values())
        proxy_pids = {
            runtime.get(p.stats.remote())["pid"]
            for p in runtime.get(controller.proxies.remote()).values()
        }
        controller_pid = runtime.get(controller.ping.remote())["pid"]
        workers = {n["Pid"] for n in nodes if n["Resources"].get("CPU")}
        # A worker node running a proxy and a replica (not the controller).
        victim = next(iter((workers & proxy_pids & replica_pids) - {controller_pid}))
        ok: list[int] = []
        lost: list[str] = []
        other: list[tuple[int, bytes]] = []
        clients = 4

        async def until(check: Any, timeout: float = 60) -> None:
            for _ in range(int(timeout / 0.01)):
                if check():
                    return
                await asyncio.sleep(0.01)
            raise TimeoutError("the load generator stalled")

        async def load() -> None:
            # A new connection per request, so that the kernel spreads them over the proxies.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                stop = asyncio.Event()

                async def client() -> None:
                    while not stop.is_set():
                        try:
                            async with session.get(url) as resp:
                                body = await resp.read()
                                if resp.status == 200:
                                    ok.append(resp.status)
                                else:
                                    other.append((resp.status, body))
                        except aiohttp.ClientConnectionError as exc:
                            lost.append(type(exc).__name__)

                tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
                await until(lambda: len(ok) >= 100)
                os.kill(victim, signal.SIGKILL)
                await asyncio.to_thread(
                    _eventually, lambda: _gone(victim), 30, "the killed node's exit"
                )
                after = len(ok) + len(lost) + len(other)
                await until(lambda: len(ok) + len(lost) + len(other) >= after + 200)
                lost_before = len(lost)
                stop.set()
                await asyncio.gather(*tasks)
                assert len(lost) == lost_before  # none lost once the node was gone

        asyncio.run(load())
        # Lost: only requests on connections the dead proxy held when it died (each client
        # has one request out at a time); every other request was answered, and answered
        # 200 (GETs on the dead replicas were retried elsewhere).
        assert other == []
        assert len(lost) <= clients, lost
        assert set(lost) <= {"ServerDisconnectedError", "ClientOSError"}, lost
        assert len(ok) >= 300
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()


@pytest.mark.timeout(60)
def test_with_http_disabled_apps_run_and_answer_handles_without_a_proxy() -> None:
    runtime.init(num_cpus=2)
    try:
        serve.start(http_options={"disabled": True})
        handle = serve.run(where.bind(), name="where", route_prefix="/where")
        assert handle.remote(None).result(timeout_s=30)["pid"] > 0
        # A second app, and start() again with other options: the running instance keeps
        # its own (still no proxy).
        serve.start(http_options={"port": 0})
        other = serve.run(where.options(name="other").bind(), name="other", route_prefix="/o")
        assert other.remote(None).result(timeout_s=30)["pid"] > 0
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")
        assert runtime.get(controller.proxies.remote()) == {}
        assert serve.status().http_port is None
        assert serve.status().applications["other"].status == "RUNNING"
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()


@pytest.mark.timeout(120)
def test_max_replicas_per_node_spreads_the_replicas_and_holds_the_rest() -> None:
    runtime.init(num_cpus=3)
    try:
        serve.start(http_options={"port": 0})
        nodes = _work_nodes()
        spread = where.options(name="spread", num_replicas=len(nodes) + 1, max_replicas_per_node=1)
        serve.deploy(spread.bind(), name="spread", route_prefix=None)
        controller = runtime.get_actor("SERVE_CONTROLLER", namespace="serve")

        def pids() -> list[int]:
            return list(runtime.get(controller.replica_pids.remote("spread", "spread")).values())

        _eventually(lambda: len(pids()) == len(nodes), timeout=60, what="a replica per node")
        assert len(set(pids())) == len(nodes)  # one on each node

        # The one more it wants has no node to go to: it waits, and says why.
        def waiting() -> bool:
            st = serve.status().applications["spread"].deployments["spread"]
            return st.status == "UPDATING" and "max_replicas_per_node=1" in st.message

        _eventually(waiting, timeout=30, what="the deployment saying why it waits")
        assert len(pids()) == len(nodes)
        with pytest.raises(ValueError, match="max_replicas_per_node"):
            where.options(max_replicas_per_node=0)
    finally:
        try:
            serve.shutdown()
        finally:
            runtime.shutdown()
