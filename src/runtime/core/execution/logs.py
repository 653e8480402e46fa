"""Worker output: what tasks and actors print reaches the driver, prefixed with who printed it.

On a node, ``sys.stdout`` and ``sys.stderr`` are replaced by :class:`TaskOutput` streams.
A line written while a task or actor call runs is tagged ``(name pid=N)``, appended to the
node's log file in its state directory (``logs/worker-<node id>.log``), and sent in batches
to the head, which forwards it to every driver that asked for output (``log_to_driver=True``,
the default). Output written outside any task (the node's own messages) goes where it went
before. Forwarding is bounded: past ``MAX_PENDING`` lines waiting, lines are dropped and the
driver is told how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Protocol

from ..common.context import TaskContext, current_task
from ..common.threads import LoopInbox
from ..wire import protocol as p
from ..wire.transport import Connection

if TYPE_CHECKING:
    from ..control.head import Head


class LogHost(Protocol):
    """What output capture needs of the process's worker."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def inbox(self) -> LoopInbox: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def head(self) -> Head | None: ...
    @property
    def head_conn(self) -> Connection | None: ...


#: Lines waiting to be sent, at most; more are dropped (and counted).
MAX_PENDING = 10_000
#: How often waiting lines are sent, in seconds.
FLUSH_S = 0.05
#: A line longer than this is cut (a runaway print must not build one huge frame).
MAX_LINE = 64 * 1024


def label(ctx: TaskContext) -> str:
    """``Counter pid=123`` for an actor, ``train_fn pid=123`` for a task (as Ray prints)."""
    who = ctx.actor_name or ctx.actor_class or ctx.name
    return f"{who} pid={os.getpid()}"


class LogSink:
    """Collects tagged lines from any thread; sends them to the head from the loop."""

    def __init__(self, worker: LogHost, path: str | None) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, bool]] = []
        self._dropped = 0
        self._armed = False
        self._file: IO[str] | None = None
        if path is not None:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def add(self, prefix: str, line: str, is_err: bool) -> None:
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + f"... [{len(line) - MAX_LINE} characters cut]"
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._file.write(f"({prefix}) {line}\n")
            if len(self._pending) >= MAX_PENDING:
                self._dropped += 1
            else:
                self._pending.append((prefix, line, is_err))
            if self._armed:
                return
            self._armed = True
        self.worker.inbox.post(self._arm)

    def _arm(self) -> None:
        self.worker.loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Send what waits (loop)."""
        with self._lock:
            lines, self._pending = self._pending, []
            dropped, self._dropped = self._dropped, 0
            self._armed = False
        if dropped:
            lines.append(("runtime", f"[{dropped} lines of output dropped: too many]", True))
        if not lines:
            return
        msg = p.LogLines(self.worker.peer_id, lines)
        worker = self.worker
        if worker.head is not None:
            worker.head.forward_logs(msg)
        elif (conn := worker.head_conn) is not None and not conn.closed:
            conn.send(msg)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class TaskOutput(io.TextIOBase):
    """A ``sys.stdout``/``sys.stderr`` that tags the lines tasks write."""

    def __init__(self, original: IO[str], sink: LogSink, is_err: bool) -> None:
        self._original = original
        self._sink = sink
        self._is_err = is_err
        self._partial: dict[int, str] = {}

    def write(self, s: str) -> int:
        ctx = current_task.get()
        if ctx is None:
            return self._original.write(s)
        key = threading.get_ident()
        text = self._partial.pop(key, "") + s
        *lines, rest = text.split("\n")
        if rest:
            self._partial[key] = rest
        prefix = label(ctx)
        for line in lines:
            self._sink.add(prefix, line, self._is_err)
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self._original.flush()

    def fileno(self) -> int:
        return self._original.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def capture(worker: LogHost) -> LogSink:
    """Tag task output on this node from now on (a node process calls it once)."""
    base = worker.state_dir
    path = os.path.join(base, "logs", f"worker-{worker.peer_id}.log") if base else None
    sink = LogSink(worker, path)
    if not isinstance(sys.stdout, TaskOutput):
        sys.stdout = TaskOutput(sys.stdout, sink, False)
        sys.stderr = TaskOutput(sys.stderr, sink, True)
    else:  # a node that rejoined: point the streams at the new sink
        assert isinstance(sys.stderr, TaskOutput)
        sys.stdout._sink = sink
        sys.stderr._sink = sink
    return sink


def print_lines(msg: p.LogLines, out: Any = None, err: Any = None) -> None:
    """On a driver: show forwarded lines, prefixed with who printed them."""
    out = out or sys.stdout
    err = err or sys.stderr
    for prefix, line, is_err in msg.lines:
        print(f"({prefix}) {line}", file=err if is_err else out)


__all__ = ["LogSink", "TaskOutput", "capture", "label", "print_lines"]
