"""Worker output: what tasks and actors print reaches the driver, prefixed with who printed it,
and stays on its node, bounded, for ``python -m runtime logs``.

On a node, ``sys.stdout`` and ``sys.stderr`` are replaced by :class:`TaskOutput` streams.
A line written while a task or actor call runs is tagged ``(name pid=N)``, kept in the
node's ring of recent lines (:meth:`LogSink.query`, read by ``python -m runtime logs``),
appended to the node's log file in its state directory (``logs/worker-<node id>.log``,
rotated), and sent in batches to the head, which forwards it to every driver that asked for
output (``log_to_driver=True``, the default). Output written outside any task (the node's
own messages) goes where it went before. Forwarding is bounded: past ``MAX_PENDING`` lines
waiting, lines are dropped and the driver is told how many.

``logging`` records are kept too (ring and file, not forwarded): those emitted inside a task,
tagged with it, and the runtime's own warnings, tagged ``runtime``. With
``RUNTIME_LOG_FORMAT=json`` the log file and the node's own log output are JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

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


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


#: Bytes of recent lines a process keeps in memory for ``runtime logs`` (oldest go first).
RING_BYTES: Final = _env_int("RUNTIME_LOG_RING_BYTES", 8 * 1024 * 1024)
#: A log file past this size is rotated (``.1``, ``.2``, ...), keeping ``ROTATE_BACKUPS``.
ROTATE_BYTES: Final = _env_int("RUNTIME_LOG_ROTATE_BYTES", 64 * 1024 * 1024)
ROTATE_BACKUPS: Final = _env_int("RUNTIME_LOG_ROTATE_BACKUPS", 1)
#: What a kept line costs besides its text (the tuple and its fields), for the ring's bound.
_LINE_OVERHEAD = 200


def json_format() -> bool:
    """``RUNTIME_LOG_FORMAT=json``: log files and the node's own log output are JSON lines."""
    return os.environ.get("RUNTIME_LOG_FORMAT", "").strip().lower() == "json"


def label(ctx: TaskContext) -> str:
    """``Counter pid=123`` for an actor, ``train_fn pid=123`` for a task (as Ray prints)."""
    who = ctx.actor_name or ctx.actor_class or ctx.name
    return f"{who} pid={os.getpid()}"


#: One kept line: (seq, wall time, is stderr, source label, text, task id, task name,
#: actor id, actor name or class). Task fields are empty for the runtime's own records.
Line = tuple[int, float, bool, str, str, bytes, str, bytes, str]


class LogSink:
    """Collects tagged lines from any thread: keeps the recent ones (a ring bounded in
    bytes), writes them to the node's log file (rotated), and sends them to the head from
    the loop."""

    def __init__(self, worker: LogHost, path: str | None) -> None:
        self.worker = worker
        self._lock = threading.RLock()
        self._pending: list[tuple[str, str, bool]] = []
        self._dropped = 0
        self._armed = False
        self._file: IO[str] | None = None
        self._path = path
        self._written = 0
        self._json = json_format()
        self._ring: deque[Line] = deque()
        self._ring_bytes = 0
        #: The bounds (the module's, from the environment; a test may lower them).
        self.ring_limit = RING_BYTES
        self.rotate_bytes = ROTATE_BYTES
        self.backups = ROTATE_BACKUPS
        self._seq = 0
        if path is not None:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
                self._written = self._file.tell()

    def add(self, prefix: str, line: str, is_err: bool, ctx: TaskContext | None = None) -> None:
        """A line a task printed: keep it and forward it to the drivers."""
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + f"... [{len(line) - MAX_LINE} characters cut]"
        with self._lock:
            self._keep(prefix, line, is_err, ctx)
            if len(self._pending) >= MAX_PENDING:
                self._dropped += 1
            else:
                self._pending.append((prefix, line, is_err))
            if self._armed:
                return
            self._armed = True
        self.worker.inbox.post(self._arm)

    def keep(self, prefix: str, line: str, is_err: bool, ctx: TaskContext | None = None) -> None:
        """A line kept on this node only (ring and file), not forwarded: a log record."""
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + f"... [{len(line) - MAX_LINE} characters cut]"
        with self._lock:
            self._keep(prefix, line, is_err, ctx)

    def _keep(self, prefix: str, line: str, is_err: bool, ctx: TaskContext | None) -> None:
        self._seq += 1
        now = time.time()
        if ctx is not None:
            who = ctx.actor_name or ctx.actor_class or ""
            item: Line = (
                self._seq, now, is_err, prefix, line,
                ctx.task_id, ctx.name, ctx.actor_id or b"", who,
            )  # fmt: skip
        else:
            item = (self._seq, now, is_err, prefix, line, b"", "", b"", "")
        ring = self._ring
        ring.append(item)
        self._ring_bytes += len(line) + _LINE_OVERHEAD
        while self._ring_bytes > self.ring_limit and len(ring) > 1:
            self._ring_bytes -= len(ring.popleft()[4]) + _LINE_OVERHEAD
        if self._file is not None:
            text = json.dumps(self.record(item)) if self._json else f"({prefix}) {line}"
            with contextlib.suppress(OSError, ValueError):
                self._file.write(text + "\n")
                self._written += len(text) + 1
                if self.rotate_bytes and self._written > self.rotate_bytes:
                    self._rotate()

    def _rotate(self) -> None:
        """Move ``path`` to ``path.1`` (and ``.1`` to ``.2``, ...), start an empty file."""
        assert self._file is not None and self._path is not None
        self._file.close()
        path = self._path
        try:
            if self.backups == 0:
                os.remove(path)
            for i in range(self.backups, 0, -1):
                older = f"{path}.{i - 1}" if i > 1 else path
                if os.path.exists(older):
                    os.replace(older, f"{path}.{i}")
        finally:  # whatever failed, go on writing (to the same file if it could not move)
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._written = 0

    def record(self, item: Line) -> dict[str, Any]:
        """One kept line as a JSON-able dict (the JSON log format, and ``logs --json``)."""
        seq, when, is_err, prefix, line, task_id, name, actor_id, who = item
        return {
            "seq": seq,
            "time": when,
            "node_id": self.worker.peer_id,
            "pid": os.getpid(),
            "stream": "stderr" if is_err else "stdout",
            "source": prefix,
            "task_id": task_id.hex(),
            "task_name": name,
            "actor_id": actor_id.hex(),
            "actor_name": who,
            "message": line,
        }

    def query(
        self,
        *,
        after: int = 0,
        tail: int | None = None,
        actor: str | None = None,
        task: str | None = None,
    ) -> dict[str, Any]:
        """The kept lines past ``after`` (a seq) that match ``actor`` (id prefix, name or
        class) and ``task`` (id prefix, function or method name), the last ``tail`` of them;
        and the first seq still kept (a reader that is behind it missed lines)."""
        with self._lock:
            items = [i for i in self._ring if i[0] > after]
            first = self._ring[0][0] if self._ring else self._seq + 1
            last = self._seq
        if actor:
            items = [i for i in items if i[7] and _matches(actor, i[7], i[8])]
        if task:
            items = [i for i in items if i[5] and _matches(task, i[5], i[6])]
        if tail is not None:
            items = items[-tail:] if tail > 0 else []
        return {
            "node_id": self.worker.peer_id,
            "pid": os.getpid(),
            "first_seq": first,
            "last_seq": last,
            "lines": [self.record(i) for i in items],
        }

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


