"""The timeline of this process: a bounded ring of the tasks and actor calls it ran.

Recording is on the hot path of every call, so it is one ``deque.append`` of a tuple of
ints and strings the call already has: when the call arrived, when its arguments were
fetched (0: nothing to fetch), when it started and when it ended (``time.monotonic_ns``),
its label, the thread it ran on (``threading.get_ident()``; the loop's for ``async def``),
whether it ran on the loop, and whether it failed. Nothing is formatted here; a reader
(``python -m runtime timeline``, ``runtime.timeline()``) takes a :func:`snapshot` and turns it
into Chrome trace events.

The ring holds the last ``RUNTIME_TIMELINE_EVENTS`` calls (default 10,000; 0 turns recording
off), about 300 bytes each (3 MB when full).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from itertools import islice
from typing import Any, Final

#: (received, fetched, started, ended, label, thread id, on the loop, failed, task id)
Event = tuple[int, int, int, int, str, int, bool, bool, bytes]


def _capacity() -> int:
    try:
        return max(0, int(os.environ.get("RUNTIME_TIMELINE_EVENTS", "10000")))
    except ValueError:
        return 10_000


CAPACITY: Final = _capacity()
#: The ring itself; ``record`` is its bound ``append`` (no call layer in between).
#: (A ring of size 0 keeps nothing: recording is then an append that drops its item.)
RING: Final[deque[Event]] = deque(maxlen=CAPACITY)
record: Final = RING.append
now_ns: Final = time.monotonic_ns


def snapshot(tail: int | None = None) -> dict[str, Any]:
    """The events in the ring (oldest first; the last ``tail`` only when given), the names of
    the threads they ran on, and the offset that turns their monotonic times into wall-clock
    times (ns since the epoch)."""
    # tail: the last ones only, without copying the whole ring (the dashboard asks every 2 s)
    events = list(RING) if tail is None else list(islice(reversed(RING), max(tail, 0)))[::-1]
    names = {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
    threads = {str(tid): names.get(tid, f"thread {tid}") for tid in {e[5] for e in events}}
    return {
        "pid": os.getpid(),
        "offset_ns": time.time_ns() - time.monotonic_ns(),
        "threads": threads,
        "events": [[*e[:8], e[8].hex()] for e in events],
        "capacity": CAPACITY,
    }


__all__ = ["CAPACITY", "RING", "Event", "now_ns", "record", "snapshot"]
