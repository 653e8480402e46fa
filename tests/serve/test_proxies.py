"""A proxy on every node (``proxy_location="EveryNode"``): the node processes of this host
share one port, each routes straight to the replicas, and a node's death leaves the others
serving (its own mesh, as the test kills a node)."""

from __future__ import annotations

import os
import signal

import pytest

import runtime
from runtime import serve

from .conftest import http
from .test_lifecycle import _eventually


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
        nodes = [n for n in runtime.nodes() if n["Alive"] and not n["IsDriver"]]

        def all_up() -> bool:
            return len(runtime.get(controller.proxies.remote())) == len(nodes)

        _eventually(all_up, timeout=60, what="a proxy on every node")
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

        def forgotten() -> bool:
            live = runtime.get(controller.proxies.remote())
            return len(live) == len(nodes) - 1

        _eventually(forgotten, timeout=60, what="the dead node's proxy forgotten")
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
