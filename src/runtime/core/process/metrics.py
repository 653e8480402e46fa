"""One process's metrics snapshot: the counters of ``common.metrics`` plus gauges read from
the worker's state when asked (tasks by state, the object store, connections, loop lag, CPU
and memory; on the head, actors by state, members and heartbeat delays).

The head asks every member for it (``ReadMetrics``) when its metrics endpoint is scraped or
its dashboard samples the cluster: nothing is computed between scrapes. The answer is plain
data (see ``common.metrics``); the process's identity (``node_id``, ``role``, ``pid``) goes
with it for the renderer to add as labels.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..common import metrics
from ..objects import serialization as ser
from ..wire.heartbeat import now as heartbeat_now
from ..wire.transport import Connection
from .inspect import InspectHost

if TYPE_CHECKING:
    from ..control.head import Head
    from ..execution.executor import Executor
    from ..objects.store import ObjectStore
    from .lag import LoopLagMonitor

_TASK_STATES = ("RUNNING", "QUEUED", "PENDING_ARGS")


class MetricsHost(InspectHost, Protocol):
    """What a snapshot reads of the worker (its identity and executor as an ``Inspect``
    answer does, and more)."""

    @property
    def conns(self) -> dict[str, Connection]: ...
    @property
    def store(self) -> ObjectStore: ...
    @property
    def head(self) -> Head | None: ...
    @property
    def lag_monitor(self) -> LoopLagMonitor | None: ...
    @property
    def tasks(self) -> Mapping[bytes, object]: ...


_process: Any = None  # psutil.Process of this process, made on first use


def _usage() -> tuple[float, int]:
    """(CPU seconds used, resident bytes) of this process."""
    global _process
    import psutil  # a dependency of the runtime; imported on the first snapshot only

    if _process is None or _process.pid != os.getpid():
        _process = psutil.Process()
    times = _process.cpu_times()
    return float(times.user + times.system), int(_process.memory_info().rss)


def snapshot(worker: MetricsHost) -> dict[str, Any]:
    """This process's identity and its metric families (plain data)."""
    g = metrics.gauge
    cpu, rss = _usage()
    families = metrics.snapshot()
    families.append(
        {
            "name": "runtime_process_cpu_seconds",
            "type": "counter",
            "help": "CPU time (user and system) this process used, in seconds",
            "samples": [[{}, cpu]],
        }
    )
    families.append(g("runtime_process_resident_memory_bytes", "Resident memory", [[{}, rss]]))
    families.append(
        g("runtime_connections", "Open mesh connections to peers", [[{}, len(worker.conns)]])
    )
    families.append(
        g(
            "runtime_tasks_owned",
            "Tasks and actor calls this process submitted and waits on",
            [[{}, len(worker.tasks)]],
        )
    )
    lag = worker.lag_monitor
    if lag is not None:
        families.append(
            g(
                "runtime_loop_lag_seconds",
                "How late the event loop ran its last tick",
                [[{}, lag.lag]],
            )
        )
        families.append(
            g("runtime_loop_lag_worst_seconds", "The longest loop block so far", [[{}, lag.worst]])
        )
    store = worker.store.stats()
    families.append(
        g(
            "runtime_object_store_bytes",
            "Bytes of objects in this process's store, by where they are",
            [
                [{"where": "memory"}, store["used"]],
                [{"where": "spilled"}, store["spilled"]],
                [{"where": "pinned"}, store["pinned_by_readers"]],
            ],
        )
    )
    families.append(
        g(
            "runtime_object_store_capacity_bytes",
            "The store's memory capacity",
            [[{}, store["capacity"]]],
        )
    )
    families.append(
        g("runtime_objects", "Objects in this process's store", [[{}, store["objects"]]])
    )
    if worker.executor is not None:
        families.append(_tasks(worker.executor))
    if worker.head is not None:
        families.extend(_head(worker.head))
    return {
        "failures": [
            [t, kind, name, task_id.hex(), _error_text(error)]
            for t, kind, name, task_id, error in list(metrics.FAILURES)
        ],
        "node_id": worker.peer_id,
        "role": worker.role,
        "pid": os.getpid(),
        "time": time.time(),
        "families": families,
    }


def _error_text(value: Any) -> str:
    try:
        text = str(ser.error_from_value(value))
    except Exception as exc:  # an error that cannot be read back here is shown as such
        text = f"(unreadable error: {type(exc).__name__})"
    return text if len(text) <= 2000 else text[:2000] + "..."


def _tasks(executor: Executor) -> dict[str, Any]:
    counts: Counter[tuple[str, str]] = Counter()
    for job in list(executor.jobs.values()):
        state = "RUNNING" if job.ctx is not None else "QUEUED" if job.ready else "PENDING_ARGS"
        counts[(state, "actor_call" if job.actor_id else "task")] += 1
    samples: list[list[Any]] = [
        [{"state": state, "kind": kind}, counts[(state, kind)]]
        for state in _TASK_STATES
        for kind in ("task", "actor_call")
    ]
    return metrics.gauge("runtime_tasks", "Tasks and actor calls here, by state", samples)


def _head(head: Head) -> list[dict[str, Any]]:
    g = metrics.gauge
    actors = Counter(r.state for r in head.directory.actors.values())
    nodes = Counter("driver" if n.is_driver else "node" for n in head.nodes.values())
    now = heartbeat_now()
    detector = head.detector
    beats = [
        [{"peer": node_id}, detector.silence(node_id, now) or 0.0]
        for node_id in list(detector.last_seen)
    ]
    groups = Counter(rec.state for rec in head.placement.groups.values())
    return [
        g(
            "runtime_actors",
            "Actors in the cluster, by state",
            [[{"state": s}, n] for s, n in actors.items()],
        ),
        g(
            "runtime_members",
            "Members of the cluster",
            [[{"kind": k}, n] for k, n in nodes.items()],
        ),
        g("runtime_heartbeat_age_seconds", "Time since each member's last heartbeat", beats),
        g(
            "runtime_placement_groups",
            "Placement groups, by state",
            [[{"state": s}, n] for s, n in groups.items()],
        ),
    ]


__all__ = ["MetricsHost", "snapshot"]
