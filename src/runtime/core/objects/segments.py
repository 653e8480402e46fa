"""The memory a store keeps that is not objects: freed shared-memory files kept for reuse,
spare segments mapped ahead by a thread of their own, and freed files that readers elsewhere
may still map (draining).

Writing a large object into a file whose pages already exist, with page tables already
filled, is a plain memory copy; allocating fresh pages costs as much CPU as the copy. So a
freed object's file is kept (up to a few), and a background thread maps one ahead for the
next object of about the same size. All of it counts against the store's capacity and is
dropped first when the store needs room. The pool shares its store's lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from ..wire.protocol import Value
from . import blob

#: Freed shared-memory files kept for reuse (their pages are already allocated).
POOL_FILES: Final = 4
#: Spare segments (allocated and mapped ahead, in the background) are dropped when unused
#: for this long.
SPARE_IDLE_S: Final = 20.0
#: How long a freed file waits for its readers elsewhere to report their mappings gone.
DRAIN_S: Final = 10.0


class Stored:
    """One object in the store."""

    __slots__ = (
        "kind",
        "last_used",
        "layout",
        "mem",
        "oid",
        "path",
        "readers",
        "size",
        "value",
        "wmem",
    )

    def __init__(self, value: Value, layout: blob.Layout, kind: str, path: str) -> None:
        self.oid = b""
        self.value = value
        self.layout = layout
        self.size = layout.size
        self.kind = kind
        self.path = path  # the shm or spill file ("" for memory)
        #: The blob mapped here (anonymous memory for MEMORY; else mapped on first read).
        self.mem: mmap.mmap | None = None
        #: The writable mapping the blob was written through (shm written into a spare):
        #: never handed to readers, so once the object is freed and its readers are gone
        #: it is a spare again as it is, page tables filled.
        self.wmem: mmap.mmap | None = None
        #: Mappings of the file handed to readers in other processes and not yet reported
        #: gone (``Unmapped``): the file is reused only once this is back to 0.
        self.readers = 0
        self.last_used = time.monotonic()


def close_writer(entry: Stored) -> None:
    """Drop the writer's mapping of ``entry`` (handed to no reader; a view of it that a
    connection still held, a stream's landing, keeps it until that view goes)."""
    if entry.wmem is not None:
        with contextlib.suppress(BufferError):
            entry.wmem.close()
        entry.wmem = None


