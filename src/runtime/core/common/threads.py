"""Threads that run blocking user code off the event loop, and the inbox that brings
their results (and calls from other user threads) back onto it."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: Callbacks one pass of the inbox runs before the loop serves its sockets again.
DRAIN_BATCH = 512
#: A thread that posts finds no more than this many callbacks waiting for the loop: past it,
#: ``throttle`` waits until the loop has taken them down to half (bounded memory).
BACKLOG_MAX = 8192
#: How long bookkeeping posted with ``LoopInbox.post_later`` may wait for the loop (seconds).
LATER_S = 0.005
#: A thread that has posted a multiple of YIELD_MASK + 1 calls the loop has not run yet lets
#: go of the GIL for a moment (``post_call``): the loop, woken by the first of them, waits
#: for the GIL, and the interpreter would make it wait the switch interval (5 ms), so that a
#: driver making thousands of calls in a row sent them in bursts while the node sat idle.
YIELD_MASK = 255


class LoopInbox:
    """A thread-safe queue of callbacks run on ``loop``; one loop wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._armed = False
        self.thread_id = -1  # set by the loop thread once it runs
        #: ``post_later``'s callbacks, and whether a tick will run them (within LATER_S).
        self._later: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._tick = False
        #: False from a ``post_call`` until the loop pass after the drain that ran it: an
        #: actor call posted may be held until the end of its pass (a gathered frame).
        self._settled = True

    def on_loop(self) -> bool:
        return threading.get_ident() == self.thread_id

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: at once when called there, else soon."""
        if threading.get_ident() == self.thread_id:
            fn(*args)
            return
        self._items.append((fn, args))
        if not self._armed:
            self._arm_drain()

    def _arm_drain(self) -> None:
        self._armed = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing will run any more
            self._armed = False

    def post_call(self, fn: Callable[..., object], *args: Any) -> None:
        """``post`` for a call that the loop may hold until the end of its pass (an actor
        call, gathered): ``quiet`` is False until that pass is over. Throttles (below) a
        thread that posts faster than the loop runs its posts, and lets the loop have the GIL
        every YIELD_MASK + 1 calls that it has not run yet."""
        if threading.get_ident() == self.thread_id:
            fn(*args)
            return
        items = self._items
        items.append((fn, args))
        self._settled = False  # (after the append: a _settle now sees the item)
        if not self._armed:
            self._arm_drain()
        elif len(items) > BACKLOG_MAX:  # (throttle's check, inline: once per call)
            self.throttle()
        elif not len(items) & YIELD_MASK:  # the loop has not run these yet: let it take the
            time.sleep(0)  # GIL now (it sends them while this thread goes on), not in 5 ms

    def post_later(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop within ``LATER_S``, before anything posted after it,
        without a wake-up of its own while a tick is due: the bookkeeping of a call whose
        answer is out already (``execution.calls.answer_now``). One wake-up arms the tick; the
        loop also runs these first when it next takes an actor call (``catch_up``)."""
        self._later.append((fn, args))
        if not self._tick:
            self._tick = True
            self.post(self._arm)

    def catch_up(self) -> None:
        """Run what ``post_later`` left (loop)."""
        later = self._later
        while later:
            fn, args = later.popleft()
            fn(*args)

    def _arm(self) -> None:
        self.catch_up()
        self.loop.call_later(LATER_S, self._tock)

    def _tock(self) -> None:
        self._tick = False  # (before the run: a post_later from now on arms the next tick)
        self.catch_up()

    def quiet(self) -> bool:
        """Nothing posted waits or runs, and the loop pass that ran the last ``post_call`` is
        over (what it held for the end of its pass is sent): what a thread does now comes
        after all it posted (the direct path of calls, ``wire.direct``)."""
        return self._settled and not self._armed and not self._items

    def _settle(self) -> None:
        if not self._armed and not self._items:
            self._settled = True

    def throttle(self) -> None:
        """From a thread that posts many callbacks (``.remote()`` in a loop): wait while the
        loop has more than ``BACKLOG_MAX`` of them to run, so a fast producer neither grows
        the queue without bound nor starves the loop's sockets. No-op on the loop."""
        items = self._items
        if len(items) <= BACKLOG_MAX or threading.get_ident() == self.thread_id:
            return
        loop = self.loop
        while len(items) > BACKLOG_MAX // 2 and loop.is_running():
            time.sleep(0.001)

    def _drain(self) -> None:
        # At most DRAIN_BATCH per pass, then the loop serves its sockets: a thread posting
        # faster than the loop runs its posts must not keep answers from being read.
        if self._later:  # posted before what follows
            self.catch_up()
        items = self._items
        for _ in range(min(len(items), DRAIN_BATCH)):
            fn, args = items.popleft()
            fn(*args)
        self._armed = False
        if items:  # more came (or were left): run them on the next pass, after the sockets
            self._armed = True
            self.loop.call_soon(self._drain)
        elif not self._settled:  # after what the calls scheduled for the end of this pass
            self.loop.call_soon(self._settle)


_STOP = object()


class ThreadPool:
    """Up to ``size`` threads taking work in arrival order (size 1 keeps strict order)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = max(1, size)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a pool thread; it must not raise (callers catch their own errors)."""
        if self._closed:
            return
        if self.size == 1 and self._threads:
            self._queue.put(fn)  # one thread, already running: it takes work in order
            return
        with self._lock:
            if self._idle == 0 and len(self._threads) < self.size:
                t = threading.Thread(
                    target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
            else:
                self._idle -= 1
        self._queue.put(fn)

    def _run(self) -> None:
        q = self._queue
        while True:
            fn = q.get()
            if fn is _STOP:
                return
            fn()
            if self.size > 1:
                with self._lock:
                    self._idle += 1

    def shutdown(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
