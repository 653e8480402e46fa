"""Strands: many actors' calls on a few threads.

A default sync actor (no ``max_concurrency``, no concurrency groups) does not get a thread
of its own: it is a :class:`Strand` on its node's :class:`StrandPool`. A strand keeps its
work in order and is on at most one pool thread at a time, so an actor's calls still run in
order, one at a time; different strands run side by side on the pool's threads.

The pool keeps about as many *runnable* threads as the machine has cores. A call that waits
must not hold the others up, so a thread stops counting as runnable, and another one is woken
or started for the strands that wait, when its call

- blocks in ``runtime.get`` / ``runtime.wait`` (the blocking API says so:
  :func:`begin_blocking` / :func:`end_blocking`), or
- has run for more than :data:`LONG_S` (a watchdog notices: ``time.sleep``, I/O, a lock,
  long compute).

Threads left over once such calls return end after :data:`IDLE_S` without work.

What a strand gives up against a thread of its own is thread affinity: its calls may run on
different threads. Its context variables stay its own (each strand runs in a
``contextvars.Context`` of its own, kept from call to call), and so does torch's grad mode,
which torch keeps per thread (saved after the strand's run, restored before its next one,
and the thread's own put back in between). ``threading.local`` values and objects that check
their thread (``sqlite3`` with ``check_same_thread``) do not follow it: such an actor asks for
a thread of its own with an explicit ``max_concurrency=1``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

#: A call running longer than this (seconds) stops counting as runnable: the strands waiting
#: meanwhile get another thread.
LONG_S = 0.05
#: A pool thread with no work for this long ends (if the pool has more than its target).
IDLE_S = 10.0
#: Work items a thread runs from one strand before it lets the next waiting strand go first.
TURN = 64


class Runner(Protocol):
    """Where an actor's lane sends its work: a thread pool of its own, or a strand."""

    @property
    def size(self) -> int: ...
    def submit(self, fn: Callable[[], None]) -> None: ...
    def shutdown(self) -> None: ...


class Strand:
    """One actor's work on a :class:`StrandPool`: run in order, one item at a time."""

    __slots__ = ("closed", "context", "grad", "items", "pool", "queued")

    size = 1

    def __init__(self, pool: StrandPool) -> None:
        self.pool = pool
        # A list, not a deque (~600 B each, for 100,000 actors): an actor's lane hands its
        # strand one run of calls at a time, so it rarely holds more than two items.
        self.items: list[Callable[[], None]] = []
        #: In the pool's ready queue or on a thread now.
        self.queued = False
        self.closed = False
        self.context = contextvars.Context()
        #: torch's grad mode as the strand left it (torch keeps it per thread).
        self.grad = True

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the strand's earlier work (any thread; ``fn`` must not raise)."""
        if self.closed:
            return
        pool = self.pool
        with pool.lock:
            self.items.append(fn)
            if self.queued:
                return
            self.queued = True
            pool.ready.append(self)
            start = pool.dispatch()
        if start:
            pool.start_threads(start)

    def shutdown(self) -> None:
        """Take no more work (what was submitted still runs, as a thread pool's does)."""
        self.closed = True


class _Slot:
    """A pool thread's state, read by the watchdog and the blocking hooks."""

    __slots__ = ("out", "started", "wake")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        #: When its current work item started (monotonic), 0 when it has none.
        self.started = 0.0
        #: Not counted as runnable now: blocked in get/wait, or running long.
        self.out = False


_local = threading.local()
log = logging.getLogger("runtime.strands")


