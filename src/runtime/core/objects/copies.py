"""The copies of an owner's large objects on other hosts, and which one a reader fetches.

A reader on another host keeps what it fetched (a copy in its own store) and tells the
owner (``ObjectCopied``); the owner then sends later readers to the nearest copy: one on the
reader's own host (mapped, nothing streamed), else the copy serving the fewest readers. A
source serves ``fanout`` readers at a time; a reader that finds every source busy waits
(bounded) for a copy to finish, so a broadcast to N hosts spreads as a tree (1, 2, 4, ...
sources) instead of N streams out of the owner. Pure bookkeeping on the owner's loop: the
transfer (:mod:`.transfer`) does the I/O.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Final

from ..wire import protocol as p

#: Readers one source streams to at once (``RUNTIME_BROADCAST_FANOUT``).
FANOUT: Final = max(1, int(os.environ.get("RUNTIME_BROADCAST_FANOUT", "1")))
#: A reader that never says it finished frees its source after this long, plus its size at
#: this rate (seconds; bytes per second).
LEASE_S: Final = 10.0
LEASE_RATE: Final = 50e6


class _Copies:
    __slots__ = ("changed", "leases", "located", "serving")

    def __init__(self) -> None:
        #: node id -> a copy other readers may fetch (not a driver's: drivers serve no one).
        self.located: dict[str, p.Located] = {}
        #: node id of a source -> readers fetching from it now.
        self.serving: dict[str, int] = {}
        #: reader node id -> (its source's node id, the timer that ends its lease).
        self.leases: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        self.changed: asyncio.Event | None = None


class CopyDirectory:
    """Where copies of this process's objects are, and who reads from which (owner side)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, alive: Callable[[str], bool]) -> None:
        self.loop = loop
        self.alive = alive
        self.fanout = FANOUT
        self._objects: dict[bytes, _Copies] = {}
        #: Every copy, for freeing with the object (drivers' too): oid -> {node id: Located}.
        self.holders: dict[bytes, dict[str, p.Located]] = {}

    async def source(self, oid: bytes, primary: p.Located, reader: str, host: str) -> p.Located:
        """Where ``reader`` (on store host ``host``) should read object ``oid`` from."""
        state = self._objects.get(oid)
        if state is None:
            state = self._objects[oid] = _Copies()
        wait_until = self.loop.time() + _lease_s(primary.size)
        while True:
            sources = [primary, *(c for c in state.located.values() if self.alive(c.node_id))]
            if host:
                for s in sources:
                    if s.host == host:
                        return s  # on the reader's host: mapped, nothing streamed
            # The least busy; a copy before the primary (the producer, or the owner, has its
            # own work): readers spread over the copies as they appear.
            best = min(sources, key=lambda s: (state.serving.get(s.node_id, 0), s is primary))
            left = wait_until - self.loop.time()
            if state.serving.get(best.node_id, 0) < self.fanout or left <= 0:
                self._lease(oid, state, reader, best)
                return best
            if state.changed is None:
                state.changed = asyncio.Event()
            changed = state.changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                pass
            if self._objects.get(oid) is not state:  # freed meanwhile
                return primary

    def copied(self, oid: bytes, reader: str, loc: p.Located | None, serves: bool) -> None:
        """``reader`` finished reading ``oid`` (an object the caller owns) and keeps a copy at
        ``loc`` (None: it keeps none)."""
        state = self._objects.setdefault(oid, _Copies())
        self._release(state, reader)
        if loc is not None:
            self.holders.setdefault(oid, {})[loc.node_id] = loc
            if serves:
                state.located[loc.node_id] = loc
        self._wake(state)

    def lost(self, oid: bytes, node_id: str, reader: str) -> None:
        """A reader could not read ``oid`` at ``node_id``'s copy: give it no more readers."""
        state = self._objects.get(oid)
        if state is not None:
            self._release(state, reader)
            state.located.pop(node_id, None)
            self._wake(state)
        held = self.holders.get(oid)
        if held is not None:
            held.pop(node_id, None)

    def is_copy(self, oid: bytes, node_id: str) -> bool:
        state = self._objects.get(oid)
        return state is not None and node_id in state.located

    def forget(self, oid: bytes) -> list[p.Located]:
        """The object is freed: the copies to free with it."""
        state = self._objects.pop(oid, None)
        if state is not None:
            for _, timer in state.leases.values():
                timer.cancel()
            self._wake(state)
        return list(self.holders.pop(oid, {}).values())

    def _lease(self, oid: bytes, state: _Copies, reader: str, source: p.Located) -> None:
        self._release(state, reader)
        state.serving[source.node_id] = state.serving.get(source.node_id, 0) + 1
        timer = self.loop.call_later(
            _lease_s(source.size), self._expire, oid, state, reader, source.node_id
        )
        state.leases[reader] = (source.node_id, timer)

    def _expire(self, oid: bytes, state: _Copies, reader: str, node_id: str) -> None:
        lease = state.leases.get(reader)
        if lease is not None and lease[0] == node_id:
            self._release(state, reader)
            self._wake(state)

    def _release(self, state: _Copies, reader: str) -> None:
        lease = state.leases.pop(reader, None)
        if lease is None:
            return
        node_id, timer = lease
        timer.cancel()
        n = state.serving.get(node_id, 0) - 1
        if n > 0:
            state.serving[node_id] = n
        else:
            state.serving.pop(node_id, None)

    @staticmethod
    def _wake(state: _Copies) -> None:
        if state.changed is not None:
            state.changed.set()
            state.changed = None


def _lease_s(size: int) -> float:
    return LEASE_S + size / LEASE_RATE


__all__ = ["FANOUT", "CopyDirectory"]
