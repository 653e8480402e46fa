"""A process's metrics: plain counters the hot paths bump, and the application metrics of
:mod:`runtime.util.metrics`, read out as one snapshot of plain data.

Collecting costs the hot path an integer increment: the runtime's own counters are module
lists (``TASKS_DONE[failed] += 1``, on the loop thread) and the call-latency histogram is a
list of bucket counts. Nothing here takes a lock on the per-call path and nothing imports
``prometheus_client``: :func:`snapshot` turns the counters into plain families (dicts and
lists, msgpack-ready) that travel to the head, which renders them in Prometheus' text format
only when scraped (``runtime.dashboard``).

A family in a snapshot is ``{"name", "type", "help", "samples"}``: for a counter or a gauge
each sample is ``[tags, value]``; for a histogram ``[tags, boundaries, bucket counts (one more
than boundaries: the last is +Inf), sum]``. A counter's name has no ``_total`` suffix (the
renderer adds it, as Prometheus' client does).
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import Any, Final

#: Tasks this process ran to the end: ``[succeeded, failed]`` (loop thread only).
TASKS_DONE: Final[list[int]] = [0, 0]
#: Actor calls this process ran to the end: ``[succeeded, failed]`` (loop thread only).
CALLS_DONE: Final[list[int]] = [0, 0]
#: Bytes this process's object store wrote to spill files, and read back from them.
SPILL_BYTES: Final[list[int]] = [0, 0]

#: Actor call latency (received to answered, in seconds): bucket upper bounds.
CALL_BOUNDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                      5.0, 10.0, 30.0, 60.0)  # fmt: skip
#: Counts per bucket (the last is +Inf) and, at index ``len(CALL_BOUNDS) + 1``, the sum.
CALL_LATENCY: Final[list[float]] = [0] * (len(CALL_BOUNDS) + 2)
_SUM: Final = len(CALL_BOUNDS) + 1


#: The last failed tasks and actor calls: (time, "task" | "actor_call", name, task id, error
#: value); the process layer turns the errors into text when asked.
FAILURES: Final[deque[tuple[float, str, str, bytes, Any]]] = deque(maxlen=50)


def failed(kind: str, name: str, task_id: bytes, error: Any) -> None:
    """Count one failed task (``kind`` "task") or actor call ("actor_call"), and keep it."""
    (TASKS_DONE if kind == "task" else CALLS_DONE)[1] += 1
    FAILURES.append((time.time(), kind, name, task_id, error))


def observe_call(seconds: float) -> None:
    """Count one actor call that took ``seconds`` (loop thread)."""
    CALL_LATENCY[bisect_left(CALL_BOUNDS, seconds)] += 1
    CALL_LATENCY[_SUM] += seconds


# --- application metrics (runtime.util.metrics) -----------------------------------------------

KINDS: Final = ("counter", "gauge", "histogram")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TAG = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DEFAULT_BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Family:
    """One named application metric of this process: its values by tag values."""

    def __init__(
        self, name: str, kind: str, help: str, tag_keys: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.tag_keys = tag_keys
        self.bounds = bounds
        #: tag values (in ``tag_keys`` order) -> value, or [bucket counts..., sum]
        self.values: dict[tuple[str, ...], Any] = {}
        self.lock = threading.Lock()  # sync actor methods record from pool threads

    def add(self, key: tuple[str, ...], amount: float) -> None:
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, key: tuple[str, ...], value: float) -> None:
        self.values[key] = float(value)  # one store: atomic under the GIL

    def observe(self, key: tuple[str, ...], value: float) -> None:
        with self.lock:
            counts = self.values.get(key)
            if counts is None:
                counts = self.values[key] = [0] * (len(self.bounds) + 1) + [0.0]
            counts[bisect_left(self.bounds, value)] += 1
            counts[-1] += value

    def samples(self) -> list[list[Any]]:
        with self.lock:
            items = list(self.values.items())
        out: list[list[Any]] = []
        for key, value in items:
            tags = dict(zip(self.tag_keys, key, strict=True))
            if self.kind == "histogram":
                out.append([tags, list(self.bounds), list(value[:-1]), value[-1]])
            else:
                out.append([tags, value])
        return out


#: This process's application metrics by name.
REGISTRY: Final[dict[str, Family]] = {}
_registry_lock = threading.Lock()


def register(
    name: str,
    kind: str,
    help: str = "",
    tag_keys: tuple[str, ...] = (),
    bounds: tuple[float, ...] = DEFAULT_BOUNDS,
) -> Family:
    """The family ``name`` (made on first use). Raises ``ValueError`` for a bad name or tag
    key, or when ``name`` is already a metric of another kind or other tag keys."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"bad metric name {name!r}: use letters, digits, _ and :")
    for key in tag_keys:
        if not isinstance(key, str) or not _TAG.match(key) or key.startswith("__"):
            raise ValueError(f"bad tag key {key!r} of metric {name!r}")
    if len(set(tag_keys)) != len(tag_keys):
        raise ValueError(f"metric {name!r} names a tag key twice: {tag_keys}")
    if kind == "histogram" and (
        not bounds or any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds))
    ):
        raise ValueError(f"histogram {name!r} needs increasing positive boundaries: {bounds}")
    with _registry_lock:
        family = REGISTRY.get(name)
        if family is None:
            family = REGISTRY[name] = Family(name, kind, help, tuple(tag_keys), tuple(bounds))
        elif family.kind != kind or family.tag_keys != tuple(tag_keys):
            raise ValueError(
                f"metric {name!r} is already a {family.kind} with tag keys {family.tag_keys}"
            )
        return family