def _matches(want: str, ident: bytes, name: str) -> bool:
    return want == name or (len(want) >= 4 and ident.hex().startswith(want.lower()))


class RecordKeeper(logging.Handler):
    """Keeps ``logging`` records on the node (ring and log file): every record emitted in a
    task, tagged with it, and the runtime's own warnings and errors, tagged ``runtime``."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        ctx = current_task.get()
        if ctx is None and record.levelno < logging.WARNING:
            return
        try:
            text = self.format(record)
        except Exception:
            return
        prefix = label(ctx) if ctx is not None else f"runtime pid={os.getpid()}"
        for line in text.split("\n"):
            self.sink.keep(prefix, line, True, ctx)


class JsonFormatter(logging.Formatter):
    """``RUNTIME_LOG_FORMAT=json``: a log record as one JSON object, with the node and the
    task or actor call it was emitted in."""

    node_id = ""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node_id": self.node_id,
            "pid": record.process,
        }
        ctx = current_task.get()
        if ctx is not None:
            out.update(
                task_id=ctx.task_id.hex(),
                task_name=ctx.name,
                actor_id=(ctx.actor_id or b"").hex(),
                actor_name=ctx.actor_name or ctx.actor_class or "",
            )
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out)


def use_json_logging() -> None:
    """Format the root logger's handlers as JSON lines (a node calls it when
    ``RUNTIME_LOG_FORMAT=json``)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, RecordKeeper):
            handler.setFormatter(JsonFormatter())


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
            self._sink.add(prefix, line, self._is_err, ctx)
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


_sink: LogSink | None = None


def current_sink() -> LogSink | None:
    """This node's sink (None in a driver, or before the node captures its output)."""
    return _sink


def capture(worker: LogHost) -> LogSink:
    """Tag task output on this node from now on (a node process calls it once per
    incarnation of its worker; again for the same worker, it returns the same sink)."""
    global _sink
    if _sink is not None and _sink.worker is worker:
        return _sink
    base = worker.state_dir
    path = os.path.join(base, "logs", f"worker-{worker.peer_id}.log") if base else None
    old, sink = _sink, LogSink(worker, path)
    _sink = sink
    JsonFormatter.node_id = worker.peer_id
    if not isinstance(sys.stdout, TaskOutput):
        sys.stdout = TaskOutput(sys.stdout, sink, False)
        sys.stderr = TaskOutput(sys.stderr, sink, True)
    else:  # a node that rejoined: point the streams at the new sink
        assert isinstance(sys.stderr, TaskOutput)
        sys.stdout._sink = sink
        sys.stderr._sink = sink
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RecordKeeper):
            root.removeHandler(handler)
    root.addHandler(RecordKeeper(sink))
    if old is not None:
        old.close()
    return sink


def print_lines(msg: p.LogLines, out: Any = None, err: Any = None) -> None:
    """On a driver: show forwarded lines, prefixed with who printed them."""
    out = out or sys.stdout
    err = err or sys.stderr
    for prefix, line, is_err in msg.lines:
        print(f"({prefix}) {line}", file=err if is_err else out)


__all__ = [
    "JsonFormatter",
    "LogSink",
    "RecordKeeper",
    "TaskOutput",
    "capture",
    "current_sink",
    "json_format",
    "label",
    "print_lines",
    "use_json_logging",
]
