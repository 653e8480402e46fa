"""Admission control for incoming connections: bounds on what unauthenticated peers cost.

Per remote host, at most ``max_pending`` connections may be waiting in the handshake; a new
one over the bound pushes out the oldest (so a flood of half-open connections holds a
bounded amount of memory and never locks out a real client). Hosts that fail the token
check repeatedly are slowed down: after ``max_failures`` failures within ``window`` seconds,
each new handshake from that host is answered only after ``delay`` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Protocol


class Pending(Protocol):
    def abort(self, exc: BaseException | None = None, *, flush: bool = False) -> None: ...


class AdmissionControl:
    """Plain bookkeeping (no I/O): the transport asks it, and tells it what happened."""

    def __init__(
        self,
        *,
        max_pending: int = 256,
        max_failures: int = 20,
        window: float = 10.0,
        delay: float = 1.0,
    ) -> None:
        self.max_pending = max_pending
        self.max_failures = max_failures
        self.window = window
        self.delay = delay
        self._pending: dict[str, OrderedDict[int, Pending]] = {}
        self._failures: dict[str, deque[float]] = {}

    def opened(self, host: str, conn: Pending) -> Pending | None:
        """A connection from ``host`` starts its handshake; returns one to push out, if any."""
        waiting = self._pending.setdefault(host, OrderedDict())
        waiting[id(conn)] = conn
        if len(waiting) > self.max_pending:
            _, oldest = waiting.popitem(last=False)
            return oldest
        return None

    def settled(self, host: str, conn: Pending) -> None:
        """The handshake ended (passed, failed, or the connection closed)."""
        waiting = self._pending.get(host)
        if waiting is not None:
            waiting.pop(id(conn), None)
            if not waiting:
                del self._pending[host]

    def failed(self, host: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._failures.setdefault(host, deque())
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()

    def hello_delay(self, host: str, now: float | None = None) -> float:
        """How long to wait before answering a handshake from ``host``."""
        times = self._failures.get(host)
        if not times:
            return 0.0
        now = time.monotonic() if now is None else now
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[host]
            return 0.0
        return self.delay if len(times) >= self.max_failures else 0.0
