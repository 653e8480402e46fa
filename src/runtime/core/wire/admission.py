"""Admission control for incoming connections: bounds on what unauthenticated peers cost.

Per remote host, at most ``max_pending`` connections may be waiting in the handshake; a new
one over the bound pushes out the one that made the least progress, the oldest first:
connections that sent nothing go before those that failed the proof, which go before those
that sent a ``Hello`` (so a flood of idle connections cannot push out a token holder who is
half-way through). Hosts that fail the token check repeatedly are slowed down: after
``max_failures`` failures within ``window`` seconds, each further *wrong proof* is answered
only after ``delay`` seconds; a handshake that proves the token is never delayed.
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
        #: How far each pending connection got: 0 nothing sent, 1 failed its proof, 2 hello.
        self._progress: dict[int, int] = {}
        self._failures: dict[str, deque[float]] = {}

    def opened(self, host: str, conn: Pending) -> Pending | None:
        """A connection from ``host`` starts its handshake; returns one to push out, if any."""
        waiting = self._pending.setdefault(host, OrderedDict())
        waiting[id(conn)] = conn
        self._progress[id(conn)] = 0
        if len(waiting) > self.max_pending:
            key = min(waiting, key=lambda k: self._progress.get(k, 0))  # oldest of the least
            self._progress.pop(key, None)
            return waiting.pop(key)
        return None

    def progressed(self, conn: Pending, level: int) -> None:
        """``conn`` sent a Hello (2) or failed its proof (1): push it out later than idle ones."""
        if id(conn) in self._progress:
            self._progress[id(conn)] = level

    def settled(self, host: str, conn: Pending) -> None:
        """The handshake ended (passed, failed, or the connection closed)."""
        waiting = self._pending.get(host)
        self._progress.pop(id(conn), None)
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
        """How long to wait before answering a wrong proof from ``host``."""
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