class SegmentPool:
    """Freed files, spares and draining files of one store's shm directory.

    Methods marked "lock held" run under ``cond`` (the store's lock); the others take it.
    """

    def __init__(self, shm_dir: str | None, cond: threading.Condition) -> None:
        self.shm_dir = shm_dir
        self._cond = cond
        self.closed = False
        #: Freed files: (path, size).
        self.pool: list[tuple[str, int]] = []
        #: Segments made ahead (allocated, mapped, page tables filled) for the next object
        #: of about the same size: writing into one is a plain memory copy.
        self.spares: list[tuple[str, int, mmap.mmap, float]] = []
        #: Freed objects whose files readers elsewhere may still map: oid -> (record, until).
        self.draining: dict[bytes, tuple[Stored, float]] = {}
        self.bytes = 0  # bytes of pool files, spares and draining files (memory, not objects)
        self.last_write = time.monotonic()
        self._want = 0
        self._thread: threading.Thread | None = None
        self._seq = 0

    # --- taking a segment ----------------------------------------------------------------

    def take_spare(self, size: int) -> tuple[str, mmap.mmap] | None:
        """A spare of exactly ``size`` bytes, mapped and writable, if one is ready."""
        with self._cond:
            for i, (path, n, mem, _) in enumerate(self.spares):
                if n == size:
                    del self.spares[i]
                    self.bytes -= n
                    return path, mem
        return None

    def reuse_file(self, path: str, size: int) -> bool:
        """Rename a freed file of a fitting size to ``path``; False when none is kept."""
        with self._cond:
            best = None
            for i, (_, n) in enumerate(self.pool):
                if size <= n <= 2 * size and (best is None or n < self.pool[best][1]):
                    best = i
            if best is None:
                return False
            old, n = self.pool.pop(best)
            self.bytes -= n
            try:
                os.rename(old, path)
            except OSError:
                return False
        return True

    # --- giving a segment back -----------------------------------------------------------

    def recycle_or_unlink(self, entry: Stored, keepable: bool) -> None:
        """Keep a freed object's shm file for the next object of its size, if nobody can be
        reading it and ``keepable`` (it was unmapped here and fits the capacity) (lock held)."""
        keep = keepable and not self.closed and len(self.pool) < POOL_FILES
        if keep and entry.readers > 0 and len(self.draining) < POOL_FILES:
            # Readers elsewhere may still map it: keep it (renamed: the object is gone) until
            # they say they are done, then reuse it; dropped after a while if they never do.
            drained = self.renamed(entry.path, "drain")
            if drained is not None:
                entry.path = drained
                self._ensure_thread()
                self.draining[entry.oid] = (entry, time.monotonic() + DRAIN_S)
                self.bytes += entry.size
                return
        elif keep and entry.readers == 0 and entry.wmem is not None and len(self.spares) < 2:
            # Its writer's mapping is still there, page tables filled: a spare as it is.
            spare = self.renamed(entry.path, "spare")
            if spare is not None:
                self.spares.append((spare, entry.size, entry.wmem, time.monotonic()))
                self.bytes += entry.size
                entry.wmem = None
                self._ensure_thread()  # it also expires spares left unused
                return
        close_writer(entry)
        if keep and entry.readers == 0:
            free = self.renamed(entry.path, "free")
            if free is not None:
                self.pool.append((free, entry.size))
                self.bytes += entry.size
                self._want_spare(entry.size)
                return
        with contextlib.suppress(OSError):
            os.unlink(entry.path)

    def reader_gone(self, oid: bytes) -> Stored | None:
        """A reader of the draining file of ``oid`` let go of it; the record once the last
        one did (no longer draining nor counted here), else None (lock held)."""
        draining = self.draining.get(oid)
        if draining is None:
            return None
        entry = draining[0]
        entry.readers -= 1
        if entry.readers > 0:
            return None
        del self.draining[oid]
        self.bytes -= entry.size
        return entry

    def renamed(self, path: str, kind: str) -> str | None:
        """``path`` renamed ``<kind>.<n>`` in the shm directory (lock held); None if that
        fails (the caller unlinks it)."""
        if self.shm_dir is None:
            return None
        self._seq += 1
        new = os.path.join(self.shm_dir, f"{kind}.{self._seq}")
        try:
            os.rename(path, new)
        except OSError:
            return None
        return new

    def drop(self, need: int) -> None:
        """Give back at least ``need`` bytes of kept files, if there are that many (lock held)."""
        for oid, (entry, _) in list(self.draining.items()):
            if need <= 0:
                break
            del self.draining[oid]
            self.bytes -= entry.size
            need -= entry.size
            close_writer(entry)
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        while self.spares and need > 0:
            path, n, mem, _ = self.spares.pop()
            self.bytes -= n
            need -= n
            mem.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        while self.pool and need > 0:
            path, n = self.pool.pop()
            self.bytes -= n
            need -= n
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        """Forget everything kept (lock held; the store removes the directory)."""
        self.closed = True
        for _, _, mem, _ in self.spares:
            mem.close()
        self.spares.clear()
        self.pool.clear()
        for entry, _ in self.draining.values():
            close_writer(entry)
        self.draining.clear()
        self.bytes = 0

    # --- the spare thread ----------------------------------------------------------------

    def _want_spare(self, size: int) -> None:
        """Have a freed segment of ``size`` bytes mapped ahead, in the background (lock held).

        Only freed files are made spares: their pages exist, so the thread only fills page
        tables; allocating fresh ones ahead would cost as much CPU as writing into them."""
        if self.closed or self.shm_dir is None or len(self.spares) >= 2:
            return
        self._want = size
        self._ensure_thread()
        self._cond.notify_all()

    def _ensure_thread(self) -> None:
        """Start the thread that maps spares and expires what waits (lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="runtime-store-spares", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.closed and self._want == 0:
                    self._cond.wait(SPARE_IDLE_S / 2)
                    self._expire()
                if self.closed or self.shm_dir is None:
                    return
                size, self._want = self._want, 0
                src = next((f for f in self.pool if f[1] == size), None)
                if src is None:
                    continue
                self.pool.remove(src)
                self.bytes -= src[1]
                self._seq += 1
                path = os.path.join(self.shm_dir, f"spare.{self._seq}")
                self.bytes += size
            mem = make_spare(path, size, src[0])
            with self._cond:
                if mem is None or self.closed:
                    self.bytes -= size
                    if mem is not None:
                        mem.close()
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                    if self.closed:
                        return
                    continue
                self.spares.append((path, size, mem, time.monotonic()))
                if self.pool and len(self.spares) < 2 and not self._want:
                    self._want = self.pool[-1][1]  # another freed file is waiting
                self._cond.notify_all()

    def _expire(self) -> None:
        """Drop what waited too long: an idle pool, undrained files, unused spares (lock held)."""
        now = time.monotonic()
        if self.pool and now - self.last_write > SPARE_IDLE_S:
            self.drop(self.bytes)
        for oid, (entry, until) in list(self.draining.items()):
            if now > until:  # its readers never reported: do not reuse it
                del self.draining[oid]
                self.bytes -= entry.size
                close_writer(entry)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        keep = []
        for spare in self.spares:
            if now - spare[3] > SPARE_IDLE_S:
                self.bytes -= spare[1]
                spare[2].close()
                with contextlib.suppress(OSError):
                    os.unlink(spare[0])
            else:
                keep.append(spare)
        self.spares = keep


_MADV_POPULATE_WRITE = 23


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise`` (Linux), called through ctypes: the GIL is let go during the call
    (Python's own ``mmap.madvise`` holds it, which would stall the event loop)."""
    if sys.platform != "linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _libc_madvise()
