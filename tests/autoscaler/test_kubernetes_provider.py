"""The Kubernetes provider against a real HTTP exchange with the official client: a small
API server (``http.server`` on loopback) answers in the API server's JSON (Deployment,
Scale, PodList, Status) from the state it keeps, and records every request; the tests
check the exact calls (method, path, query, patch body and content type), a conflict
retried on a fresh read, and the autoscaler's decisions with this provider."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("kubernetes")

from kubernetes import client

from runtime.autoscaler import Autoscaler, KubernetesProvider, NodeType
from runtime.autoscaler._kubernetes import DELETION_COST, STOP_COST

NS = "runtime"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/runtime-worker"
PODS = f"/api/v1/namespaces/{NS}/pods"
SELECTOR = "app.kubernetes.io/component=worker,app.kubernetes.io/name=runtime"
LABELS = {"app.kubernetes.io/name": "runtime", "app.kubernetes.io/component": "worker"}


class ApiServer:
    """The API server's side of the exchange: one Deployment and its pods."""

    def __init__(self, pods: list[str], replicas: int) -> None:
        self.replicas = replicas
        self.version = 100
        self.pods: dict[str, dict[str, Any]] = {name: self._pod(name) for name in pods}
        self.requests: list[dict[str, Any]] = []
        self.conflicts = 0  # answer the next N replica changes with 409 Conflict
        self.lock = threading.Lock()

    def _pod(self, name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": NS, "labels": LABELS, "uid": f"uid-{name}"},
            "status": {"phase": "Running", "podIP": "10.1.0.7"},
        }

    def deployment(self) -> dict[str, Any]:
        template = {
            "metadata": {"labels": LABELS},
            "spec": {"containers": [{"name": "worker", "image": "runtime"}]},
        }
        return {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": "runtime-worker",
                "namespace": NS,
                "labels": LABELS,
                "resourceVersion": str(self.version),
            },
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": LABELS},
                "template": template,
            },
        }

    def scale(self) -> dict[str, Any]:
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": "runtime-worker",
                "namespace": NS,
                "resourceVersion": str(self.version),
            },
            "spec": {"replicas": self.replicas},
            "status": {"replicas": len(self.pods), "selector": SELECTOR},
        }

    def handle(self, method: str, url: str, body: Any, ctype: str) -> tuple[int, Any]:
        parts = urlsplit(url)
        with self.lock:
            self.requests.append({"method": method, "path": parts.path,
                                  "query": parse_qs(parts.query), "body": body,
                                  "content_type": ctype})  # fmt: skip
            if method == "GET" and parts.path == DEPLOYMENT:
                return 200, self.deployment()
            if parts.path == DEPLOYMENT + "/scale":
                if method == "PATCH":
                    if self.conflicts or body["metadata"]["resourceVersion"] != str(self.version):
                        self.conflicts = max(0, self.conflicts - 1)
                        self.version += 1  # someone else changed it meanwhile
                        return 409, _status(409, "Conflict", "the object has been modified")
                    self.replicas = body["spec"]["replicas"]
                    self.version += 1
                return 200, self.scale()
            if method == "GET" and parts.path == PODS:
                assert parse_qs(parts.query)["labelSelector"] == [SELECTOR]
                return 200, {"kind": "PodList", "apiVersion": "v1",
                             "metadata": {"resourceVersion": str(self.version)},
                             "items": list(self.pods.values())}  # fmt: skip
            if method == "PATCH" and parts.path.startswith(PODS + "/"):
                pod = self.pods[parts.path.rsplit("/", 1)[1]]
                pod["metadata"].setdefault("annotations", {}).update(
                    body["metadata"]["annotations"]
                )
                return 200, {"kind": "Pod", "apiVersion": "v1", **pod}
        return 404, _status(404, "NotFound", f"{method} {parts.path}")

    # What the Deployment's controllers would do next.
    def controller_starts(self, name: str) -> None:
        with self.lock:
            self.pods[name] = self._pod(name)

    def controller_deletes_cheapest(self) -> str:
        with self.lock:
            cost = {n: int(p["metadata"].get("annotations", {}).get(DELETION_COST, 0))
                    for n, p in self.pods.items()}  # fmt: skip
            name = min(cost, key=lambda n: cost[n])
            self.pods[name]["metadata"]["deletionTimestamp"] = "2026-12-05T08:00:00Z"
            return name

    def calls(self) -> list[tuple[str, str]]:
        with self.lock:
            out = [(r["method"], r["path"]) for r in self.requests]
            self.requests.clear()
            return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


@pytest.fixture
def api() -> Iterator[tuple[ApiServer, Any]]:
    state = ApiServer(["runtime-worker-7c9f-a"], replicas=1)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            code, answer = state.handle(
                self.command, self.path, body, self.headers.get("Content-Type", "")
            )
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    api_client = client.ApiClient(config)
    try:
        yield state, api_client
    finally:
        api_client.close()
        server.shutdown()
        server.server_close()
        thread.join(10)


