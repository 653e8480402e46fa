"""Logging what peers say without letting them write the log.

Text a peer supplies before it has proved the cluster token (a ``Hello``'s peer id, a
``Refused`` reason, a malformed frame) is escaped and capped before it reaches a log line,
and the warnings a flood of bad handshakes would write are rate-limited: a newline in a peer
id once wrote a fake "declared dead" line, and 300 bad handshakes wrote 1.2 MB of log.
"""

from __future__ import annotations

import logging
import time
from typing import Final

#: The most characters of peer-supplied text one log line carries.
MAX_PEER_TEXT: Final = 120


def safe_text(text: object, limit: int = MAX_PEER_TEXT) -> str:
    """``text`` fit for one log line: control and non-ASCII characters escaped, capped."""
    s = str(text)
    cut = len(s) > limit
    escaped = s[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) > limit:
        escaped, cut = escaped[:limit], True
    return f"{escaped}...[{len(s)} chars]" if cut else escaped


class RateLimitedLog:
    """At most ``burst`` warnings per ``window`` seconds; the rest are counted, and the
    count is logged with the first warning of a later window."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._window = window
        self._start = float("-inf")
        self._count = 0
        self._dropped = 0

    def warning(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self._window:
            if self._dropped:
                self._logger.warning(
                    "%d similar warnings suppressed in the last %.0f s", self._dropped, self._window
                )
            self._start, self._count, self._dropped = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            self._logger.warning(fmt, *args)
        else:
            self._dropped += 1
