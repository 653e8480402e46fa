"""What one member answers when asked to show itself (``Inspect``): its recent output, its
timeline of calls, and the stack of every thread and asyncio task it has now.

Each answer is a plain dict (it crosses the wire as msgpack); the caller merges the answers
of every member (:mod:`runtime.core.api.observe`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..execution import events
from ..execution.logs import current_sink

if TYPE_CHECKING:
    from ..execution.executor import Executor

#: The most frames shown per thread or task (the innermost ones).
MAX_FRAMES = 64
#: The most asyncio tasks listed per member (a loop may run thousands).
MAX_TASKS = 2000


class InspectHost(Protocol):
    """What answering needs of the worker (the worker is one)."""

    @property
    def peer_id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def executor(self) -> Executor | None: ...
    @property
    def state_dir(self) -> str | None: ...


def answer(host: InspectHost, what: str, args: dict[str, Any]) -> dict[str, Any]:
    """This member's answer to ``Inspect(what, args)``; ValueError for an unknown ``what``."""
    answers: dict[str, Callable[[InspectHost, dict[str, Any]], dict[str, Any]]] = {
        "logs": _logs,
        "log_files": _log_files,
        "timeline": _timeline,
        "stack": _stack,
    }
    fn = answers.get(what)
    if fn is None:
        raise ValueError(f"cannot inspect {what!r}: one of {sorted(answers)}")
    out = fn(host, args)
    out.update(node_id=host.peer_id, pid=os.getpid(), role=host.role)
    return out


def _logs(host: InspectHost, args: dict[str, Any]) -> dict[str, Any]:
    sink = current_sink()
    if sink is None:  # a driver: its output is its own terminal's
        return {"first_seq": 1, "last_seq": 0, "lines": []}
    tail = args.get("tail")
    return sink.query(
        after=int(args.get("after") or 0),
        tail=None if tail is None else int(tail),
        actor=args.get("actor") or None,
        task=args.get("task") or None,
    )


#: The most bytes of a log file read for one answer (its end).
MAX_FILE_TAIL = 4 * 1024 * 1024


def _log_files(host: InspectHost, args: dict[str, Any]) -> dict[str, Any]:
    """The end of the log files in this member's state directory of the node processes whose
    id starts with ``args["node"]`` (those of a node that is gone stay there): the last
    ``args["tail"]`` lines of each, the rotated file before the current one if need be."""
    want = str(args.get("node") or "").lower()
    tail = max(0, int(args.get("tail") or 1000))
    folder = os.path.join(host.state_dir, "logs") if host.state_dir else None
    if not want or folder is None or not os.path.isdir(folder):
        return {"files": []}
    files = []
    for name in sorted(os.listdir(folder)):
        if not (name.startswith(f"worker-{want}") and name.endswith(".log")):
            continue
        path = os.path.join(folder, name)
        lines: list[str] = []
        for part in (path, path + ".1"):  # newest first, until there are enough
            if len(lines) >= tail or not os.path.exists(part):
                continue
            lines = _file_tail(part, tail - len(lines)) + lines
        files.append({"node_id": name[len("worker-") : -len(".log")], "path": path, "lines": lines})
    return {"files": files}


def _file_tail(path: str, n: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - MAX_FILE_TAIL))
        data = f.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > MAX_FILE_TAIL:
        lines = lines[1:]  # the first one is cut
    return lines[-n:] if n else []


def _timeline(host: InspectHost, args: dict[str, Any]) -> dict[str, Any]:
    tail = args.get("tail")
    return events.snapshot(None if tail is None else int(tail))


