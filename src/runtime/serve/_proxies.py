"""The HTTP (and gRPC) proxies the controller keeps up: one for the cluster, or one per node.

With ``proxy_location="HeadOnly"`` one proxy actor (``SERVE_PROXY``) serves the cluster and is
restarted (on the same port) if it dies; with ``"EveryNode"`` one (``SERVE_PROXY::<node>``)
is pinned to each node, all on the same port, and a proxy dies with its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import runtime
from runtime.util import NodeAffinitySchedulingStrategy

from ._client import NAMESPACE, PROXY_NAME
from ._proxy import ServeProxy

log = logging.getLogger(__name__)

ProxyActor = runtime.remote(ServeProxy)


def _takes_work(node: dict[str, Any]) -> bool:
    """A live node process a proxy (or any replica) can be placed on: ``runtime.nodes()``'
    ``Schedulable`` (not a driver, not draining, not the head, not a process kept for one
    actor or one runtime_env)."""
    return bool(node["Alive"]) and bool(node["Schedulable"])


class ProxyKeeper:
    """The proxies' handles and state; ``keep`` runs about once a second."""

    def __init__(self, http: dict[str, Any], changed: Callable[[], None]) -> None:
        #: The HTTP options, shared with the controller (a port picked by port 0 is kept).
        self.http = http
        self._changed = changed
        self.proxy: Any = None
        self.node_proxies: dict[str, Any] = {}  # proxy_location=EveryNode: node id -> proxy
        self.nodes: list[str] = []  # alive nodes (not drivers), refreshed each second
        self.port: int | None = None
        self.error = ""
        #: Set once the first round of :meth:`keep` ended: before it, a restarted controller
        #: has not found its running proxies yet.
        self._kept = asyncio.Event()

    async def settled(self, timeout: float) -> None:
        """Wait (bounded) until the proxies were looked for once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kept.wait(), timeout)

    async def keep(self) -> None:
        """Start the proxy if there is none, and (re)start its server; bounded."""
        try:
            await self._keep()
        finally:
            self._kept.set()

    async def _keep(self) -> None:
        try:
            nodes = await asyncio.to_thread(runtime.nodes)
            self.nodes = sorted(n["NodeID"] for n in nodes if _takes_work(n))
        except Exception as exc:
            log.debug("serve: listing the nodes failed: %r", exc)
        if self.http.get("disabled"):
            return
        if self.http.get("proxy_location") == "EveryNode":
            await self._keep_node_proxies()
            return
        if self.proxy is None:
            self.proxy = ProxyActor.options(
                name=PROXY_NAME,
                namespace=NAMESPACE,
                lifetime="detached",
                max_restarts=-1,
                max_concurrency=100_000,
                get_if_exists=True,
            ).remote(dict(self.http))
        try:
            port = int(self.http.get("port", 8000))
            self.port = await asyncio.wait_for(_ref(self.proxy.ready.remote(port)), 30)
            self.error = ""
            await self._take_grpc_port(self.proxy)
            if self.http.get("port") == 0 and self.port:
                self.http["port"] = self.port  # a restarted proxy takes the same port
                self._changed()
        except Exception as exc:
            self.error = repr(exc)
            log.warning("serve: the HTTP proxy is not up: %r", exc)
            if "died" in repr(exc).lower():
                self.proxy = None

    async def _keep_node_proxies(self) -> None:
        """One proxy on every node (not drivers), all on the same port: the node processes
        of one host share it (SO_REUSEPORT). A proxy dies with its node and is not moved."""
        try:
            nodes = await asyncio.to_thread(runtime.nodes)
        except Exception as exc:
            log.debug("serve: listing the nodes failed: %r", exc)
            return
        alive = sorted(n["NodeID"] for n in nodes if _takes_work(n))
        for node_id in list(self.node_proxies):
            if node_id not in alive:
                del self.node_proxies[node_id]  # it died with its node
        port = int(self.http.get("port", 8000))
        up = 0
        for node_id in alive:
            proxy = self.node_proxies.get(node_id)
            if proxy is None:
                proxy = ProxyActor.options(
                    name=f"{PROXY_NAME}::{node_id}",
                    namespace=NAMESPACE,
                    lifetime="detached",
                    max_concurrency=100_000,
                    get_if_exists=True,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(dict(self.http, reuse_port=True))
                self.node_proxies[node_id] = proxy
            try:
                bound = await asyncio.wait_for(_ref(proxy.ready.remote(port)), 30)
            except Exception as exc:
                self.error = repr(exc)
                log.warning("serve: the HTTP proxy on node %s is not up: %r", node_id, exc)
                if "died" in repr(exc).lower():
                    self.node_proxies.pop(node_id, None)
                continue
            self.error = ""
            if port == 0:  # the first one picked the port; the others share it
                port = bound
                self.http["port"] = bound
                self._changed()
            await self._take_grpc_port(proxy)
            up += 1
        if up == len(alive) and port:
            # serve.start() returns once every node's proxy is up: proxies that start while
            # replicas start on the same node import Serve's modules on two threads at once,
            # which Python's import locks can answer with a partly initialized module.
            self.port = port

    async def _take_grpc_port(self, proxy: Any) -> None:
        """gRPC on port 0: the first proxy picked one; later ones (other nodes, a restart)
        are created with it."""
        grpc = self.http.get("grpc")
        if grpc and not grpc.get("port"):
            port = await asyncio.wait_for(_ref(proxy.grpc_port.remote()), 10)
            if port:
                grpc["port"] = port
                self._changed()

    def handles(self) -> dict[str, Any]:
        """{node id (or "cluster" for the single proxy): proxy handle}."""
        if self.node_proxies:
            return dict(self.node_proxies)
        return {"cluster": self.proxy} if self.proxy is not None else {}

    def forget_all(self) -> list[Any]:
        """Every proxy's handle (to stop them), forgotten here."""
        proxies = [*self.node_proxies.values()]
        if self.proxy is not None:
            proxies.append(self.proxy)
        self.node_proxies.clear()
        return proxies

    async def wait_port(self, timeout: float) -> int | None:
        """The port the proxy listens on, once it does (raises after ``timeout``); None
        when HTTP is disabled (no proxy: handles only)."""
        deadline = time.monotonic() + timeout
        while self.port is None:
            if self.http.get("disabled"):
                return None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP proxy did not start: {self.error}")
            await asyncio.sleep(0.02)
        return self.port


async def _ref(ref: Any) -> Any:
    return await ref
