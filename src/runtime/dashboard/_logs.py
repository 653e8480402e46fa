"""The recent task output the head sees, for the dashboard's log view.

Worker output reaches the head tagged with who printed it (``Name pid=N``, see
``core/execution/logs.py``) on its way to the drivers; the dashboard taps that stream and keeps
the last lines in a ring buffer, so a row of the page (an actor, a task, a node) links to the
lines its process printed: ``/api/logs?node_id=ID&who=NAME``. A job's output is its driver
log in the head's state directory (``/api/logs?job=ID``).
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from typing import Any

#: Lines kept, at most (all processes together).
KEEP = 20_000
_JOB_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class LogBuffer:
    """The last :data:`KEEP` tagged lines, with the member that sent them."""

    def __init__(self, keep: int = KEEP) -> None:
        self.lines: deque[tuple[float, str, str, str, bool]] = deque(maxlen=keep)

    def tap(self, msg: Any) -> None:
        """Keep a ``LogLines`` batch (the head's log tap; on the loop)."""
        now = time.time()
        for prefix, line, is_err in msg.lines:
            self.lines.append((now, msg.node_id, prefix, line, is_err))

    def query(self, node_id: str = "", who: str = "", tail: int = 500) -> list[dict[str, Any]]:
        """The last ``tail`` lines from ``node_id`` (any when empty) printed by ``who`` (a
        name, ``Name pid=N`` or a prefix ``Name*``; any when empty)."""
        out = []
        for when, node, prefix, line, is_err in reversed(self.lines):
            if node_id and node != node_id:
                continue
            if who and not _matches(prefix, who):
                continue
            out.append(
                {"time": when, "node_id": node, "who": prefix, "line": line, "stderr": is_err}
            )
            if len(out) >= tail:
                break
        out.reverse()
        return out


def _matches(prefix: str, who: str) -> bool:
    """``who`` is a name (``Name``), a whole tag (``Name pid=N``) or a prefix (``Name*``)."""
    if who.endswith("*"):
        return prefix.startswith(who[:-1])
    return prefix == who or prefix.startswith(who + " pid=")


def job_log(
    state_dir: str | None, job_id: str, tail_bytes: int = 256 * 1024
) -> list[dict[str, Any]]:
    """The end of job ``job_id``'s driver log, one row per line (none: empty)."""
    if not state_dir or not _JOB_ID.match(job_id):
        return []
    path = os.path.join(state_dir, "jobs", job_id, "driver.log")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [
        {"time": None, "node_id": "", "who": f"job {job_id}", "line": line, "stderr": False}
        for line in text.splitlines()
    ]
