"""The one layout a stored object has everywhere: in shared memory, in a spill file, on the wire.

A blob is ``[magic: 8 bytes][header length: u64][msgpack Value][pad][buffer 0][pad][buffer 1]...``:
the :class:`~runtime.core.wire.protocol.Value` header (its pickle stream, buffer sizes and nested
refs) followed by the value's out-of-band buffers, each starting at a 64-byte boundary so
that a numpy array read from a mapping is aligned. Because the layout is flat, a blob is
written once (straight from the producer's arrays), mapped by readers as it is, copied to
disk as it is, and streamed to another host in byte ranges.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import msgspec

from ..common.exceptions import ObjectLostError
from ..wire.protocol import Value

MAGIC: Final = b"RTOBJ\x00\x01\x00"
ALIGN: Final = 64
_PREFIX = struct.Struct("<8sQ")
_encode = msgspec.msgpack.Encoder().encode
_decode_value = msgspec.msgpack.Decoder(Value).decode
_ZEROS: Final = bytes(ALIGN)
#: Buffers at least this big are copied into a mapping by several threads at once: one
#: core's memcpy does not saturate memory bandwidth (here 5 GB/s on one core, 10 on two).
PARALLEL_COPY_MIN: Final = 8 << 20
_COPY_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
_copiers: ThreadPoolExecutor | None = None
_copiers_lock = threading.Lock()


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Layout:
    """Where the parts of one blob lie: the encoded header and each buffer's offset."""

    __slots__ = ("header", "offsets", "size")

    def __init__(self, value: Value) -> None:
        self.header = _encode(value)
        pos = _align(_PREFIX.size + len(self.header))
        offsets = []
        for n in value.bufs:
            offsets.append(pos)
            pos = _align(pos + n)
        self.offsets = offsets
        self.size = max(pos, _PREFIX.size + len(self.header))

    def pieces(self, buffers: Sequence[Any]) -> list[tuple[int, memoryview]]:
        """(offset, bytes) pairs to write; the gaps are left as zeros (holes)."""
        out = [(0, memoryview(_PREFIX.pack(MAGIC, len(self.header)) + self.header))]
        for off, buf in zip(self.offsets, buffers, strict=True):
            view = memoryview(buf)
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
            out.append((off, view))
        return out


def write_fd(fd: int, layout: Layout, buffers: Sequence[Any]) -> None:
    """Write a blob into an open file (the kernel copies; no page faults in this process)."""
    os.ftruncate(fd, layout.size)
    for off, view in layout.pieces(buffers):
        done = 0
        n = view.nbytes
        while done < n:
            done += os.pwrite(fd, view[done:], off + done)


def write_memory(target: mmap.mmap, layout: Layout, buffers: Sequence[Any]) -> None:
    """Write a blob into a writable mapping of at least ``layout.size`` bytes."""
    for off, view in layout.pieces(buffers):
        if view.nbytes < PARALLEL_COPY_MIN or not _copy_parallel(target, off, view):
            target[off : off + view.nbytes] = view


def _copy_parallel(target: mmap.mmap, off: int, view: memoryview) -> bool:
    """Copy ``view`` into ``target`` at ``off`` in slices, on this thread and the copier
    threads at once (numpy's copy releases the GIL). False, having copied nothing, when
    there is one core or numpy is not loaded (a buffer this big is nearly always an array,
    so numpy is there; it is not imported for this)."""
    np = sys.modules.get("numpy")
    if np is None or _COPY_THREADS < 2:
        return False
    n = view.nbytes
    dst = np.frombuffer(target, dtype=np.uint8, count=n, offset=off)
    src = np.frombuffer(view, dtype=np.uint8)
    step = -(-n // _COPY_THREADS)
    step = (step + 4095) & ~4095  # whole pages per thread
    pool = _copier_pool()
    futures: list[Future[None]] = []
    try:
        for start in range(step, n, step):
            end = min(n, start + step)
            futures.append(pool.submit(np.copyto, dst[start:end], src[start:end]))
        np.copyto(dst[:step], src[:step])
    finally:
        for f in futures:
            f.result()  # the slices must be done (and released) before the mapping is used
        del dst, src
    return True


def _copier_pool() -> ThreadPoolExecutor:
    global _copiers
    with _copiers_lock:
        if _copiers is None:
            _copiers = ThreadPoolExecutor(_COPY_THREADS - 1, thread_name_prefix="runtime-copy")
        return _copiers


def parse(view: memoryview, where: str) -> tuple[Value, list[memoryview]]:
    """The value and read-only views of its buffers, from a whole blob (no copy of buffers)."""
    if view.nbytes < _PREFIX.size:
        raise ObjectLostError(f"the stored object at {where} is truncated")
    magic, header_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC or _PREFIX.size + header_len > view.nbytes:
        raise ObjectLostError(f"{where} does not hold a stored object (bad header)")
    value = _decode_value(view[_PREFIX.size : _PREFIX.size + header_len])
    pos = _align(_PREFIX.size + header_len)
    ro = view.toreadonly()
    bufs = []
    for n in value.bufs:
        if pos + n > view.nbytes:
            raise ObjectLostError(f"the stored object at {where} is truncated")
        bufs.append(ro[pos : pos + n])
        pos = _align(pos + n)
    return value, bufs


def peek(view: memoryview) -> Value | None:
    """The value header of the blob that ``view`` begins, or None when ``view`` does not hold
    all of it (raises ObjectLostError when it is no blob)."""
    if view.nbytes < _PREFIX.size:
        return None
    magic, header_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise ObjectLostError("a streamed object does not begin as a stored object (bad header)")
    if _PREFIX.size + header_len > view.nbytes:
        return None
    return _decode_value(view[_PREFIX.size : _PREFIX.size + header_len])


def map_file(path: str) -> mmap.mmap:
    """Map a blob file copy-on-write: the pages are the writer's and nothing is copied, but a
    write through code that ignores the read-only views (torch over a numpy batch) gets this
    process private copies of the pages it touches instead of a segmentation fault."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ObjectLostError(f"the stored object at {path} is empty")
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def read_file(path: str) -> tuple[Value, list[memoryview]]:
    """Map the blob file at ``path`` and parse it (raises FileNotFoundError if it is gone)."""
    return parse(memoryview(map_file(path)), path)
