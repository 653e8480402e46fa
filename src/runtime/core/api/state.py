"""The cluster's state as the driver sees it: nodes, resources, the head's tables."""

from __future__ import annotations

from typing import Any

import msgspec

from ..scheduling.scheduler import takes_work
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker


def nodes() -> list[dict[str, Any]]:
    """Every node process of the cluster, in Ray's format (NodeID, Alive, Resources, ...).

    The node processes of one host share its resources: each row names its ``HostID``, and
    ``Resources``/``Available`` are the host's (as Ray's, which has one row per host);
    ``ProcessResources`` is what the process itself holds now. ``TakesWork`` says whether
    general tasks, actors and bundles may be placed on the process (False for drivers,
    draining ones, the head and processes kept for one actor or one runtime_env)."""
    out = []
    for item in list_state("nodes"):
        n = p.NodeInfo(**item)
        host, _, port = n.address.rpartition(":")
        out.append(
            {
                "NodeID": n.node_id,
                "Alive": n.alive,
                "NodeManagerAddress": host,
                "NodeManagerPort": int(port),
                "Resources": dict(n.resources),
                "Available": dict(n.available),
                "IsDriver": n.is_driver,
                "Pid": n.pid,
                "Labels": dict(n.labels),
                "HostID": n.host_id or n.node_id,
                "ProcessResources": dict(n.used),
                "Draining": n.draining,
                "TakesWork": takes_work(n),
            }
        )
    return out


def list_state(what: str) -> list[dict[str, Any]]:
    """The head's table of ``what`` ("nodes" or "actors"), as plain dicts; "objects" asks
    every member what it owns, stores and borrows (one row per object), "tasks" what it
    runs, queues and waits on (one row per live task or actor call)."""
    worker = current_worker()
    if what == "objects":
        return _blocking(worker, worker.list_objects())
    if what == "tasks":
        return _blocking(worker, worker.list_tasks())
    raw = _blocking(worker, worker.head_request(p.ListState(0, what)))
    if what == "nodes":
        infos = [msgspec.convert(item, p.NodeInfo) for item in raw]
        return [{f: getattr(n, f) for f in n.__struct_fields__} for n in infos]
    return list(raw)


def stop_cluster() -> None:
    """Ask the head to stop every node of the cluster, then itself."""
    worker = current_worker()
    _blocking(worker, worker.head_request(p.StopCluster(0)))


def cluster_resources() -> dict[str, float]:
    """The total resources of all nodes."""
    return _sum_resources("Resources")


def available_resources() -> dict[str, float]:
    """The resources not in use right now (as last reported by each node)."""
    return _sum_resources("Available")


def _sum_resources(key: str) -> dict[str, float]:
    total: dict[str, float] = {}
    seen: set[str] = set()
    for n in nodes():
        if n["Alive"] and not n["IsDriver"] and n["HostID"] not in seen:
            seen.add(n["HostID"])  # the processes of a host share its resources: count once
            for name, amount in n[key].items():
                total[name] = total.get(name, 0.0) + amount
    return {k: v for k, v in total.items() if v > 0 or key == "Available"}
