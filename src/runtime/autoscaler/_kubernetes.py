"""Nodes as pods of Kubernetes Deployments: the autoscaler changes a worker Deployment's
replicas through the official ``kubernetes`` client (``pip install 'runtime[kubernetes]'``,
imported when the provider is made).

Each node type is one Deployment (``deployments={"cpu2": "runtime-worker"}``); a pod is a
node, named by the pod's name, which it carries as its :data:`NODE_LABEL` (the worker
manifest passes ``--labels '{"runtime.io/autoscaler-node": "$(POD_NAME)"}'``). A Deployment
cannot be told which pod to remove: to stop an idle node the provider marks its pod with the
lowest ``controller.kubernetes.io/pod-deletion-cost``, then lowers the replicas by one, and
the ReplicaSet removes that pod (SIGTERM: it drains first).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from ._decide import NodeType
from ._providers import NodeProvider

#: The annotation the ReplicaSet controller reads to pick which pods go first when it scales
#: down (lowest first; beta since Kubernetes 1.22, on by default).
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: The cost given to a pod the autoscaler stops (the lowest an int32 allows).
STOP_COST = str(-(2**31))
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Tries of a replicas change that lost a race with another writer (409 Conflict).
_TRIES = 3


def _api_client() -> Any:
    """The client of the cluster this process runs in, else of the user's kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class KubernetesProvider(NodeProvider):
    """Scales the Deployments in ``deployments`` (node type name -> Deployment name) in
    ``namespace`` (default: this pod's, else ``default``). ``api_client``: a
    ``kubernetes.client.ApiClient`` (default: in-cluster config, else kubeconfig).
    ``pending_s``: how long a launch that has no pod yet counts as a node on its way."""

    def __init__(
        self,
        deployments: Mapping[str, str],
        *,
        namespace: str | None = None,
        api_client: Any = None,
        pending_s: float = 120.0,
    ) -> None:
        if not deployments:
            raise ValueError("KubernetesProvider needs a Deployment per node type")
        from kubernetes import client

        self._exception = client.ApiException
        self.deployments = dict(deployments)
        self.namespace = namespace or _own_namespace()
        self.api = api_client if api_client is not None else _api_client()
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.pending_s = pending_s
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        #: Launches not matched to a pod yet: id -> (type name, when).
        self._pending: dict[str, tuple[str, float]] = {}
        #: Pods seen so far (a new one takes the oldest launch of its type).
        self._known: set[str] = set()
        #: Pods being stopped -> their Deployment.
        self._stopping: dict[str, str] = {}
        self._pod_type: dict[str, str] = {}
        self._selectors: dict[str, str] = {}

    # --- the provider interface ----------------------------------------------------------

    def create_node(self, node_type: NodeType) -> str:
        deployment = self._deployment(node_type.name)
        self._change_replicas(deployment, +1)
        node_id = f"pending-{deployment}-{next(self._seq)}"
        with self._lock:
            self._pending[node_id] = (node_type.name, time.monotonic())
        return node_id

    def terminate_node(self, node_id: str) -> None:
        with self._lock:
            launch = self._pending.pop(node_id, None)
            pod_type = self._pod_type.get(node_id)
        if launch is not None:  # a launch with no pod yet: take its replica back
            self._change_replicas(self._deployment(launch[0]), -1)
            return
        if pod_type is None or node_id in self._stopping:
            return  # not one of ours, or already on its way out
        deployment = self._deployment(pod_type)
        body = {"metadata": {"annotations": {DELETION_COST: STOP_COST}}}
        self.core.patch_namespaced_pod(node_id, self.namespace, body)
        self._change_replicas(deployment, -1)
        with self._lock:
            self._stopping[node_id] = deployment

    def non_terminated_nodes(self) -> dict[str, str]:
        live: dict[str, str] = {}
        for type_name, deployment in self.deployments.items():
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=self._selector(deployment)
            )
            for pod in pods.items:
                meta: Any = pod.metadata
                phase = pod.status.phase if pod.status is not None else None
                if meta.deletion_timestamp is None and phase not in ("Succeeded", "Failed"):
                    live[str(meta.name)] = type_name
        now = time.monotonic()
        with self._lock:
            for name, type_name in live.items():
                if name not in self._known:  # a new pod: the oldest launch of its type
                    self._known.add(name)
                    ours = [i for i, (t, _) in self._pending.items() if t == type_name]
                    if ours:
                        del self._pending[ours[0]]
            self._known &= set(live)
            for name in list(self._stopping):
                if name not in live:
                    del self._stopping[name]
            for launch, (_, when) in list(self._pending.items()):
                if now - when > self.pending_s:
                    del self._pending[launch]  # never came (no room in the cluster?)
            self._pod_type = dict(live)
            out = {n: t for n, t in live.items() if n not in self._stopping}
            out.update({i: t for i, (t, _) in self._pending.items()})
            return out

    # --- helpers -------------------------------------------------------------------------

    def _deployment(self, type_name: str) -> str:
        try:
            return self.deployments[type_name]
        except KeyError:
            raise ValueError(f"no Deployment for node type {type_name!r}") from None

    def _selector(self, deployment: str) -> str:
        """The Deployment's pod selector, as a label selector string (read once)."""
        selector = self._selectors.get(deployment)
        if selector is None:
            dep: Any = self.apps.read_namespaced_deployment(deployment, self.namespace)
            labels = dep.spec.selector.match_labels or {}
            if not labels:
                raise ValueError(f"Deployment {deployment} selects its pods by no label")
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            self._selectors[deployment] = selector
        return selector

    def _change_replicas(self, deployment: str, delta: int) -> int:
        """Add ``delta`` to the Deployment's replicas (conditional on the version read, so a
        concurrent change is not lost: read again and retry); the new count."""
        for attempt in range(_TRIES):
            scale: Any = self.apps.read_namespaced_deployment_scale(deployment, self.namespace)
            replicas = max(0, (scale.spec.replicas or 0) + delta)
            body = {
                "metadata": {"resourceVersion": scale.metadata.resource_version},
                "spec": {"replicas": replicas},
            }
            try:
                self.apps.patch_namespaced_deployment_scale(deployment, self.namespace, body)
                return replicas
            except self._exception as exc:
                if exc.status != 409 or attempt == _TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()


def _own_namespace() -> str:
    with contextlib.suppress(OSError), open(_NAMESPACE_FILE) as f:
        return f.read().strip() or "default"
    return os.environ.get("POD_NAMESPACE", "default")


__all__ = ["DELETION_COST", "KubernetesProvider"]