def _call_labels(executor: Executor | None) -> tuple[dict[int, str], dict[int, str]]:
    """The calls running now: by the thread that runs them (sync), and by the id of the
    asyncio task that runs them (async)."""
    by_thread: dict[int, str] = {}
    by_task: dict[int, str] = {}
    if executor is None:
        return by_thread, by_task
    for job in list(executor.jobs.values()):
        ctx = job.ctx
        if ctx is None:
            continue
        name = job.name
        actor = executor.actors.get(job.actor_id) if job.actor_id else None
        if actor is not None:
            name = f"{actor.spec.class_name}.{job.name}"
        text = f"{name} (task {job.task_id.hex()})"
        if ctx.thread_id:
            by_thread[ctx.thread_id] = text
        if job.atask is not None:
            by_task[id(job.atask)] = text
    return by_thread, by_task


def _stack(host: InspectHost, args: dict[str, Any]) -> dict[str, Any]:
    by_thread, by_task = _call_labels(host.executor)
    names = {t.ident: t for t in threading.enumerate()}
    here = threading.get_ident()
    threads = []
    for tid, frame in sys._current_frames().items():
        summary = list(traceback.extract_stack(frame))
        if tid == here:  # the loop thread: up to the loop, not this request's own frames
            summary = _until_loop(summary)
        summary = summary[-MAX_FRAMES:]
        thread = names.get(tid)
        threads.append(
            {
                "thread_id": tid,
                "name": thread.name if thread is not None else f"thread {tid}",
                "running": by_thread.get(tid, ""),
                "idle": _idle(summary) and tid not in by_thread,
                "note": "the event loop (answering this request)" if tid == here else "",
                "frames": [[f.filename, f.lineno, f.name, f.line or ""] for f in summary],
            }
        )
    tasks = []
    all_tasks = list(asyncio.all_tasks(host.loop))
    for task in all_tasks[:MAX_TASKS]:
        frames, waits = coroutine_stack(task.get_coro())
        tasks.append(
            {
                "name": task.get_name(),
                "running": by_task.get(id(task), ""),
                "waiting_on": waits,
                "frames": frames[-MAX_FRAMES:],
            }
        )
    return {"threads": threads, "tasks": tasks, "more_tasks": max(0, len(all_tasks) - MAX_TASKS)}


def coroutine_stack(coro: Any) -> tuple[list[list[Any]], str]:
    """The frames of a suspended coroutine and of every coroutine or generator it awaits, the
    outermost first (asyncio's own ``Task.get_stack`` stops at the outermost one), and what
    the innermost one waits on."""
    frames: list[list[Any]] = []
    seen = 0
    while coro is not None and seen < 1000:
        seen += 1
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is None:
            break
        code = frame.f_code
        line = _source_line(code.co_filename, frame.f_lineno)
        frames.append([code.co_filename, frame.f_lineno, code.co_name, line])
        nxt = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
        if nxt is None or not (
            hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame") or hasattr(nxt, "ag_frame")
        ):
            waits = "" if nxt is None or type(nxt).__name__ == "FutureIter" else _short(nxt)
            return frames, waits
        coro = nxt
    return frames, ""


def _until_loop(summary: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The loop thread's frames below the callback that is answering this request."""
    frames = list(summary)
    for i, f in enumerate(frames):
        if (f.name == "buffer_updated" and f.filename.endswith("transport.py")) or (
            f.name == "answer" and f.filename == __file__
        ):
            return frames[:i]
    return frames


def _source_line(filename: str, lineno: int) -> str:
    import linecache

    return linecache.getline(filename, lineno).strip()


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 200 else text[:197] + "..."


def _idle(summary: list[traceback.FrameSummary]) -> bool:
    """A pool thread waiting for work (the runtime's, or a ``concurrent.futures`` one)."""
    if not summary:
        return False
    top = summary[-1]
    if top.name == "_run" and top.filename.endswith(os.path.join("common", "threads.py")):
        return "get()" in (top.line or "")
    if top.name == "_worker" and top.filename.endswith(os.path.join("futures", "thread.py")):
        return ".get(" in (top.line or "")
    return False


__all__ = ["MAX_FRAMES", "InspectHost", "answer", "coroutine_stack"]
