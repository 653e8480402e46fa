"""Ray's ``init()`` options beyond ours: which apply here, which are accepted with a warning.

A Ray program passes options such as ``include_dashboard=False`` or ``logging_level=...``
to ``ray.init``; it must start here unchanged. Each option either maps onto what this
runtime has (logging, a temporary directory, the driver's address, a job config's
runtime_env, the dashboard of the local mesh init() starts) or has no meaning here and is
accepted with a one-time warning that says so. A name Ray does not know either is a
``TypeError``, as in Ray.

The dashboard: ``include_dashboard=True`` or a ``dashboard_port`` starts the local mesh's
head with its dashboard (``--dashboard-port``; Ray's default port 8265, 0: any free port;
it listens on 127.0.0.1, and its address and read-only link are written to
``SESSION_DIR/dashboard.json``). As in Ray, the options mean nothing when init() joins a
running cluster (its head was started with its own dashboard, or without).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

from ..process import launcher

log = logging.getLogger("runtime")

#: Ray's dashboard port, when ``include_dashboard=True`` names none.
DEFAULT_DASHBOARD_PORT = 8265

#: Ray's options with no effect here, and why (said once per process, as a warning).
IGNORED = {
    "dashboard_host": "the local mesh's dashboard listens on 127.0.0.1 (a head started with "
    "`python -m runtime.node --head --host H --dashboard-port N` listens on H)",
    "enable_resource_isolation": "there is no cgroup isolation",
    "system_reserved_cpu": "there is no cgroup isolation",
    "system_reserved_memory": "there is no cgroup isolation",
    "storage": "give storage_path to Tune and Train instead",
    "_system_config": "Ray's internal settings do not apply",
    "_enable_object_reconstruction": "lineage reconstruction is always on",
    "_redis_password": "there is no Redis; the cluster token authenticates",
    "_redis_max_memory": "there is no Redis",
    "_plasma_directory": "the object store lives in /dev/shm (RUNTIME_TMPDIR moves its traces)",
    "_metrics_export_port": "metrics are served at /metrics on the head's dashboard "
    "(`--dashboard-port`)",
    "_tracing_startup_hook": "tracing is not supported",
    "_node_name": "nodes are named by their id",
    "_driver_object_store_memory": "the driver's store follows object_store_memory",
    "_lru_evict": "the store spills instead of evicting",
}

_warned: set[str] = set()


@dataclass
class RayInitOptions:
    """What Ray's extra ``init()`` options amount to here."""

    runtime_env: dict[str, Any] | None = None
    node_ip: str | None = None
    namespace: str | None = None
    #: Where the head of a local mesh serves its dashboard (None: no dashboard).
    dashboard_port: int | None = None


#: No options: what ``runtime.connect()`` uses.
NO_OPTIONS = RayInitOptions()


def apply(
    kwargs: dict[str, Any],
    *,
    runtime_env: dict[str, Any] | None,
) -> RayInitOptions:
    """Check and apply Ray's extra options; returns what ``init()`` itself must use.

    Raises:
        TypeError: an option neither Ray nor this runtime knows.
    """
    out = RayInitOptions(runtime_env=runtime_env)
    job_config = kwargs.pop("job_config", None)
    if job_config is not None and runtime_env is None:
        env = getattr(job_config, "runtime_env", None)
        out.runtime_env = dict(env) if env else None
    if job_config is not None:
        out.namespace = getattr(job_config, "ray_namespace", None) or None
    level = kwargs.pop("logging_level", None)
    fmt = kwargs.pop("logging_format", None)
    kwargs.pop("logging_config", None)
    if kwargs.pop("configure_logging", True) and (level is not None or fmt is not None):
        logger = logging.getLogger("runtime")
        if level is not None:
            logger.setLevel(level)
        if fmt is not None:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(fmt))
            logger.addHandler(handler)
    temp_dir = kwargs.pop("_temp_dir", None)
    if temp_dir:
        os.environ["RUNTIME_TMPDIR"] = str(temp_dir)
    out.node_ip = kwargs.pop("_node_ip_address", None)
    _local_host(kwargs.pop("labels", None), kwargs.pop("_memory", None))
    out.dashboard_port = _dashboard_port(kwargs)
    if kwargs.get("dashboard_host") in ("127.0.0.1", "localhost"):
        del kwargs["dashboard_host"]  # what it is anyway
    unknown = sorted(k for k in kwargs if k not in IGNORED)
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(unknown)}")
    for name, value in kwargs.items():
        if name in _warned or value is None:
            continue
        _warned.add(name)
        warnings.warn(
            f"runtime.init({name}=...) is accepted for Ray compatibility and has no effect "
            f"here: {IGNORED[name]}",
            UserWarning,
            stacklevel=3,
        )
    return out


