"""The controller's desired and actual state, as plain data that pickles into the head's KV.

An :class:`AppState` holds its route prefix, ingress and deployments; a
:class:`DeploymentState` holds the spec (code, arguments, config), the replica count the
controller aims for, and its :class:`ReplicaInfo` s. The controller stores all of it in the
head's KV store after every change, so a restarted controller, on any host, takes up the
same apps and replicas.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Callable
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
    #: STOPPING and refusing new requests (it said so, or it never ran or is gone): a
    #: deployment is HEALTHY only once no stopping replica can still take a request.
    refusing: bool = False


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
        if any(r.state == STOPPING and not r.refusing for r in self.replicas.values()):
            return "UPDATING"  # a replica on its way out may still take requests
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


#: Where the controller keeps its state: the head's KV store, namespace ``serve``. The state
#: is one small value; each deployment's code and arguments (its spec's blob, the large part,
#: which changes only on a deploy) is a value of its own under ``code/<sha256>``, written
#: once, so that the frequent writes (a replica started or stopped) stay small.
KV_NAMESPACE = "serve"
KV_KEY = "controller"
CODE_PREFIX = "code/"


class _Pickler(cloudpickle.Pickler):
    """Pickles the state with each spec's blob replaced by its digest (collected)."""

    def __init__(self, file: io.BytesIO, blobs: dict[str, bytes]) -> None:
        super().__init__(file)
        self.blobs = blobs

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is DeploymentSpec:
            digest = _digest(obj.blob)
            self.blobs[digest] = obj.blob
            return _spec, (obj.name, digest, obj.config, obj.code_version, obj.is_function)
        return super().reducer_override(obj)


#: Digests of the blobs of the specs stored last, by id (the blob is kept, so the id stays
#: its own; pruned at each write to the blobs in use).
_digests: dict[int, tuple[bytes, str]] = {}


def _digest(blob: bytes) -> str:
    known = _digests.get(id(blob))
    if known is not None and known[0] is blob:
        return known[1]
    digest = hashlib.sha256(blob).hexdigest()
    _digests[id(blob)] = (blob, digest)
    return digest


#: While a state is read: fetches a blob by digest.
_fetch: Callable[[str], bytes | None] | None = None


def _spec(
    name: str, digest: str, config: Any, code_version: str, is_function: bool
) -> DeploymentSpec:
    if _fetch is None:
        raise RuntimeError("a deployment spec is read only with its blobs at hand")
    blob = _fetch(digest)
    if blob is None:
        raise LookupError(f"the code of deployment {name!r} ({digest}) is not in the KV store")
    return DeploymentSpec(name, blob, config, code_version, is_function)


def dumps(
    token: str, apps: dict[str, AppState], http: dict[str, Any], blobs: dict[str, bytes]
) -> bytes:
    """The controller's state as one value for the head's KV store, without the specs'
    blobs: those are added to ``blobs`` (digest -> blob), to store under ``CODE_PREFIX``."""
    buf = io.BytesIO()
    _Pickler(buf, blobs).dump({"token": token, "apps": apps, "http": http})
    # Forget the digests of blobs no spec holds any more (the cache keeps its blobs alive).
    for key in [k for k, (_, digest) in _digests.items() if digest not in blobs]:
        del _digests[key]
    return buf.getvalue()


def loads(
    data: bytes | None, token: str, fetch: Callable[[str], bytes | None]
) -> tuple[dict[str, AppState], dict[str, Any]] | None:
    """The state an earlier life of this controller stored, or None (none stored, or left by
    another Serve instance: not ours). ``fetch(digest)``: a spec's blob."""
    global _fetch
    if data is None:
        return None
    _fetch = fetch
    try:
        state = cloudpickle.loads(data)
    finally:
        _fetch = None
    if state.get("token") != token:
        return None
    return state["apps"], state["http"]