def snapshot() -> list[dict[str, Any]]:
    """The runtime's counters and every application metric of this process, as families."""
    counts = list(CALL_LATENCY)
    families: list[dict[str, Any]] = [
        _counter(
            "runtime_tasks_finished",
            "Tasks this process ran to the end, by outcome",
            [[{"outcome": "succeeded"}, TASKS_DONE[0]], [{"outcome": "failed"}, TASKS_DONE[1]]],
        ),
        _counter(
            "runtime_actor_calls",
            "Actor calls this process ran to the end, by outcome",
            [[{"outcome": "succeeded"}, CALLS_DONE[0]], [{"outcome": "failed"}, CALLS_DONE[1]]],
        ),
        {
            "name": "runtime_actor_call_latency_seconds",
            "type": "histogram",
            "help": "Actor calls from received to answered, in seconds",
            "samples": [[{}, list(CALL_BOUNDS), counts[:_SUM], counts[_SUM]]],
        },
        _counter(
            "runtime_object_spilled_bytes",
            "Bytes the object store wrote to spill files",
            [[{}, SPILL_BYTES[0]]],
        ),
        _counter(
            "runtime_object_restored_bytes",
            "Bytes the object store mapped back from spill files",
            [[{}, SPILL_BYTES[1]]],
        ),
    ]
    with _registry_lock:
        user = list(REGISTRY.values())
    for family in user:
        families.append(
            {
                "name": family.name,
                "type": family.kind,
                "help": family.help,
                "samples": family.samples(),
            }
        )
    return families


def _counter(name: str, help: str, samples: list[list[Any]]) -> dict[str, Any]:
    return {"name": name, "type": "counter", "help": help, "samples": samples}


def gauge(name: str, help: str, samples: list[list[Any]]) -> dict[str, Any]:
    """A gauge family for a snapshot (the process layer adds its gauges with it)."""
    return {"name": name, "type": "gauge", "help": help, "samples": samples}


__all__ = [
    "CALLS_DONE",
    "CALL_BOUNDS",
    "CALL_LATENCY",
    "DEFAULT_BOUNDS",
    "FAILURES",
    "KINDS",
    "REGISTRY",
    "SPILL_BYTES",
    "TASKS_DONE",
    "Family",
    "failed",
    "gauge",
    "observe_call",
    "register",
    "snapshot",
]