def provider_for(api: tuple[ApiServer, Any]) -> KubernetesProvider:
    return KubernetesProvider({"cpu2": "runtime-worker"}, namespace=NS, api_client=api[1])


def test_launching_a_node_raises_the_deployments_replicas_and_its_pod_becomes_the_node(api):
    state, _ = api
    provider = provider_for(api)
    assert provider.non_terminated_nodes() == {"runtime-worker-7c9f-a": "cpu2"}
    assert state.calls() == [("GET", DEPLOYMENT), ("GET", PODS)]  # the selector, read once

    launch = provider.create_node(NodeType("cpu2", {"CPU": 2.0}))
    patch = state.requests[-1]
    assert state.calls() == [("GET", DEPLOYMENT + "/scale"), ("PATCH", DEPLOYMENT + "/scale")]
    # A merge patch, conditional on the version read: a concurrent change is never lost.
    assert patch["body"] == {"metadata": {"resourceVersion": "100"}, "spec": {"replicas": 2}}
    assert "merge-patch+json" in patch["content_type"]
    assert state.replicas == 2
    # Until its pod exists, the launch counts as a node on its way (no second launch).
    assert provider.non_terminated_nodes() == {"runtime-worker-7c9f-a": "cpu2", launch: "cpu2"}
    state.controller_starts("runtime-worker-7c9f-b")
    assert provider.non_terminated_nodes() == {
        "runtime-worker-7c9f-a": "cpu2",
        "runtime-worker-7c9f-b": "cpu2",
    }
    assert state.calls() == [("GET", PODS), ("GET", PODS)]


def test_stopping_a_node_marks_its_pod_cheapest_then_lowers_the_replicas(api):
    state, _ = api
    state.controller_starts("runtime-worker-7c9f-b")
    state.replicas = 2
    provider = provider_for(api)
    provider.non_terminated_nodes()
    state.calls()
    provider.terminate_node("runtime-worker-7c9f-a")
    annotate, read, lower = state.requests
    assert (annotate["method"], annotate["path"]) == ("PATCH", PODS + "/runtime-worker-7c9f-a")
    assert annotate["body"] == {"metadata": {"annotations": {DELETION_COST: STOP_COST}}}
    assert (read["method"], lower["method"]) == ("GET", "PATCH")
    assert lower["body"]["spec"] == {"replicas": 1}
    state.calls()
    # The ReplicaSet removes the cheapest pod: the one the autoscaler marked.
    assert state.controller_deletes_cheapest() == "runtime-worker-7c9f-a"
    assert provider.non_terminated_nodes() == {"runtime-worker-7c9f-b": "cpu2"}
    provider.terminate_node("runtime-worker-7c9f-a")  # already on its way: nothing is sent
    assert state.calls() == [("GET", PODS)]


def test_a_replicas_change_that_loses_a_race_is_read_again_and_retried(api):
    state, _ = api
    state.conflicts = 1
    provider = provider_for(api)
    provider.create_node(NodeType("cpu2", {"CPU": 2.0}))
    assert state.calls() == [("GET", DEPLOYMENT + "/scale"), ("PATCH", DEPLOYMENT + "/scale")] * 2
    assert state.replicas == 2  # 1 + 1, on the version read after the conflict


def test_an_error_of_the_api_server_reaches_the_caller_typed(api):
    provider = KubernetesProvider({"cpu2": "missing"}, namespace=NS, api_client=api[1])
    with pytest.raises(client.ApiException) as info:
        provider.non_terminated_nodes()
    assert info.value.status == 404


def test_the_autoscaler_scales_the_deployment_for_a_request_once_while_its_pods_join(api):
    """The decision with this provider: ``request_resources`` that the cluster cannot hold
    raises the replicas once; the launch (then its pod, not joined yet) counts as capacity,
    so later rounds launch nothing more."""
    import runtime
    from runtime.autoscaler import sdk

    state, _ = api
    runtime.init(num_cpus=1, log_to_driver=False)
    try:
        state.pods.clear()  # no worker pod yet: the local mesh's node is not the provider's
        state.replicas = 0
        provider = provider_for(api)
        scaler = Autoscaler(provider, [NodeType("cpu2", {"CPU": 2.0}, max_workers=3)],
                            idle_timeout_s=600)  # fmt: skip
        sdk.request_resources(num_cpus=5)  # 1 CPU here: two nodes of 2 more
        assert scaler.update().launch == {"cpu2": 2}
        assert state.replicas == 2
        assert scaler.update().launch == {}  # the two launches count
        state.controller_starts("runtime-worker-7c9f-c")
        state.controller_starts("runtime-worker-7c9f-d")
        assert scaler.update().launch == {}  # their pods count (joining)
        assert state.replicas == 2
        sdk.request_resources(num_cpus=0)
    finally:
        runtime.shutdown()
