"""The controller's desired and actual state, as plain data that pickles into a checkpoint.

An :class:`AppState` holds its route prefix, ingress and deployments; a
:class:`DeploymentState` holds the spec (code, arguments, config), the replica count the
controller aims for, and its :class:`ReplicaInfo` s. The controller writes all of it to a
file after every change, so a restarted controller takes up the same apps and replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import tempfile
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


def save(path: str, token: str, apps: dict[str, AppState], http: dict[str, Any]) -> None:
    """Write the checkpoint atomically (write a temp file, then rename it over the old one)."""
    data = cloudpickle.dumps({"token": token, "apps": apps, "http": http})
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".serve-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str, token: str) -> tuple[dict[str, AppState], dict[str, Any]] | None:
    """The checkpoint written by an earlier life of this controller, or None."""
    try:
        with open(path, "rb") as f:
            data = cloudpickle.loads(f.read())
    except FileNotFoundError:
        return None
    if data.get("token") != token:
        return None  # left by another Serve instance: not ours
    return data["apps"], data["http"]


#: A checkpoint no live controller holds is removed once it is this old (seconds): a
#: controller that crashed restarts (and takes its checkpoint up again) well within it.
STALE_AFTER_S = 60.0


def hold(path: str) -> int | None:
    """Lock ``path + ".lock"`` for as long as this controller lives (the kernel lets go when
    its process dies): :func:`sweep` leaves a held checkpoint alone. The lock's descriptor,
    or None if it could not be taken."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release(path: str, fd: int | None, *, remove: bool) -> None:
    """Let go of the lock :func:`hold` took; ``remove``: the checkpoint and lock too."""
    if remove:
        for name in (path, path + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def sweep(folder: str, stale_after: float = STALE_AFTER_S) -> list[str]:
    """Remove the checkpoints in ``folder`` that no live controller holds and that are older
    than ``stale_after`` seconds (left by clusters stopped without ``serve.shutdown()``), and
    stale temporary files; returns the checkpoints removed."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    removed = []
    now = time.time()
    for name in names:
        path = os.path.join(folder, name)
        try:
            age = now - os.lstat(path).st_mtime
        except FileNotFoundError:
            continue
        if age < stale_after:
            continue
        if name.startswith(".serve-"):  # a save that died half-way
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        elif name.startswith("controller-") and name.endswith(".pkl"):
            fd = hold(path)
            if fd is not None:  # nobody holds it: its controller is gone
                release(path, fd, remove=True)
                removed.append(path)
    return removed
