"""A segment of the object store that an object streamed from another host is read into.

A reader on another host keeps what it fetches (:mod:`.transfer`). Rather than reading each
chunk into a buffer of its own, copying it into one of the object's size and then copying
that into the store, the reader reserves the object's file in its store first (a
:class:`Landing`, counted against the capacity), the connection reads every chunk's payload
straight into it from the socket (``Connection.sink``), and the file becomes the stored
object once every chunk has come and passed its seal (:meth:`Landing.commit`), or is given
back (:meth:`Landing.abort`). One copy, the kernel's, from the socket into the store.

The file's pages are allocated (``posix_fallocate``: a full ``/dev/shm`` is then an error,
never a SIGBUS while writing) and mapped (``madvise(MADV_POPULATE_WRITE)`` on Linux 5.14+,
through ctypes, which lets go of the GIL) by a thread that runs ahead of the chunks: a chunk
is asked for once its place is ready (:meth:`Landing.ready`), and the socket's copy into it
then takes no page fault. Fresh pages cost more than the copy itself here (about 1 s a GiB
when faulted in one by one), so this work runs beside the transfer, not in it. A reused
spare segment is ready already.

A friend of :class:`~.store.ObjectStore`: it takes the store's lock and counts its bytes
as the store's own ``put`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import threading
import time

from ..common.exceptions import ObjectLostError, OutOfMemoryError
from ..wire.protocol import Value
from . import blob
from .segments import Stored, populate
from .store import SHM, SPILLED, ObjectStore

#: The allocating thread's step (bytes).
ALLOCATE_STEP = 16 << 20


class NoRoom(Exception):
    """The store's shared memory could not hold the object after all (the message says why)."""


class Landing:
    """The reserved file of one object being received, mapped writable (``view``)."""

    def __init__(self, store: ObjectStore, oid: bytes, size: int, path: str) -> None:
        self.store = store
        self.oid = oid
        self.size = size
        self.path = path
        self.mem: mmap.mmap | None = None
        #: Writable bytes of the whole file: chunks are read into slices of it.
        self.view = memoryview(b"")
        self.done = False
        #: Bytes from the start of the file whose pages are allocated.
        self.allocated = 0
        self._fd = -1
        self._started = False
        self._error: str | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def _map(self, reuse: bool) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC | (0 if reuse else os.O_CREAT | os.O_EXCL)
        self._fd = os.open(self.path, flags, 0o600)
        try:
            os.ftruncate(self._fd, self.size)
            self.mem = mmap.mmap(self._fd, self.size)
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise
        self.view = memoryview(self.mem)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start allocating the file's pages ahead of the chunks (on the loop)."""
        if self._fd < 0:
            self.allocated = self.size  # a spare: allocated and mapped already
            return
        self._started = True  # (the thread closes the file)
        threading.Thread(
            target=self._allocate, args=(loop,), name="runtime-landing", daemon=True
        ).start()

    def _allocate(self, loop: asyncio.AbstractEventLoop) -> None:
        done, error = 0, None
        try:
            mem = self.mem
            while done < self.size and not self.done:  # (given back: stop)
                step = min(ALLOCATE_STEP, self.size - done)
                os.posix_fallocate(self._fd, done, step)  # (the GIL is let go meanwhile)
                if mem is not None and not populate(mem, done, step, write=True):
                    mem = None  # not on this kernel: the socket's copy faults them in
                done += step
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(self._progress, done, None)
        except (OSError, ValueError) as exc:
            error = f"no room for {self.size} bytes in {os.path.dirname(self.path)}: {exc}"
        finally:
            os.close(self._fd)
        if error is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._progress, done, error)

    def _progress(self, allocated: int, error: str | None) -> None:
        self.allocated, self._error = allocated, error
        waiting = []
        for end, fut in self._waiters:
            if fut.done():
                continue
            if end <= allocated:
                fut.set_result(None)
            elif error is not None:
                fut.set_exception(NoRoom(error))
            else:
                waiting.append((end, fut))
        self._waiters = waiting

    async def ready(self, end: int) -> None:
        """Wait until the first ``end`` bytes are allocated (NoRoom if they cannot be)."""
        if end <= self.allocated:
            return
        if self._error is not None:
            raise NoRoom(self._error)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((end, fut))
        await fut

    def commit(self) -> tuple[Stored, Value]:
        """Make the received file the stored object (it must hold a whole blob)."""
        assert not self.done
        value, _ = blob.parse(self.view, f"the copy of {self.oid.hex()} being received")
        layout = blob.Layout(value)
        if layout.size != self.size:
            self.abort()
            raise ObjectLostError(f"the copy of {self.oid.hex()} received is malformed")
        entry = Stored(value, layout, SHM, self.path)
        entry.oid = self.oid
        # The mapping it was written through stays (unmapping 1 GiB costs a good part of a
        # second), page tables filled: once the object is freed, it is a spare as it is.
        self.view.release()
        wmem, self.mem = self.mem, None
        entry.wmem = wmem
        store = self.store
        with store._cond:
            if store._closed:  # (its counts are gone with it)
                self.done = True
                self._unlink()
                if wmem is not None:
                    with contextlib.suppress(BufferError):
                        wmem.close()
                raise ObjectLostError("the object store closed while the object was received")
            store.objects[self.oid] = entry
            self.done = True
        return entry, value

    def abort(self) -> None:
        """Give the reservation back (the transfer failed); safe to call twice."""
        if self.done:
            return
        self.done = True
        if not self._started and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._unmap()
        self._unlink()
        with self.store._cond:
            self.store.used -= self.size
            self.store._cond.notify_all()

    def _unmap(self) -> None:
        self.view.release()
        if self.mem is not None:
            # A view the connection still holds (it let go of them when it closed, so this is
            # rare) keeps the mapping: it goes with that view.
            with contextlib.suppress(BufferError):
                self.mem.close()
            self.mem = None

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def reserve(store: ObjectStore, oid: bytes, size: int, what: str) -> Landing | None:
    """A file of ``size`` bytes in ``store``'s shared memory for object ``oid``, counted and
    allocated; None when the store has no room for it in memory (or no shared memory): the
    caller reads into memory of its own then. Blocking (it may spill): off the event loop."""
    with store._cond:
        if store.shm_dir is None or store._closed:
            return None
        try:
            kind = store._reserve(size, False, what)
        except OutOfMemoryError:
            return None
        if kind != SHM:
            if kind != SPILLED:
                store.used -= size
            store._cond.notify_all()
            return None
        store._seq += 1
        store.segments.last_write = time.monotonic()
        path = os.path.join(store.shm_dir, f"{oid.hex()}.{store._seq}")
    landing = Landing(store, oid, size, path)
    try:
        spare = store.segments.take_spare(size)
        if spare is not None:  # allocated and mapped already, page tables filled
            os.rename(spare[0], path)
            landing.mem = spare[1]
            landing.view = memoryview(spare[1])
            store.reused += 1
        else:
            reuse = store.segments.reuse_file(path, size)
            store.reused += reuse
            landing._map(reuse)
    except OSError:
        landing.abort()
        return None
    return landing


__all__ = ["Landing", "reserve"]
