"""Looking into a running cluster: the recent output of its nodes, the timeline of the calls
they ran, the stack of every thread and asyncio task, and what pins memory.

Each view gathers one answer from every live member (:class:`~runtime.core.wire.protocol.
Inspect`, answered by :mod:`runtime.core.process.inspect`) and merges them. The ``async``
functions take the process's worker and run on its loop (the dashboard calls them there);
the plain ones are the blocking facade (the CLI and ``runtime.timeline()``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..common.exceptions import RuntimeBaseError
from ..objects.plane import merge_object_rows
from ..process.inspect import answer
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker

if TYPE_CHECKING:
    from ..process.worker import Worker

#: How long one member may take to answer before it is left out.
ANSWER_TIMEOUT_S = 10.0

Cursor = dict[str, int]


async def gather(
    worker: Worker,
    what: str,
    args: dict[str, Any] | Callable[[str], dict[str, Any]] | None = None,
    *,
    nodes: Iterable[str] | None = None,
    timeout: float = ANSWER_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """The answers of this process (when it is a node) and of every other live member to
    ``Inspect(what, args)`` (``args``: the same for all, or a function of the member's id);
    ``nodes`` keeps the members whose id starts with one of them. A member that leaves or
    does not answer within ``timeout`` is left out."""
    args_of = args if callable(args) else (lambda node_id, same=dict(args or {}): same)
    wanted = [n.lower() for n in nodes] if nodes is not None else None

    def picked(node_id: str) -> bool:
        return wanted is None or any(node_id.startswith(w) for w in wanted)

    async def ask(node: p.NodeInfo) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(timeout):
                conn = await worker.connect_peer(node.node_id, node.address)
                reply = await worker.request(conn, p.Inspect(0, what, args_of(node.node_id)))
        except (OSError, ConnectionError, RuntimeBaseError, TimeoutError):
            return None
        if not isinstance(reply, p.Reply) or reply.error is not None:
            return None
        return reply.value if isinstance(reply.value, dict) else None

    out: list[dict[str, Any]] = []
    if worker.executor is not None and picked(worker.peer_id):
        out.append(answer(worker, what, args_of(worker.peer_id)))
    members = [
        n
        for n in worker.view.values()
        if n.alive and n.node_id != worker.peer_id and picked(n.node_id)
    ]
    answers = await asyncio.gather(*[ask(n) for n in members])
    out.extend(a for a in answers if a is not None)
    return out


# --- logs ------------------------------------------------------------------------------------


async def read_logs(
    worker: Worker,
    *,
    node: str | None = None,
    actor: str | None = None,
    task: str | None = None,
    tail: int | None = None,
    cursor: Cursor | None = None,
) -> tuple[list[dict[str, Any]], Cursor]:
    """The recent output lines kept by the nodes, oldest first, and the cursor to pass next
    time for the lines that come after them (``--follow``).

    ``node``: a node id (prefix); ``actor``: an actor's id (prefix), name or class; ``task``:
    a task's id (prefix), function or method name; ``tail``: the last N lines only. Each
    line is a dict: ``time``, ``node_id``, ``pid``, ``stream``, ``source`` (the tag the
    driver shows), ``task_id``, ``task_name``, ``actor_id``, ``actor_name``, ``message``.
    A node that dropped lines the cursor had not seen yet adds a line that says how many.
    """
    cursor = dict(cursor or {})
    args: dict[str, Any] = {"actor": actor or "", "task": task or ""}
    if tail is not None:
        args["tail"] = tail
    answers = await gather(
        worker,
        "logs",
        lambda node_id: {**args, "after": cursor.get(node_id, 0)},  # each from where it was
        nodes=[node] if node else None,
    )
    lines: list[dict[str, Any]] = []
    for a in answers:
        node_id = a["node_id"]
        seen = cursor.get(node_id)
        if seen is not None and a["first_seq"] > seen + 1:
            lines.append(_missed(a, a["first_seq"] - seen - 1))
        lines.extend(a["lines"])
        cursor[node_id] = max(a["last_seq"], seen or 0)
    lines.sort(key=lambda line: (line["time"], line["seq"]))
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return lines, cursor


def _missed(a: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "seq": a["first_seq"] - 1,
        "time": 0.0,
        "node_id": a["node_id"],
        "pid": a["pid"],
        "stream": "stderr",
        "source": f"runtime pid={a['pid']}",
        "task_id": "",
        "task_name": "",
        "actor_id": "",
        "actor_name": "",
        "message": f"[{n} lines no longer kept on this node were skipped]",
    }


def get_logs(
    *,
    node: str | None = None,
    actor: str | None = None,
    task: str | None = None,
    tail: int | None = None,
    cursor: Cursor | None = None,
) -> tuple[list[dict[str, Any]], Cursor]:
    """:func:`read_logs` for sync code (the connected cluster)."""
    worker = current_worker()
    coro = read_logs(worker, node=node, actor=actor, task=task, tail=tail, cursor=cursor)
    result: tuple[list[dict[str, Any]], Cursor] = _blocking(worker, coro)
    return result


def format_line(line: dict[str, Any]) -> str:
    """A line as the driver prints forwarded output: ``(name pid=N) text``."""
    return f"({line['source']}) {line['message']}"


# --- timeline --------------------------------------------------------------------------------


async def read_timeline(worker: Worker) -> list[dict[str, Any]]:
    """The recent tasks and actor calls of every node as Chrome trace events."""
    return chrome_trace(await gather(worker, "timeline"))


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The recent tasks and actor calls of every node of the cluster, as Chrome trace events
    (load them in Perfetto, ui.perfetto.dev, or chrome://tracing), as Ray's ``ray.timeline``.

    One process per node (its pid), one track per thread that ran sync calls, and tracks
    for the calls that ran on the node's event loop (``async def``), waited in a queue
    (resources, the actor's mailbox) or fetched their arguments. Each node keeps its last
    ``RUNTIME_TIMELINE_EVENTS`` calls (20,000 by default).

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


def chrome_trace(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chrome trace events ("X" spans in microseconds since the epoch, and "M" names) from
    the members' timeline answers."""
    out: list[dict[str, Any]] = []
    for a in sorted(answers, key=lambda a: (a.get("role") != "head", a["node_id"])):
        pid = int(a["pid"])
        offset = int(a["offset_ns"])
        out.append(_meta("process_name", pid, 0, f"{a['role']} {a['node_id'][:8]} pid={pid}"))
        tracks = _Tracks(pid, out)
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
                track = tracks.track(a["threads"].get(str(tid), f"thread {tid}"))
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


# --- stacks ----------------------------------------------------------------------------------


async def read_stacks(worker: Worker, node: str | None = None) -> list[dict[str, Any]]:
    """Every member's threads and asyncio tasks with their stacks (``python -m runtime
    stack``): per member ``node_id``, ``pid``, ``role``, ``threads`` and ``tasks``."""
    return await gather(worker, "stack", nodes=[node] if node else None)


def get_stacks(node: str | None = None) -> list[dict[str, Any]]:
    """:func:`read_stacks` for sync code."""
    worker = current_worker()
    stacks: list[dict[str, Any]] = _blocking(worker, read_stacks(worker, node))
    return stacks


def format_stacks(answers: list[dict[str, Any]], *, all_threads: bool = False) -> str:
    """The stacks as text, the innermost frame last (as Python prints a traceback); idle
    pool threads are left out unless ``all_threads``."""
    lines: list[str] = []
    for a in sorted(answers, key=lambda a: (a.get("role") != "head", a["node_id"])):
        lines.append(f"=== {a['role']} {a['node_id']} pid={a['pid']} ===")
        idle = 0
        for t in a["threads"]:
            if t["idle"] and not all_threads:
                idle += 1
                continue
            what = f", running {t['running']}" if t["running"] else ""
            note = f" [{t['note']}]" if t["note"] else ""
            lines.append(f"--- thread {t['name']!r}{what}{note}")
            lines.extend(_frames(t["frames"]))
        if idle:
            lines.append(f"({idle} idle threads not shown; --all shows them)")
        for task in a["tasks"]:
            what = f", running {task['running']}" if task["running"] else ""
            lines.append(f"--- asyncio task {task['name']!r}{what}")
            lines.extend(_frames(task["frames"]))
            if task["waiting_on"]:
                lines.append(f"    waiting on {task['waiting_on']}")
        if a.get("more_tasks"):
            lines.append(f"({a['more_tasks']} more asyncio tasks not shown)")
        lines.append("")
    return "\n".join(lines)


def _frames(frames: list[list[Any]]) -> list[str]:
    out = []
    for filename, lineno, name, line in frames:
        out.append(f'  File "{filename}", line {lineno}, in {name}')
        if line:
            out.append(f"    {line}")
    return out


# --- memory ----------------------------------------------------------------------------------


async def read_memory(worker: Worker, group_by: str = "owner") -> dict[str, Any]:
    """What pins memory in the cluster (``python -m runtime memory``), as Ray's ``ray memory``.

    Returns ``objects`` (one row per object: its size, owner, where its bytes are, why it is
    kept, and the call site that made it when recording is on), ``groups`` (objects and
    bytes per owner or per call site, ``group_by``), and ``stores`` (each node's object
    store: used, capacity, spilled). Call sites are recorded only where
    ``RUNTIME_RECORD_REF_CREATION_SITES=1`` (Ray: ``RAY_record_ref_creation_sites``).
    """
    if group_by not in ("owner", "call_site", "node"):
        raise ValueError(f"group_by must be 'owner', 'call_site' or 'node', not {group_by!r}")
    answers = [worker.objects.object_rows(), *await worker.ask_members(p.ListObjects)]
    members = {n.node_id: n for n in worker.view.values()}
    rows = merge_object_rows(answers)
    for row in rows:
        owner = members.get(row["owner"])
        row["owner_pid"] = owner.pid if owner is not None else None
        row["owner_kind"] = "" if owner is None else "driver" if owner.is_driver else "node"
        row["reference_type"] = _reference_type(row)
        row["call_site"] = row.get("call_site") or "(disabled)"
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if group_by == "owner":
            key = f"{row['owner_kind'] or 'member'} {row['owner'][:8]} pid={row['owner_pid']}"
        elif group_by == "node":
            key = f"stored on {row['stored_on']}" if row["stored_on"] else "inline in its owner"
        else:
            key = row["call_site"]
        row["group"] = key
        g = groups.setdefault(key, {"group": key, "objects": 0, "bytes": 0, "where": {}})
        g["objects"] += 1
        g["bytes"] += int(row["size"])
        where = row["where"] or "unknown"
        g["where"][where] = g["where"].get(where, 0) + 1
    stores = [{"node_id": a.get("worker", ""), **a["store"]} for a in answers if a.get("store")]
    return {
        "objects": rows,
        "groups": sorted(groups.values(), key=lambda g: (-g["bytes"], g["group"])),
        "stores": stores,
        "group_by": group_by,
        "total_bytes": sum(int(r["size"]) for r in rows),
    }


def _reference_type(row: dict[str, Any]) -> str:
    """Why it is kept (Ray's reference types): the owner holds a ref, another process
    borrows one, or a value in flight pins it (a call's argument, a ref inside an object)."""
    kinds = []
    if row["local_refs"]:
        kinds.append("LOCAL_REFERENCE")
    if row["borrowers"]:
        kinds.append("BORROWED")
    if int(row["remote_refs"]) > len(row["borrowers"]):
        kinds.append("PINNED_IN_FLIGHT")
    if row["where"] == "spilled":
        kinds.append("SPILLED")
    return ",".join(kinds) or "UNREFERENCED"


def get_memory(group_by: str = "owner") -> dict[str, Any]:
    """:func:`read_memory` for sync code."""
    worker = current_worker()
    summary: dict[str, Any] = _blocking(worker, read_memory(worker, group_by))
    return summary


def format_memory(summary: dict[str, Any], units: str = "B", *, objects: bool = True) -> str:
    """The memory summary as text: one section per group (its objects unless not
    ``objects``), then the stores."""
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[units]

    def size(n: int) -> str:
        return f"{n} B" if scale == 1 else f"{n / scale:.2f} {units}"

    rows = summary["objects"]
    by = summary["group_by"]
    lines = [f"{len(rows)} objects, {size(summary['total_bytes'])}, grouped by {by}"]
    for g in summary["groups"]:
        where = ", ".join(f"{n} {w}" for w, n in sorted(g["where"].items()))
        lines.append("")
        lines.append(f"--- {g['group']}: {g['objects']} objects, {size(g['bytes'])} ({where})")
        if not objects:
            continue
        head = f"{'OBJECT_ID':<40} {'SIZE':>12} {'WHERE':<8} {'REFERENCE_TYPE':<32}"
        lines.append(f"  {head} CALL_SITE")
        for r in rows:
            if r["group"] != g["group"]:
                continue
            lines.append(
                f"  {r['object_id']:<40} {size(int(r['size'])):>12} {r['where'] or '-':<8} "
                f"{r['reference_type']:<32} {r['call_site']}"
            )
    lines.append("")
    lines.append("object stores:")
    for st in summary["stores"]:
        lines.append(
            f"  {st['node_id'][:8]}: {size(int(st.get('used', 0)))} used of "
            f"{size(int(st.get('capacity', 0)))}, {size(int(st.get('spilled', 0)))} spilled, "
            f"{st.get('objects', 0)} objects"
        )
    return "\n".join(lines)


__all__ = [
    "chrome_trace",
    "format_line",
    "format_memory",
    "format_stacks",
    "gather",
    "get_logs",
    "get_memory",
    "get_stacks",
    "read_logs",
    "read_memory",
    "read_stacks",
    "read_timeline",
    "timeline",
]
