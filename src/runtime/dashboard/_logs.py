"""The output lines behind the dashboard's log view, read from the nodes' own rings.

Every node process keeps its recent output lines tagged with who printed them (the actor,
the task; ``core/execution/logs.py``); :func:`runtime.core.api.observe.read_logs` gathers
them (what ``python -m runtime logs`` prints). A row of the page links to its lines:
``/api/logs?node_id=ID&actor=ID`` (an actor), ``&task=ID`` (a task or actor call), or
``&who=NAME`` (the tag ``Name pid=N``, a name, or a prefix ``Name*``), which works whether
or not a driver was there to take the output. A node process that is gone is read from its
log file. A job's output is its driver log in the head's state directory
(``/api/logs?job=ID``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from runtime.core.api.observe import read_logs

if TYPE_CHECKING:
    from runtime.core.process.worker import Worker

_JOB_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


async def node_logs(
    worker: Worker,
    *,
    node_id: str = "",
    actor: str = "",
    task: str = "",
    who: str = "",
    tail: int = 500,
) -> list[dict[str, Any]]:
    """The last ``tail`` lines kept by the nodes (``node_id``: one, by id prefix) printed by
    ``actor`` (id prefix, name or class), ``task`` (id prefix or name) and ``who`` (a tag:
    see the module), oldest first, as the log view shows them."""
    lines, _ = await read_logs(
        worker,
        node=node_id or None,
        actor=actor or None,
        task=task or None,
        tail=None if who else tail,
    )
    if who:
        lines = [line for line in lines if _matches(line["source"], who)][-tail:]
    return [
        {
            "time": line["time"] or None,
            "node_id": line["node_id"],
            "who": line["source"],
            "line": line["message"],
            "stderr": line["stream"] == "stderr",
            "actor_id": line["actor_id"],
            "task_id": line["task_id"],
        }
        for line in lines
    ]


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
