"""The timeline of the cluster: the recent tasks and actor calls of every node as Chrome trace
events (``python -m runtime timeline``, ``runtime.timeline()``), from each node's ring of
calls (:mod:`runtime.core.execution.events`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .blocking import blocking as _blocking
from .blocking import current_worker
from .observe import gather

if TYPE_CHECKING:
    from ..process.worker import Worker


async def read_timeline(worker: Worker) -> list[dict[str, Any]]:
    """The recent tasks and actor calls of every node as Chrome trace events."""
    return chrome_trace(await gather(worker, "timeline"))


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The recent tasks and actor calls of every node of the cluster, as Chrome trace events
    (load them in Perfetto, ui.perfetto.dev, or chrome://tracing), as Ray's ``ray.timeline``.

    One process per node (its pid), one track per thread that ran sync calls, and tracks
    for the calls that ran on the node's event loop (``async def``), waited in a queue
    (resources, the actor's mailbox) or fetched their arguments. Each node keeps its last
    ``RUNTIME_TIMELINE_EVENTS`` calls (10,000 by default).

    Args:
        filename: write the events there as JSON and return None; None: return them.

    Example:
        >>> runtime.timeline("/tmp/trace.json")   # doctest: +SKIP
    """
    worker = current_worker()
    trace: list[dict[str, Any]] = _blocking(worker, read_timeline(worker))
    if filename is None:
        return trace
    with open(filename, "w", encoding="utf-8") as f:
        json.dump(trace, f)
    return None


class _Tracks:
    """The tracks (Chrome trace ``tid``s) of one process: its real threads, and numbered
    lanes for spans that may overlap (a span goes to the first lane free at its start)."""

    def __init__(self, pid: int, out: list[dict[str, Any]]) -> None:
        self.pid = pid
        self.out = out
        self.ids: dict[str, int] = {}
        self.lane_ends: dict[str, list[int]] = {}

    def track(self, name: str) -> int:
        tid = self.ids.get(name)
        if tid is None:
            tid = self.ids[name] = len(self.ids) + 1
            self.out.append(_meta("thread_name", self.pid, tid, name))
            self.out.append(
                {"ph": "M", "name": "thread_sort_index", "pid": self.pid, "tid": tid,
                 "args": {"sort_index": tid}}
            )  # fmt: skip
        return tid

    def lane(self, kind: str, start: int, end: int) -> int:
        ends = self.lane_ends.setdefault(kind, [])
        for i, last in enumerate(ends):
            if last <= start:
                ends[i] = end
                return self.track(f"{kind} #{i + 1}")
        ends.append(end)
        return self.track(f"{kind} #{len(ends)}")


def _meta(name: str, pid: int, tid: int, value: str) -> dict[str, Any]:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": {"name": value}}


def _thread_names(threads: dict[str, str]) -> dict[str, str]:
    """A track name per thread id: its thread's name, with the id where two live threads share
    a name (two actors of one class each with a thread of its own): one track each."""
    seen: dict[str, int] = {}
    for name in threads.values():
        seen[name] = seen.get(name, 0) + 1
    return {tid: name if seen[name] == 1 else f"{name} ({tid})" for tid, name in threads.items()}


def chrome_trace(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chrome trace events ("X" spans in microseconds since the epoch, and "M" names) from
    the members' timeline answers."""
    out: list[dict[str, Any]] = []
    for a in sorted(answers, key=lambda a: (a.get("role") != "head", a["node_id"])):
        pid = int(a["pid"])
        offset = int(a["offset_ns"])
        out.append(_meta("process_name", pid, 0, f"{a['role']} {a['node_id'][:8]} pid={pid}"))
        tracks = _Tracks(pid, out)
        threads = _thread_names(a["threads"])
        spans: list[tuple[int, int, int, str, str, str, bool]] = []
        events = sorted(a["events"], key=lambda e: e[2])
        for received, fetched, started, ended, label, tid, on_loop, failed, task_id in events:
            if fetched:
                spans.append((received, fetched, tracks.lane("fetch args", received, fetched),
                              label, "fetch", task_id, failed))  # fmt: skip
            queued = fetched or received
            if started > queued:
                spans.append((queued, started, tracks.lane("queued", queued, started),
                              label, "queue", task_id, failed))  # fmt: skip
            if on_loop:
                track = tracks.lane("event loop (async)", started, ended)
            else:
                track = tracks.track(threads.get(str(tid), f"thread {tid}"))
            spans.append((started, ended, track, label, "run", task_id, failed))
        for start, end, tid, label, cat, task_id, failed in spans:
            out.append(
                {
                    "name": label if cat == "run" else f"{label} ({cat})",
                    "cat": cat,
                    "ph": "X",
                    "ts": (start + offset) / 1000.0,
                    "dur": max(end - start, 0) / 1000.0,
                    "pid": pid,
                    "tid": tid,
                    "args": {"task_id": task_id, "failed": bool(failed)},
                }
            )
    return out


__all__ = ["chrome_trace", "read_timeline", "timeline"]
