"""Looking into a running cluster: gathering what every member answers to ``Inspect``, the
recent output of the nodes, and the stack of every thread and asyncio task.

Each view gathers one answer from every live member (:class:`~runtime.core.wire.protocol.
Inspect`, answered by :mod:`runtime.core.process.inspect`) and merges them. The ``async``
functions take the process's worker and run on its loop (the dashboard calls them there);
the plain ones are the blocking facade (the CLI). The timeline and the memory view are
:mod:`.timeline` and :mod:`.memory`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..common.exceptions import RuntimeBaseError
from ..process.inspect import answer
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker

if TYPE_CHECKING:
    from ..process.worker import Worker


def answer_timeout() -> float:
    """How long one member may take to answer before it is left out
    (``RUNTIME_INSPECT_TIMEOUT_S``, default 10 s)."""
    try:
        return max(0.1, float(os.environ.get("RUNTIME_INSPECT_TIMEOUT_S", "10")))
    except ValueError:
        return 10.0


Cursor = dict[str, int]


async def gather(
    worker: Worker,
    what: str,
    args: dict[str, Any] | Callable[[str], dict[str, Any]] | None = None,
    *,
    nodes: Iterable[str] | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """The answers of this process (when it is a node) and of every other live member to
    ``Inspect(what, args)`` (``args``: the same for all, or a function of the member's id);
    ``nodes`` keeps the members whose id starts with one of them. A member that leaves or
    does not answer within ``timeout`` is left out."""
    timeout = answer_timeout() if timeout is None else timeout
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
    When ``node`` names no live process, its log file is read (it outlives the process):
    the lines then carry the tag they were written with (``source``), and a time only in
    the JSON format.
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
    if node and not answers and not cursor:  # no live process: the files of one that is gone
        return await _logs_from_files(worker, node, tail or 0, actor, task), cursor
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


async def _logs_from_files(
    worker: Worker, node: str, tail: int, actor: str | None, task: str | None
) -> list[dict[str, Any]]:
    """The lines a node process that is gone left in its log file (on its host's live
    members), with what each line says of who printed it (all of it in the JSON format)."""
    answers = await gather(worker, "log_files", {"node": node, "tail": tail or 1000})
    seen: set[str] = set()
    lines: list[dict[str, Any]] = []
    for a in answers:
        for f in a["files"]:
            if f["node_id"] in seen:  # processes of one host share its state directory
                continue
            seen.add(f["node_id"])
            lines.extend(
                _parse_file_line(f["node_id"], i, text) for i, text in enumerate(f["lines"])
            )
    for want, name, ident in ((actor, "actor_name", "actor_id"), (task, "task_name", "task_id")):
        if want:  # a text line names who printed it in its tag only
            lines = [
                line
                for line in lines
                if want in (line[name], line[ident], line["source"].rpartition(" pid=")[0])
            ]
    return lines[-tail:] if tail else lines


def _parse_file_line(node_id: str, index: int, text: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "seq": index, "time": 0.0, "node_id": node_id, "pid": None, "stream": "stdout",
        "source": "", "task_id": "", "task_name": "", "actor_id": "", "actor_name": "",
        "message": text,
    }  # fmt: skip
    if text.startswith("{"):  # RUNTIME_LOG_FORMAT=json: every field is there
        try:
            record = json.loads(text)
        except ValueError:
            return line
        if isinstance(record, dict):
            line.update({k: v for k, v in record.items() if k in line})
        return line
    if text.startswith("(") and ") " in text:  # "(name pid=N) message"
        source, message = text[1:].split(") ", 1)
        pid = source.rpartition(" pid=")[2]
        line.update(source=source, message=message, pid=int(pid) if pid.isdigit() else None)
    return line


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


__all__ = [
    "Cursor",
    "answer_timeout",
    "format_line",
    "format_stacks",
    "gather",
    "get_logs",
    "get_stacks",
    "read_logs",
    "read_stacks",
]
