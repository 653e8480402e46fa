"""The controller's desired and actual state, as plain data that pickles into the head's KV.

An :class:`AppState` holds its route prefix, ingress and deployments; a
:class:`DeploymentState` holds the spec (code, arguments, config), the replica count the
controller aims for, and its :class:`ReplicaInfo` s. The controller stores all of it in the
head's KV store after every change, so a restarted controller, on any host, takes up the
same apps and replicas.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import cloudpickle

from ._deployment import DeploymentSpec

STARTING = "STARTING"
RUNNING = "RUNNING"
STOPPING = "STOPPING"


@dataclasses.dataclass
class ReplicaInfo:
    tag: str
    handle: Any
    version: str
    state: str = STARTING
    user_config_version: int = -1
    pid: int | None = None
    ongoing: int = 0
    health_failures: int = 0
    models: tuple[str, ...] = ()  # multiplexed model ids it holds, as it last reported
    node_id: str | None = None  # where it was placed (max_replicas_per_node)
    pg: Any = None  # its own placement group (placement_group_bundles), removed with it


@dataclasses.dataclass
class DeploymentState:
    spec: DeploymentSpec
    target: int
    replicas: dict[str, ReplicaInfo] = dataclasses.field(default_factory=dict)
    user_config_version: int = 0
    message: str = ""
    start_failures: int = 0
    failed: bool = False
    # autoscaling (not persisted meaningfully: rebuilt from metrics)
    queued: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)
    want: int | None = None
    want_since: float = 0.0
    last_health_check: float = 0.0
    last_stats: float = 0.0
    # (time, load) samples within the autoscaling look-back period
    samples: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    removed: bool = False

    def live(self) -> list[ReplicaInfo]:
        return [r for r in self.replicas.values() if r.state != STOPPING]

    def running(self) -> list[ReplicaInfo]:
        return [r for r in self.replicas.values() if r.state == RUNNING]

    def status(self) -> str:
        if self.failed:
            return "DEPLOY_FAILED"
        cur = [r for r in self.running() if r.version == self.spec.code_version]
        if len(cur) == self.target and len(self.live()) == self.target:
            return "HEALTHY"
        if self.spec.config.autoscaling_config is not None and len(cur) >= min(1, self.target):
            return "HEALTHY" if len(cur) == len(self.live()) else "UPDATING"
        return "UPDATING"

    def queued_total(self) -> int:
        now = time.monotonic()
        return sum(n for n, at in self.queued.values() if now - at < 2.0)


@dataclasses.dataclass
class AppState:
    name: str
    route_prefix: str | None
    ingress: str
    deployments: dict[str, DeploymentState] = dataclasses.field(default_factory=dict)
    deleting: bool = False

    def status(self) -> str:
        if self.deleting:
            return "DELETING"
        states = [d.status() for d in self.deployments.values() if not d.removed]
        if any(s == "DEPLOY_FAILED" for s in states):
            return "DEPLOY_FAILED"
        if all(s == "HEALTHY" for s in states):
            return "RUNNING"
        return "DEPLOYING"


#: Where the controller keeps its state: the head's KV store, namespace ``serve``.
KV_NAMESPACE = "serve"
KV_KEY = "controller"


def dumps(token: str, apps: dict[str, AppState], http: dict[str, Any]) -> bytes:
    """The controller's state as one value for the head's KV store."""
    return cloudpickle.dumps({"token": token, "apps": apps, "http": http})


def loads(data: bytes | None, token: str) -> tuple[dict[str, AppState], dict[str, Any]] | None:
    """The state an earlier life of this controller stored, or None (none stored, or left by
    another Serve instance: not ours)."""
    if data is None:
        return None
    state = cloudpickle.loads(data)
    if state.get("token") != token:
        return None
    return state["apps"], state["http"]