class StrandPool:
    """A node's threads for strands (see the module's text)."""

    def __init__(self, name: str = "runtime-strand", target: int | None = None) -> None:
        self.name = name
        self.target = max(1, target or default_target())
        self.lock = threading.Lock()
        self.ready: deque[Strand] = deque()
        #: Threads running work and counted as runnable.
        self.active = 0
        #: Threads woken or started that have not taken a strand yet.
        self.waking = 0
        self.threads = 0
        self.idle: list[_Slot] = []  # a stack: the most recently idle thread is woken first
        self.busy: set[_Slot] = set()
        self.closed = False
        self._numbers = itertools.count()
        self._watch = threading.Condition(self.lock)
        self._watching = False
        self._watchdog_started = False

    def strand(self) -> Strand:
        return Strand(self)

    def dispatch(self) -> int:
        """Wake idle threads for the ready strands while fewer than ``target`` run (lock
        held); returns how many threads to start (:meth:`start_threads`, outside the lock).
        Strands still waiting then are the watchdog's to look after."""
        start = 0
        ready = len(self.ready)
        while ready > self.waking and self.active + self.waking < self.target:
            self.waking += 1
            if self.idle:
                self.idle.pop().wake.release()
            else:
                start += 1
        self.threads += start
        if ready > self.waking and not self._watching:
            self._watching = True
            self._watch.notify()
        return start

    def start_threads(self, n: int) -> None:
        """Start ``n`` pool threads (counted by :meth:`dispatch` already), and the watchdog
        with the first (no lock held)."""
        with self.lock:
            first, self._watchdog_started = not self._watchdog_started, True
        if first:
            name = f"{self.name}-watchdog"
            threading.Thread(target=self._watchdog, name=name, daemon=True).start()
        for _ in range(n):
            name = f"{self.name}-{next(self._numbers)}"
            threading.Thread(target=self._run, args=(_Slot(),), name=name, daemon=True).start()

    def close(self) -> None:
        """End the idle threads (the node is going); busy ones end after their work."""
        with self.lock:
            self.closed = True
            while self.idle:
                self.waking += 1
                self.idle.pop().wake.release()

    # --- a pool thread --------------------------------------------------------------------

    def _run(self, slot: _Slot) -> None:
        _local.slot = (self, slot)
        lock = self.lock
        lock.acquire()
        try:
            self.waking -= 1
            while True:
                if not self.ready or self.active >= self.target:
                    if self.ready and not self._watching:
                        self._watching = True
                        self._watch.notify()
                    if not self._park(slot):
                        return
                    continue
                strand = self.ready.popleft()
                self.active += 1
                self.busy.add(slot)
                lock.release()
                try:
                    self._turn(slot, strand)
                finally:
                    lock.acquire()
                self.busy.discard(slot)
                if slot.out:  # counted out already (blocked or long at the end)
                    slot.out = False
                else:
                    self.active -= 1
                if strand.items:  # its turn is over: the strands waiting go first
                    self.ready.append(strand)
                else:
                    strand.queued = False
        finally:
            lock.release()

    def _park(self, slot: _Slot) -> bool:
        """Wait to be woken (lock held, released while waiting). False: end the thread."""
        self.idle.append(slot)
        self.lock.release()
        woken = slot.wake.acquire(timeout=IDLE_S)
        self.lock.acquire()
        if not woken:
            if slot in self.idle:  # nobody woke it
                self.idle.remove(slot)
                if self.threads > self.target or self.closed:
                    self.threads -= 1
                    return False
                return True
            slot.wake.acquire()  # woken just as it timed out: take the wake-up
        self.waking -= 1
        if self.closed:
            self.threads -= 1
            return False
        return True

    def _turn(self, slot: _Slot, strand: Strand) -> None:
        """Run up to TURN items of ``strand`` in its context (no lock held)."""
        torch = sys.modules.get("torch")
        if torch is not None and not strand.grad:
            torch.set_grad_enabled(False)
        items, run, lock = strand.items, strand.context.run, self.lock
        for _ in range(TURN):
            with lock:
                if not items:
                    break
                fn = items.pop(0)
                if slot.out:  # it ran long or blocked before: runnable again
                    slot.out = False
                    self.active += 1
                slot.started = time.monotonic()
            try:
                run(fn)
            except BaseException:  # its owner catches its own errors: this is a bug
                log.exception("work on a strand raised")
            slot.started = 0.0
        torch = sys.modules.get("torch")
        if torch is not None:  # the strand keeps its grad mode; the thread gets its own back
            strand.grad = bool(torch.is_grad_enabled())
            if not strand.grad:
                torch.set_grad_enabled(True)

    def _watchdog(self) -> None:
        """While strands wait for a thread, count the calls that ran longer than LONG_S as
        not runnable, so that other threads are woken or started for the waiting ones."""
        lock = self.lock
        with lock:
            while True:
                if not self._watching:
                    self._watch.wait()
                    continue
                self._watch.wait(LONG_S / 2)
                if len(self.ready) <= self.waking:
                    self._watching = False
                    continue
                now = time.monotonic()
                for slot in self.busy:
                    if not slot.out and slot.started and now - slot.started > LONG_S:
                        slot.out = True
                        self.active -= 1
                start = self.dispatch()
                if start:
                    lock.release()
                    try:
                        self.start_threads(start)
                    finally:
                        lock.acquire()

    # --- the blocking hooks -------------------------------------------------------------------

    def blocked(self, slot: _Slot) -> bool:
        with self.lock:
            if slot.out:
                return False
            slot.out = True
            self.active -= 1
            start = self.dispatch()
        if start:
            self.start_threads(start)
        return True

    def unblocked(self, slot: _Slot) -> None:
        with self.lock:
            if slot.out:
                slot.out = False
                self.active += 1


def begin_blocking() -> Any:
    """The calling thread is about to block (``runtime.get``/``wait``): if it is a strand
    pool's, the pool lets another thread run the strands that wait. Returns what
    :func:`end_blocking` takes."""
    held = getattr(_local, "slot", None)
    if held is None:
        return None
    pool, slot = held
    return held if pool.blocked(slot) else None


def end_blocking(token: Any) -> None:
    if token is not None:
        pool, slot = token
        pool.unblocked(slot)


def default_target() -> int:
    """Runnable threads a pool keeps: the cores this process may use (at most 32)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(2, min(cores, 32))


__all__ = [
    "IDLE_S",
    "LONG_S",
    "TURN",
    "Runner",
    "Strand",
    "StrandPool",
    "begin_blocking",
    "default_target",
    "end_blocking",
]
