"""A process's store of large objects: shared memory, a capacity, spilling to disk.

Every large value a process keeps for others (a task's big result, a big ``put``) is
written once, as a blob (:mod:`._blob`), into a file of its own in
``/dev/shm/runtime-<uid>/<node>.<pid>.<start>/``; a reader on the same host maps that
file and gets read-only arrays over the very pages the producer wrote (no copy). Blobs
under :data:`SHM_MIN`, or every blob when ``/dev/shm`` is unusable, live in anonymous
memory and travel over the mesh.

The store holds at most ``capacity`` bytes in memory. Past it, the least recently used
objects are copied to spill files (the node's state directory, else the host's runtime
directory) and their memory is released; a spilled object is mapped from its file when
read, so it comes back through the page cache, which the kernel can always reclaim.
With spilling off (or the disk full), a producer waits, within a bound, for objects to
be freed, then fails with :class:`OutOfMemoryError` naming the task.

Memory a reader in this process still maps (an array it holds) cannot be given back
when its object is spilled or freed; it is counted until the reader drops it.

Directories are named after the process (pid and start time): a process removes its own
on exit, and every store that starts, or closes, removes those of dead processes, so a
node killed with SIGKILL leaks nothing for longer than the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import mmap
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from ..common.exceptions import OutOfMemoryError
from ..common.metrics import SPILL_BYTES
from ..common.private import UntrustedPathError, check_private, private_dir
from ..wire.protocol import Value
from . import blob
from .segments import SegmentPool, Stored, close_writer

#: Blobs at least this big go to shared memory (smaller ones are cheaper to copy).
SHM_MIN: Final = 1 << 20
#: Default capacity: this fraction of the host's memory, per store.
DEFAULT_FRACTION: Final = 0.3

MEMORY = "memory"
SHM = "shm"
SPILLED = "spilled"


def host_id() -> str:
    """Who shares this machine's memory: hostname and boot id (``RUNTIME_HOST_ID`` overrides)."""
    forced = os.environ.get("RUNTIME_HOST_ID")
    if forced:
        return forced
    boot = ""
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    return f"{socket.gethostname()}/{boot}"


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 8 << 30


