"""What waits on the head for capacity (actors, placement groups), since when, and the one
warning its creator gets when it has waited long (``RUNTIME_PENDING_WARN_S``, default 10 s).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Hashable


def warn_after() -> float:
    """Seconds an actor or placement group waits for capacity before its creator is warned
    (``RUNTIME_PENDING_WARN_S``, default 10)."""
    return float(os.environ.get("RUNTIME_PENDING_WARN_S", "10"))


class Waiting:
    """Since when each waiting thing waits; a one-shot timer per wait warns its creator."""

    def __init__(self, loop: asyncio.AbstractEventLoop, warn: Callable[[str, str], None]) -> None:
        self.loop = loop
        self.warn = warn
        self.since: dict[Hashable, float] = {}

    def start(self, key: Hashable, owner_id: str, describe: Callable[[], str | None]) -> float:
        """``key`` waits (from now, unless it already did): since when. After warn_after()
        seconds, if it still waits, ``describe()`` says for what (None: say nothing) and its
        creator ``owner_id`` is warned."""
        since = self.since.get(key)
        if since is None:
            since = self.since[key] = time.monotonic()
            self.loop.call_later(warn_after(), self._check, key, since, owner_id, describe)
        return since

    def done(self, key: Hashable) -> None:
        """``key`` no longer waits (placed, or dead)."""
        self.since.pop(key, None)

    def _check(
        self, key: Hashable, since: float, owner_id: str, describe: Callable[[], str | None]
    ) -> None:
        if self.since.get(key) != since:  # placed meanwhile (maybe waiting again since)
            return
        text = describe()
        if text is not None:
            self.warn(owner_id, f"{text} (waiting for {time.monotonic() - since:.0f} s)")


__all__ = ["Waiting", "warn_after"]
