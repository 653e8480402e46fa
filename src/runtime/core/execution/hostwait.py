"""Work that waits for the host: woken when another process of the host gives back.

A node process queues work its host has no room for now. Before, it looked at its queue
every 10 ms while anything was queued, even work that waited only for this process's own
running work (its CPU slot), which the process's own releases already hand on. Now:

- only work that waits for the *host* (room in this process's slot, none on the host)
  arms a wait;
- the process marks itself waiting in the host's ledger, and a process that gives
  resources back wakes it with a datagram (``scheduling.wake``): the work starts as soon as
  the resources are free, not up to 10 ms later;
- a slow look remains, backing off from 10 ms to 0.5 s, for what sends no datagram: a
  process of the host that died (its share comes back by a sweep), and platforms without
  the wake socket (there it stays at 10 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from typing import Final

from ..scheduling.host import HostScheduler

#: The first and the longest wait between looks at a queue that waits for the host (s).
FIRST_LOOK: Final = 0.01
LAST_LOOK: Final = 0.5


class HostWait:
    """The waiting of one node process's queue for its host (see the module)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sched: HostScheduler,
        start: Callable[[list[Hashable]], None],
    ) -> None:
        self.loop, self.sched, self._start = loop, sched, start
        ledger = sched.ledger
        self._sock = ledger.waiters.open_socket() if ledger.path is not None else None
        if self._sock is not None:
            loop.add_reader(self._sock.fileno(), self._woken)
        self._timer: asyncio.TimerHandle | None = None
        self._delay = FIRST_LOOK
        self.waiting = False
        #: Wake-ups received (tests, and to tell them from the slow looks).
        self.wakes = 0

    def arm(self) -> None:
        """Queued work may wait for the host: mark this process, and look again soon."""
        if self.sched.ledger.path is None or self.sched.ledger.closed:
            return
        if not self.waiting:
            if not self.sched.waits_for_host():
                return  # only for this process's own running work: its releases hand on
            self.waiting = True
            self.sched.ledger.waiters.mark(self.sched.ledger, True)
            self._delay = FIRST_LOOK
            self.loop.call_soon(self.look)  # what was given back before the mark
        if self._timer is None:
            self._timer = self.loop.call_later(self._delay, self._timed)

    def _timed(self) -> None:
        self._timer = None
        if self._sock is not None:  # the datagrams carry the news: back off
            self._delay = min(LAST_LOOK, self._delay * 2)
        self.sched.ledger.sweep()  # a process of the host that died gives back its share
        self.look()

    def _woken(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(OSError):
            while self._sock.recv(64):
                self.wakes += 1
        self.look()

    def look(self) -> None:
        """Grant what the host has room for now; keep waiting while work waits for it."""
        sched = self.sched
        if sched.ledger.closed:
            return
        granted = sched._grant()
        if granted:
            self._start(granted)
        sched.claim_for_queue()
        if sched.queue and sched.waits_for_host():
            self.arm()
        elif self.waiting:
            self.waiting = False
            sched.ledger.waiters.mark(sched.ledger, False)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


__all__ = ["FIRST_LOOK", "LAST_LOOK", "HostWait"]