def parse_size(text: str, what: str) -> int:
    """Bytes from ``123``, ``64MB``, ``1.5GiB``... (raises ValueError naming ``what``)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in units and not s[-1:].isdigit() else ""
    try:
        value = float(s[: len(s) - len(unit)]) * units[unit]
    except ValueError:
        raise ValueError(
            f"{what} must be a size in bytes (e.g. 268435456 or 256MB), got {text!r}"
        ) from None
    if value <= 0:
        raise ValueError(f"{what} must be > 0, got {text!r}")
    return int(value)


def default_capacity() -> int:
    env = os.environ.get("RUNTIME_OBJECT_STORE_MEMORY")
    if env:
        return parse_size(env, "RUNTIME_OBJECT_STORE_MEMORY")
    return int(total_memory() * DEFAULT_FRACTION)


def shm_root() -> str:
    return os.path.join(os.environ.get("RUNTIME_SHM_DIR", "/dev/shm"), f"runtime-{os.getuid()}")


def spill_root(state_dir: str | None) -> str:
    if state_dir:
        return os.path.join(state_dir, "spill")
    base = os.environ.get("RUNTIME_TMPDIR") or os.path.join(
        tempfile.gettempdir(), f"runtime-{os.getuid()}"
    )
    return os.path.join(base, "spill")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (None if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def process_running(tag: str) -> bool:
    """Whether the process of a :func:`process_tag` (``pid.start``) still runs."""
    pid, _, start = tag.partition(".")
    return pid.isdigit() and _start_time(int(pid)) == start


def process_tag() -> str:
    pid = os.getpid()
    return f"{pid}.{_start_time(pid) or '0'}"


def sweep_orphans(root: str) -> list[str]:
    """Remove the directories under ``root`` of processes that no longer run."""
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        parts = name.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        start = _start_time(int(parts[1]))
        if start is None or start != parts[2]:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


class ObjectStore:
    """Large objects kept by one process for others to read; thread-safe."""

    def __init__(
        self,
        node_id: str,
        state_dir: str | None = None,
        *,
        capacity: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.host_id = host_id()
        self.capacity = capacity if capacity is not None else default_capacity()
        self.spilling = os.environ.get("RUNTIME_OBJECT_SPILLING", "1") not in ("0", "false", "")
        self.full_wait_s = float(os.environ.get("RUNTIME_OBJECT_STORE_FULL_WAIT_S", "10"))
        self.objects: dict[bytes, Stored] = {}
        self.used = 0  # bytes of objects held in memory (shm and anonymous)
        self.pinned = 0  # bytes freed or spilled but still mapped by a reader here
        self.spilled_bytes = 0
        self.spill_count = 0
        self.reused = 0  # objects written into a reused (spare) segment
        self._zombies: list[tuple[mmap.mmap, int]] = []
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        tag = f"{node_id}.{process_tag()}"
        root = shm_root()
        self._roots = [root, spill_root(state_dir)]
        self.shm_dir: str | None = os.path.join(root, tag)
        self.spill_dir = os.path.join(self._roots[1], tag)
        self._made: list[str] = []
        self._closed = False
        for r in self._roots:
            if os.path.lexists(r):  # never sweep or use a directory another user planted
                check_private(r, directory=True)
            sweep_orphans(r)
        try:
            private_dir(root)
            os.mkdir(self.shm_dir, 0o700)
            self._made.append(self.shm_dir)
        except UntrustedPathError:
            raise
        except OSError:
            self.shm_dir = None  # no usable /dev/shm: large objects stay in this process
        #: Freed files, spares and draining files (memory that is not objects).
        self.segments = SegmentPool(self.shm_dir, self._cond)
        atexit.register(self.close)

    # --- writing ----------------------------------------------------------------------

    def put(
        self,
        oid: bytes,
        value: Value,
        buffers: Sequence[Any],
        *,
        can_wait: bool,
        what: str,
    ) -> Stored:
        """Store ``value`` (header and out-of-band buffers) under ``oid``; returns its record.

        Makes room by spilling; without spilling, waits up to ``full_wait_s`` for frees
        when ``can_wait`` (not on the event loop, which delivers the frees), then raises
        OutOfMemoryError naming ``what``.
        """
        layout = blob.Layout(value)
        size = layout.size
        with self._cond:
            kind = self._reserve(size, can_wait, what)
            self.segments.last_write = time.monotonic()
            self._seq += 1
            seq = self._seq
        try:
            entry = self._write(oid, value, layout=layout, buffers=buffers, kind=kind, seq=seq)
        except BaseException:
            with self._cond:
                if kind != SPILLED:
                    self.used -= size
                self._cond.notify_all()
            raise
        entry.oid = oid
        with self._cond:
            self.objects[oid] = entry
            if kind == SPILLED:
                self.spilled_bytes += size
                SPILL_BYTES[0] += size
                self.spill_count += 1
        return entry

    def _in_memory(self) -> int:
        return self.used + self.pinned + self.segments.bytes

    def _reserve(self, size: int, can_wait: bool, what: str) -> str:
        """Make room for ``size`` bytes and count them (lock held); returns where they go."""
        deadline: float | None = None
        if size > self.capacity and self.spilling and self._spill_dir_ok():
            return SPILLED  # bigger than the whole store: straight to disk
        while True:
            self._reap()
            if self._in_memory() + size <= self.capacity:
                break
            self.segments.drop(self._in_memory() + size - self.capacity)
            if self._in_memory() + size <= self.capacity:
                break
            if self.spilling and self._spill_some(self._in_memory() + size - self.capacity):
                continue
            if self.spilling and self._spill_dir_ok():
                return SPILLED  # nothing more to spill: this one goes straight to disk
            now = time.monotonic()
            if deadline is None:
                deadline = now + (self.full_wait_s if can_wait else 0.0)
            if now >= deadline:
                raise OutOfMemoryError(self._full_message(size, what))
            self._cond.wait(min(0.5, deadline - now))
        self.used += size
        return SHM if self.shm_dir is not None and size >= SHM_MIN else MEMORY

    def _full_message(self, size: int, what: str) -> str:
        why = "spilling is off (RUNTIME_OBJECT_SPILLING=0)"
        if self.spilling:
            why = f"the spill directory {self.spill_dir} cannot be written"
        pinned = f", {_mb(self.pinned)} still mapped by readers" if self.pinned else ""
        return (
            f"{what} needs {_mb(size)} in the object store of node {self.node_id}, which holds "
            f"{_mb(self.used)} of its {_mb(self.capacity)}{pinned}; {why}, and nothing was freed "
            f"within {self.full_wait_s:g} s. Drop references to objects you no longer need, "
            "or raise object_store_memory (runtime.init(object_store_memory=...), "
            "--object-store-memory, RUNTIME_OBJECT_STORE_MEMORY)"
        )

    def _write(
        self,
        oid: bytes,
        value: Value,
        *,
        layout: blob.Layout,
        buffers: Sequence[Any],
        kind: str,
        seq: int,
    ) -> Stored:
        name = f"{oid.hex()}.{seq}"
        if kind == MEMORY:
            entry = Stored(value, layout, MEMORY, "")
            mem = mmap.mmap(-1, layout.size)
            blob.write_memory(mem, layout, buffers)
            entry.mem = mem
            return entry
        if kind == SHM:
            assert self.shm_dir is not None
            path = os.path.join(self.shm_dir, name)
            spare = self.segments.take_spare(layout.size)
            if spare is not None:
                spare_path, mem = spare
                os.rename(spare_path, path)
                blob.write_memory(mem, layout, buffers)
                entry = Stored(value, layout, SHM, path)
                entry.wmem = mem
                self.reused += 1
                return entry
            try:
                if self.segments.reuse_file(path, layout.size):
                    self.reused += 1
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                else:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
                try:
                    blob.write_fd(fd, layout, buffers)
                finally:
                    os.close(fd)
                return Stored(value, layout, SHM, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                    raise
                # /dev/shm is full: keep it in this process instead
                return self._write(oid, value, layout=layout, buffers=buffers, kind=MEMORY, seq=seq)
        path = os.path.join(self._make_spill_dir(), name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            blob.write_fd(fd, layout, buffers)
        finally:
            os.close(fd)
        return Stored(value, layout, SPILLED, path)

    # --- spilling -----------------------------------------------------------------------

    def _spill_dir_ok(self) -> bool:
        try:
            self._make_spill_dir()
        except OSError:
            return False
        return True

    def _make_spill_dir(self) -> str:
        if self.spill_dir not in self._made:
            private_dir(self._roots[1])
            os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
            self._made.append(self.spill_dir)
        return self.spill_dir

    def _spill_some(self, need: int) -> bool:
        """Spill least recently used objects until ``need`` bytes are free (lock held);
        False when nothing could be spilled."""
        victims = sorted(
            (e for e in self.objects.values() if e.kind != SPILLED), key=lambda e: e.last_used
        )
        freed = 0
        for entry in victims:
            if freed >= need:
                break
            try:
                self._spill(entry)
            except OSError:
                return freed > 0
            freed += entry.size
        return freed > 0

    def _spill(self, entry: Stored) -> None:
        """Copy one object to its spill file and give its memory back (lock held)."""
        path = os.path.join(self._make_spill_dir(), os.path.basename(entry.path) or _name(entry))
        out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            if entry.kind == SHM:
                src = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _copy_file(src, out, entry.size)
                finally:
                    os.close(src)
            else:
                assert entry.mem is not None
                view = memoryview(entry.mem)
                done = 0
                while done < entry.size:
                    done += os.write(out, view[done : entry.size])
                view.release()
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(out)
        if entry.kind == SHM:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            close_writer(entry)
        self.used -= entry.size
        self._release(entry.mem, entry.size, counted=True)
        entry.mem = None
        entry.kind, entry.path = SPILLED, path
        self.spilled_bytes += entry.size
        SPILL_BYTES[0] += entry.size
        self.spill_count += 1

    def _release(self, mem: mmap.mmap | None, size: int, *, counted: bool) -> bool:
        """Unmap ``mem``; a mapping still in use here is kept, and counted while ``counted``."""
        if mem is None:
            return True
        try:
            mem.close()
        except BufferError:  # an array of this process still points into it
            if counted:
                self._zombies.append((mem, size))
                self.pinned += size
            return False
        return True

    def _reap(self) -> None:
        """Forget the mappings readers here have let go of (lock held)."""
        if not self._zombies:
            return
        keep = []
        for mem, size in self._zombies:
            try:
                mem.close()
            except BufferError:
                keep.append((mem, size))
            else:
                self.pinned -= size
        self._zombies = keep

    # --- reading --------------------------------------------------------------------------

    def get(self, oid: bytes) -> tuple[Value, list[memoryview]] | None:
        """The value and read-only views of its buffers, mapped here (no copy)."""
        with self._cond:
            entry = self.objects.get(oid)
            if entry is None:
                return None
            entry.last_used = time.monotonic()
            value = entry.value
            ro = memoryview(self._mapping(entry)).toreadonly()
            offsets = entry.layout.offsets
            return value, [ro[off : off + n] for off, n in zip(offsets, value.bufs, strict=True)]

    def _mapping(self, entry: Stored) -> mmap.mmap:
        if entry.mem is None:
            entry.mem = blob.map_file(entry.path)
            SPILL_BYTES[1] += entry.size if entry.kind == SPILLED else 0
        return entry.mem

    def read(self, oid: bytes, offset: int, length: int) -> tuple[int, memoryview] | None:
        """(total size, bytes [offset, offset+length) of the blob) for a reader elsewhere."""
        with self._cond:
            entry = self.objects.get(oid)
            if entry is None:
                return None
            entry.last_used = time.monotonic()
            size = entry.size
            end = min(size, max(offset, 0) + max(length, 0))
            return size, memoryview(self._mapping(entry))[max(offset, 0) : end].toreadonly()

    def locate(self, oid: bytes) -> Stored | None:
        """The record of ``oid`` for a reader on this host (its file may now be mapped)."""
        with self._cond:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.readers += 1
            return entry

    def unmapped(self, oid: bytes) -> None:
        """A reader elsewhere let go of its mapping of ``oid``'s file."""
        with self._cond:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.readers = max(0, entry.readers - 1)
                return
            drained = self.segments.reader_gone(oid)
            if drained is not None:
                keepable = self._in_memory() + drained.size <= self.capacity
                self.segments.recycle_or_unlink(drained, keepable)

    def __contains__(self, oid: object) -> bool:
        return oid in self.objects

    def __len__(self) -> int:
        return len(self.objects)

    # --- freeing ---------------------------------------------------------------------------

    def free(self, oid: bytes) -> Value | None:
        """Forget ``oid`` and give its memory and files back; returns its header."""
        with self._cond:
            entry = self.objects.pop(oid, None)
            if entry is None:
                return None
            if entry.kind == SPILLED:
                self.spilled_bytes -= entry.size
                self._release(entry.mem, entry.size, counted=False)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            else:
                self.used -= entry.size
                unmapped = self._release(entry.mem, entry.size, counted=True)
                if entry.kind == SHM:
                    keepable = unmapped and self._in_memory() + entry.size <= self.capacity
                    self.segments.recycle_or_unlink(entry, keepable)
            entry.mem = None
            self._cond.notify_all()
            return entry.value

    def close(self) -> None:
        """Remove this process's files (arrays still mapped here stay valid)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self.objects.clear()
            self.segments.close()
            self._cond.notify_all()
            self.used = self.spilled_bytes = 0
        for d in self._made:
            shutil.rmtree(d, ignore_errors=True)
        for r in self._roots:
            sweep_orphans(r)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)

    def sweep(self) -> None:
        """Remove the store directories, on this host, of processes that no longer run."""
        for r in self._roots:
            sweep_orphans(r)

    # --- reporting -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            self._reap()
            return {
                "capacity": self.capacity,
                "used": self.used,
                "pinned_by_readers": self.pinned,
                "spilled": self.spilled_bytes,
                "spill_count": self.spill_count,
                "reused_segments": self.reused,
                "objects": len(self.objects),
                "shm_dir": self.shm_dir,
                "spill_dir": self.spill_dir,
            }

    def rows(self) -> list[dict[str, Any]]:
        with self._cond:
            return [
                {"object_id": oid.hex(), "size": e.size, "where": e.kind, "path": e.path}
                for oid, e in self.objects.items()
            ]


def _name(entry: Stored) -> str:
    return f"mem.{id(entry)}.{time.monotonic_ns()}"


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _copy_file(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes between files in the kernel (copy_file_range, else sendfile)."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, done, done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(dst, done, os.SEEK_SET)
    while done < size:
        n = os.sendfile(dst, src, done, size - done)
        if n == 0:
            raise OSError(errno.EIO, "short copy while spilling")
        done += n
    if done < size:
        raise OSError(errno.EIO, "short copy while spilling")
