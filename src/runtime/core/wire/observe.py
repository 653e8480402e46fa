"""Observability messages of the wire protocol (part of the union in protocol.py): what a
member keeps, asked for by ``runtime list``/``logs``/``timeline`` and the dashboard."""

from __future__ import annotations

from typing import Any

from .msgbase import _Msg


class ListObjects(_Msg, tag=56):
    """What pins memory here: owned, stored and borrowed objects (answered with a Reply)."""

    rid: int


class ListTasks(_Msg, tag=58):
    """The tasks and actor calls this member runs or queues, and those it submitted and
    waits on (answered with a Reply)."""

    rid: int


class ReadMetrics(_Msg, tag=90):
    """This member's metrics snapshot, please (answered with a Reply: plain data)."""

    rid: int


class Inspect(_Msg, tag=59):
    """Observability: ask a member for what it keeps of ``what`` ("logs", "timeline",
    "log_files", "stack"), with ``args`` narrowing it (answered with a Reply of a dict)."""

    rid: int
    what: str
    args: dict[str, Any] = {}