_MADV_POPULATE_READ = 22


def populate(mem: mmap.mmap, start: int, length: int, *, write: bool = False) -> bool:
    """Fill the page tables of ``mem``'s bytes [start, start + length) in one call, the GIL
    let go meanwhile (Linux 5.14+): a reader (``write``: a writer) of those bytes then takes
    no page fault per 4 KiB. False, having done nothing, where that cannot be done."""
    if _madvise is None:
        return False
    try:
        pointer = ctypes.c_char.from_buffer(mem)  # (holds the mapping open meanwhile)
    except (TypeError, ValueError, BufferError):  # closed (given back), or read-only
        return False
    start -= start % mmap.PAGESIZE
    length = min(length + mmap.PAGESIZE, len(mem) - start) if start < len(mem) else 0
    try:
        advice = _MADV_POPULATE_WRITE if write else _MADV_POPULATE_READ
        return length > 0 and _madvise(ctypes.addressof(pointer) + start, length, advice) == 0
    finally:
        del pointer


def make_spare(path: str, size: int, reuse: str) -> mmap.mmap | None:
    """A writable, populated mapping of the freed file ``reuse``, renamed ``path`` (None
    if that fails; the pages are allocated first, so a write can never fault on them)."""
    try:
        os.rename(reuse, path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
            mem = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
            # Page tables filled off the GIL (mmap's MAP_POPULATE holds it, which stalled
            # the event loop for as long: a second or more for 1 GiB here).
            if not populate(mem, 0, size, write=True):
                mem.close()
                mem = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
            return mem
        finally:
            os.close(fd)
    except OSError:
        return None


__all__ = [
    "DRAIN_S",
    "POOL_FILES",
    "SPARE_IDLE_S",
    "SegmentPool",
    "Stored",
    "close_writer",
    "populate",
]
