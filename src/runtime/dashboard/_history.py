"""The cluster's recent past, sampled by the dashboard: per-process CPU, memory, store use and
task and call counts, and the values Tune trials and Train runs report, for the charts.

Each sample is the set of metrics snapshots of every process (``ReadMetrics``); a point keeps
only the few numbers the charts draw, for the last ``keep`` samples (ten minutes at the default
two seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Trial values kept per point, at most (300 points of them: a big sweep stays bounded).
MAX_TRIAL_VALUES = 2000


def family(snap: dict[str, Any], name: str) -> list[list[Any]]:
    """The samples of family ``name`` in one process's snapshot (none: empty)."""
    for fam in snap.get("families", []):
        if fam["name"] == name:
            return list(fam["samples"])
    return []


def total(snap: dict[str, Any], name: str, **tags: str) -> float:
    """The sum of family ``name``'s values whose tags match ``tags``."""
    return sum(
        float(s[1])
        for s in family(snap, name)
        if all(s[0].get(k) == v for k, v in tags.items()) and not isinstance(s[1], list)
    )


def member_label(snap: dict[str, Any]) -> str:
    """How a chart names a process: its role and the start of its id."""
    return f"{snap.get('role', '?')} {str(snap.get('node_id', ''))[:8]}"


@dataclass
class Point:
    time: float
    #: member label -> (cpu seconds, rss bytes, store bytes in memory, tasks done, calls done)
    members: dict[str, tuple[float, float, float, float, float]] = field(default_factory=dict)
    #: (experiment, trial id, metric) -> last reported value
    trials: dict[tuple[str, str, str], float] = field(default_factory=dict)
    #: Train run -> reports so far
    reports: dict[str, float] = field(default_factory=dict)


class History:
    """The last ``keep`` points, and the last full set of snapshots."""

    def __init__(self, keep: int = 300) -> None:
        self.points: deque[Point] = deque(maxlen=keep)
        self.latest: list[dict[str, Any]] = []

    def add(self, when: float, snaps: Iterable[dict[str, Any]]) -> None:
        self.latest = list(snaps)
        point = Point(when)
        for snap in self.latest:
            point.members[member_label(snap)] = (
                total(snap, "runtime_process_cpu_seconds"),
                total(snap, "runtime_process_resident_memory_bytes"),
                total(snap, "runtime_object_store_bytes", where="memory"),
                total(snap, "runtime_tasks_finished"),
                total(snap, "runtime_actor_calls"),
            )
            for tags, value in family(snap, "runtime_tune_trial_result"):
                if len(point.trials) >= MAX_TRIAL_VALUES:
                    break
                key = (tags.get("experiment", ""), tags.get("trial_id", ""), tags.get("metric", ""))
                point.trials[key] = float(value)
            for tags, value in family(snap, "runtime_train_reports"):
                run = tags.get("run", "")
                point.reports[run] = point.reports.get(run, 0.0) + float(value)
        self.points.append(point)

    def member_series(
        self, index: int, rate: bool, scale: float = 1.0
    ) -> dict[str, list[tuple[float, float]]]:
        """Per member, value ``index`` of each point (or its rate per second)."""
        out: dict[str, list[tuple[float, float]]] = {}
        prev: Point | None = None
        for point in self.points:
            for label, values in point.members.items():
                if not rate:
                    out.setdefault(label, []).append((point.time, values[index] * scale))
                elif prev is not None and label in prev.members and point.time > prev.time:
                    delta = values[index] - prev.members[label][index]
                    per_s = max(0.0, delta) / (point.time - prev.time)
                    out.setdefault(label, []).append((point.time, per_s * scale))
            prev = point
        return out

    def trial_series(self, experiment: str, metric: str) -> dict[str, list[tuple[float, float]]]:
        """Per trial of ``experiment``, its reported ``metric`` over time."""
        out: dict[str, list[tuple[float, float]]] = {}
        for point in self.points:
            for (exp, trial, name), value in point.trials.items():
                if exp == experiment and name == metric:
                    out.setdefault(trial, []).append((point.time, value))
        return out

    def report_rate(self, run: str, window: int = 5) -> float:
        """Train reports per second of ``run`` over the last ``window`` samples."""
        pts = [p for p in list(self.points)[-window - 1 :] if run in p.reports]
        if len(pts) < 2 or pts[-1].time <= pts[0].time:
            return 0.0
        return (pts[-1].reports[run] - pts[0].reports[run]) / (pts[-1].time - pts[0].time)
