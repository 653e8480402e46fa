"""Waking the node processes of a host that wait for its resources (instead of polling).

A process whose queued work waits for what other processes of its host hold marks its row
of the host's ledger as waiting (:meth:`Waiters.mark`). A process that gives resources back
(or finds those of a dead process) reads one number, how many wait, and only when some do
sends each of them one datagram on its wake socket (a Linux abstract Unix socket named by
the ledger and the pid: nothing on disk, gone with the process). The waiter's loop reads it
and looks at its queue at once. Where there is no such socket (not Linux), waiting work
polls as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
from typing import Any


class Waiters:
    """The waiting marks of one host's ledger: ``nums`` are its numbers; ``layout`` is
    (``count``: the index of how many wait, then a mark per row; ``rows``: the index of the
    first row, whose first number is its pid; ``row_size``; ``procs``: how many rows)."""

    __slots__ = ("count", "flags", "key", "nums", "procs", "row_size", "rows")

    def __init__(self, path: str | None, nums: Any, layout: tuple[int, int, int, int]) -> None:
        count, self.rows, self.row_size, self.procs = layout
        self.nums, self.count, self.flags = nums, count, count + 1
        self.key = hashlib.blake2b((path or "").encode(), digest_size=8).hexdigest()

    def set(self, base: int, waits: bool) -> None:
        """Mark the row at ``base`` as waiting, or not (under the ledger's lock)."""
        nums = self.nums
        k = self.flags + (base - self.rows) // self.row_size
        if (nums[k] > 0) != waits:
            nums[k] = 1.0 if waits else 0.0
            nums[self.count] = max(0.0, nums[self.count] + (1 if waits else -1))

    def mark(self, ledger: Any, waits: bool) -> None:
        """Mark the process of ``ledger`` (a joined ``HostLedger``) as one whose work waits
        for the host, or not."""
        if ledger._row >= 0 and not ledger.closed:
            ledger._lock()
            try:
                self.set(ledger._row, waits)
            finally:
                ledger._unlock()

    def address(self, pid: int) -> bytes:
        return f"\0runtime-ledger-{self.key}-{pid}".encode()

    def open_socket(self) -> socket.socket | None:
        """This process's wake socket, or None where there is none (then it polls)."""
        if not sys.platform.startswith("linux"):
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.address(os.getpid()))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def wake(self) -> int:
        """Wake every other process marked as waiting; how many were told."""
        nums, me, told = self.nums, os.getpid(), 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for r in range(self.procs):
                if nums[self.flags + r] <= 0:
                    continue
                pid = int(nums[self.rows + r * self.row_size])
                if pid in (0, me):
                    continue
                with contextlib.suppress(OSError):  # gone, or its queue is full: it polls
                    sock.sendto(b"!", self.address(pid))
                    told += 1
        return told


__all__ = ["Waiters"]
