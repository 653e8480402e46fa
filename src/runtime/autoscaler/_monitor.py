"""The autoscaler's loop: read demand and nodes through the public state API, decide,
act through the provider."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import runtime
from runtime.util import state

from . import sdk
from ._decide import Decision, NodeType, NodeView, decide
from ._providers import NODE_LABEL, NodeProvider

log = logging.getLogger("runtime.autoscaler")
#: Resources that are sizes, not slots: a host is idle whatever they show.
_SIZES = ("memory", "object_store_memory")
#: Task and actor states that mean "waiting for resources" (when the row says what it asks).
_WAITING = {"PENDING", "PENDING_CREATION", "PENDING_NODE_ASSIGNMENT", "QUEUED", "INFEASIBLE"}


def pending_demand() -> list[dict[str, float]]:
    """Bundles waiting for resources, from ``runtime.util.state``: the unplaced bundles of
    PENDING placement groups, and tasks and actors waiting for resources whose rows say what
    they ask (``required_resources``)."""
    out: list[dict[str, float]] = []
    for pg in state.list_placement_groups():
        if pg["state"] == "PENDING":
            placed = {int(i) for i in pg.get("bundles_to_node_id", {})}
            out += [dict(b) for i, b in pg["bundles"].items() if int(i) not in placed]
    for rows in (state.list_actors(), state.list_tasks()):
        for row in rows:
            need = row.get("required_resources")
            if need and row.get("state") in _WAITING:
                out.append({k: float(v) for k, v in need.items() if v})
    return out


class Autoscaler:
    """Scales a cluster through ``provider`` between each type's ``min_workers`` and
    ``max_workers``. Runs in a process connected to the cluster (``runtime.init``):
    :meth:`update` is one step; :meth:`start` runs it every ``period_s`` on a thread."""

    def __init__(
        self,
        provider: NodeProvider,
        node_types: Sequence[NodeType],
        *,
        idle_timeout_s: float = 60.0,
        period_s: float = 5.0,
    ) -> None:
        if not node_types:
            raise ValueError("the autoscaler needs at least one node type")
        if idle_timeout_s < 0 or period_s <= 0:
            raise ValueError("idle_timeout_s must be >= 0 and period_s > 0")
        self.provider = provider
        self.types = list(node_types)
        self.idle_timeout_s = idle_timeout_s
        self.period_s = period_s
        self._idle_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The last decision and the errors of failed updates (for status and tests).
        self.last: Decision | None = None
        self.errors: list[str] = []

    def nodes(self) -> list[NodeView]:
        """Every host of the cluster (one row per host), and provider nodes not joined yet."""
        ours = self.provider.non_terminated_nodes()
        hosts: dict[str, list[dict[str, Any]]] = {}
        for n in runtime.nodes():
            if n["Alive"] and not n["IsDriver"] and not n.get("Draining"):
                hosts.setdefault(n["HostID"], []).append(n)
        now = time.monotonic()
        views, joined = [], set()
        for host_id, rows in hosts.items():
            row = rows[0]
            total, free = row["Resources"], row["Available"]
            if not any(v for k, v in total.items() if k not in _SIZES):
                continue  # the head, or a host that offers nothing
            pid = row["Labels"].get(NODE_LABEL)
            if pid is not None and pid not in ours:
                continue  # being stopped
            idle = all(free.get(k, 0.0) >= v - 1e-9 for k, v in total.items() if k not in _SIZES)
            since = self._idle_since.setdefault(host_id, now) if idle else None
            if not idle:
                self._idle_since.pop(host_id, None)
            joined.add(pid)
            views.append(
                NodeView(
                    pid if pid is not None else host_id,
                    ours.get(pid) if pid is not None else None,
                    total,
                    free,
                    now - since if since is not None else 0.0,
                )
            )
        by_name = {t.name: t for t in self.types}
        for pid, type_name in ours.items():
            if pid not in joined and type_name in by_name:  # launched, still joining
                views.append(NodeView(pid, type_name, by_name[type_name].resources))
        return views

    def update(self) -> Decision:
        """Read demand and nodes, decide, launch and stop; the decision."""
        nodes = self.nodes()
        decision = decide(
            self.types,
            nodes,
            pending_demand(),
            sdk.requested_resources(),
            idle_timeout_s=self.idle_timeout_s,
        )
        by_name = {t.name: t for t in self.types}
        for type_name, n in decision.launch.items():
            for _ in range(n):
                node_id = self.provider.create_node(by_name[type_name])
                log.info("autoscaler: started node %s of type %s", node_id, type_name)
        for node_id in decision.terminate:
            log.info("autoscaler: stopping idle node %s", node_id)
            self.provider.terminate_node(node_id)
        self.last = decision
        return decision

    def start(self) -> None:
        """Run :meth:`update` every ``period_s`` on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("the autoscaler is already running")
        self._thread = threading.Thread(target=self._run, name="runtime-autoscaler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.update()
            except Exception as exc:  # one failed round must not end the autoscaler
                self.errors.append(f"{type(exc).__name__}: {exc}")
                del self.errors[:-20]
                log.warning("autoscaler update failed: %s", exc)
            self._stop.wait(self.period_s)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop (the provider's nodes keep running; ``provider.close()`` ends them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


__all__ = ["Autoscaler", "pending_demand"]