def _local_host(labels: Any, memory: Any) -> None:
    """Ray's ``labels`` and ``_memory``: the labels and the memory resource of the local
    mesh init() starts (checked here, handed to the launcher)."""
    from ..process import launcher
    from ..scheduling.labels import MAX_LABEL
    from ..scheduling.scheduler import check_amount

    launcher.next_labels.clear()
    launcher.next_memory = None
    if labels is not None:
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= MAX_LABEL
            and len(v) <= MAX_LABEL for k, v in labels.items()
        ):  # fmt: skip
            raise TypeError(f"labels must be a dict of str to str, got {labels!r:.100}")
        launcher.next_labels.update(labels)
    if memory is not None:
        check_amount("_memory", memory)
        launcher.next_memory = float(memory)


def _dashboard_port(kwargs: dict[str, Any]) -> int | None:
    """The port Ray's ``include_dashboard``/``dashboard_port`` ask for, or None for no
    dashboard: ``include_dashboard=True`` (port 8265 unless given), or a port given while
    ``include_dashboard`` is left unset (Ray's default: on)."""
    include = kwargs.pop("include_dashboard", None)
    port = kwargs.pop("dashboard_port", None)
    if include is not None and not isinstance(include, bool):
        raise TypeError(f"include_dashboard must be a bool or None, got {include!r}")
    if include is False or (include is None and port is None):
        return None
    if port is None:
        return DEFAULT_DASHBOARD_PORT
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"dashboard_port must be a port number (0: any free one), got {port!r}")
    return port


def start_local_mesh(
    options: RayInitOptions, host: launcher.HostPlan, **kwargs: Any
) -> launcher.LocalMesh:
    """:func:`~runtime.core.process.launcher.start_local_mesh`, its head with a dashboard
    when init() asked for one (``include_dashboard``, ``dashboard_port``)."""
    port = options.dashboard_port
    head_args = () if port is None else ("--dashboard-port", str(port))
    mesh = launcher.start_local_mesh(host, head_args=head_args, **kwargs)
    if port is not None:
        where = f"http://127.0.0.1:{port}" if port else "a free port"
        log.info(
            "the dashboard: %s (its link with the read-only credential: %s)",
            where,
            os.path.join(mesh.state_dir, "dashboard.json"),
        )
    return mesh


def address_toward(head_address: str, node_ip: str | None = None) -> str:
    """The local address this host reaches ``head_address`` from, where the driver listens so
    that every member can call back (a node it never dialled reads the objects it owns);
    loopback for a head on this host. ``node_ip`` (Ray's ``_node_ip_address``) or
    ``RUNTIME_NODE_IP`` wins."""
    chosen = node_ip or os.environ.get("RUNTIME_NODE_IP")
    if chosen:
        return chosen
    host, _, port = head_address.rpartition(":")
    if not host or ":" in host or host.startswith("["):
        return "127.0.0.1"  # IPv6 heads: loopback as before
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, int(port)))  # UDP: picks a route, sends nothing
            local = str(probe.getsockname()[0])
    except (OSError, ValueError):
        return "127.0.0.1"
    return "127.0.0.1" if local.startswith("127.") else local


def job_runtime_env(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The runtime_env given, else the one a submitted job was started with (its working dir
    then travels to the nodes that run the job's tasks)."""
    if runtime_env is not None:
        return runtime_env
    raw = os.environ.get("RUNTIME_JOB_RUNTIME_ENV")
    if not raw:
        return None
    try:
        env = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"RUNTIME_JOB_RUNTIME_ENV is not JSON: {exc}") from None
    return env if isinstance(env, dict) else None
