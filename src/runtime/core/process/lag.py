"""The loop-lag monitor: says when a node's event loop was blocked, and by what.

A callback on the loop stamps the time every ``period`` (the threshold); a watchdog thread
wakes when the next stamp is ``threshold`` late, and if it is, reads the loop thread's stack,
naming the actor method (or task) that holds the loop and where it is. Blocking code belongs
in ``def`` methods, which run off the loop.

Idle, that is two wake-ups a second on the loop and two on the thread (it sleeps until the
moment a block would first reach the threshold, not on a fixed beat): an idle mesh of a
hundred processes spent ~4 % of a core on the eight a second each it had before. A block is
seen by how late it makes the tick: one of 2 thresholds or more always, a shorter one over
the threshold depending on where it falls between two ticks.

``RUNTIME_LOOP_LAG_WARN_S`` sets the threshold (default 0.5 s; 0 turns the monitor off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from types import FrameType

log = logging.getLogger("runtime.loop")

#: Frames of these functions carry the name of the user call they run, in ``label``.
_CALL_FRAMES = frozenset({"call_async"})


def threshold_from_env() -> float:
    value = os.environ.get("RUNTIME_LOOP_LAG_WARN_S")
    return float(value) if value else 0.5


class LoopLagMonitor:
    """Watches one loop from a thread of its own. ``start()`` on the loop, ``stop()`` anywhere."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.loop = loop
        self.threshold = threshold
        # One tick a threshold, and this thread's look when the next tick is a threshold late
        # (module doc: wake-ups are what an idle mesh of many processes pays for).
        self.period = threshold
        self._stamp = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="runtime-loop-lag", daemon=True)
        #: The longest block seen so far, in seconds (for tests and status).
        self.worst = 0.0
        #: How late the last tick ran, in seconds (the loop-lag metric).
        self.lag = 0.0

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()

    def _tick(self) -> None:
        now = time.monotonic()
        self.lag, self._stamp = max(0.0, now - self._stamp - self.period), now
        if not self._stop.is_set():
            self._timer = self.loop.call_later(self.period, self._tick)

    def _watch(self) -> None:
        reported = 0.0  # the stamp of the block already reported
        while True:
            stamp = self._stamp
            # The first moment the loop can have been blocked for the threshold: the tick
            # due after this stamp, that late. A tick meanwhile moves the moment on.
            due = stamp + self.period + self.threshold
            if self._stop.wait(max(0.005, due - time.monotonic())):
                return
            if self._stamp != stamp or stamp == reported:
                continue
            blocked = time.monotonic() - stamp - self.period  # beyond the tick's own wait
            if blocked < self.threshold:
                continue
            reported = stamp
            frame = sys._current_frames().get(self._loop_thread)
            culprit = describe(frame)
            by_user_call = culprit_is_a_call(frame)
            # Wait for the loop to come back, to report how long it was blocked in all.
            while self._stamp == stamp and not self._stop.wait(self.period):
                pass
            total = time.monotonic() - stamp - self.period
            self.worst = max(self.worst, total)
            if by_user_call:
                log.warning(
                    "the event loop was blocked for %.2f s by %s; run blocking code in a plain "
                    "`def` method (it runs off the loop) or await it in a thread",
                    total,
                    culprit,
                )
            else:  # the runtime's own work (e.g. an import while unpickling), or a thread
                # holding the GIL: nothing the user's async code can change, so not a warning
                log.info("the event loop could not run for %.2f s (at %s)", total, culprit)


def culprit_is_a_call(frame: FrameType | None) -> bool:
    """True when an async task or actor method is what runs on the loop thread."""
    f = frame
    while f is not None:
        if f.f_code.co_name in _CALL_FRAMES:
            return True
        f = f.f_back
    return False


def describe(frame: FrameType | None) -> str:
    """Name the user call running in ``frame``'s stack, and where it is."""
    label = None
    where = None
    f = frame
    while f is not None:
        if f.f_code.co_name in _CALL_FRAMES:
            label = f.f_locals.get("label")
            break
        f = f.f_back
    if frame is not None:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    if label:
        return f"{label} (at {where})"
    return f"code at {where}" if where else "unknown code"
