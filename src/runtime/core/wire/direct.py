"""Sealed writes from a thread that is not the connection's loop: the direct path of a call.

A sync actor call used to cross threads four times on top of the two process wake-ups of a
loopback round trip: the caller's thread handed the call to its loop, the node's loop handed
it to the actor's thread, the actor's thread handed the answer back to the node's loop, and
the caller's loop handed the answer to the caller's thread. :func:`send_direct` lets the
caller's thread write its call frame, and the actor's thread its answer, without the first
and third of those: the thread seals the frame and writes it on ``Connection.wfd`` (a dup of
the connection's socket) itself.

The guarantees of the loop's writes hold: under the connection's ``wlock`` (which every
sealed write of the loop takes too) the frame takes its seal's sequence number and is
written, so writes never interleave and their seals' numbers follow the order of their bytes;
it is written only when nothing is queued before it (no batch of the loop's waiting for its
seal, nothing in the transport's buffers, no unwritten rest of another direct write), so it
overtakes nothing. What the socket did not take at once (``rest``) is written by the loop
before anything else it writes. Under TLS (no seals, the transport encrypts) and on a
connection without a socket of its own there is no direct path: ``wfd`` is -1.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Sequence
from typing import Final

from . import protocol as p
from .integrity import BIG_WRITE
from .transport import Buffer, Connection

_PREFIX: Final = struct.Struct(">II")
#: Writes made by this path in this process (observability, tests).
WRITES = [0]


def send_direct(
    conn: Connection,
    msg: p._Msg,
    buffers: Sequence[Buffer] = (),
    admit: Callable[[], bool] | None = None,
) -> bool:
    """Seal and write ``msg`` (and its raw buffers) from this thread when ``conn`` has nothing
    queued for writing: True when it is written (or its unwritten rest handed to the loop,
    which writes it before anything else); False when the caller must hand it to the loop.
    ``admit`` runs under the connection's ``wlock`` once the connection may be written: its
    False also leaves the message to the loop (the caller's path records its call there)."""
    if conn.wfd < 0:
        return False
    header = p.encode(msg)
    size = 4 + len(header)
    if buffers:
        size += sum(memoryview(b).nbytes for b in buffers)
    head = _PREFIX.pack(size, len(header)) + header
    with conn.wlock:
        transport, tx = conn._transport, conn._tx
        if (
            conn.wfd < 0
            or conn._batch
            or conn.rest is not None
            or transport is None
            or tx is None
            or transport.get_write_buffer_size()
            or (admit is not None and not admit())
        ):
            return False
        parts: list[Buffer]
        if buffers or 4 + size >= BIG_WRITE:
            parts = [head, *buffers, tx.seal([head, *buffers], 4 + size)]
        else:
            parts = [tx.sealed(head)]
        WRITES[0] += 1
        fd = conn.wfd
        try:
            written = os.write(fd, parts[0]) if len(parts) == 1 else os.writev(fd, parts)
        except OSError:  # full (EAGAIN), or the peer is gone: the loop's write meets it
            written = 0
        if written < sum(memoryview(b).nbytes for b in parts):
            conn.rest = _tail(parts, written)
            with contextlib.suppress(RuntimeError):  # (a closed loop: the connection is gone)
                conn._loop.call_soon_threadsafe(conn._flush)
    return True


def _tail(parts: list[Buffer], written: int) -> list[Buffer]:
    """What is left of ``parts`` after the first ``written`` bytes."""
    out: list[Buffer] = []
    for part in parts:
        view = memoryview(part)
        if written >= view.nbytes:
            written -= view.nbytes
            continue
        out.append(view[written:] if written else part)
        written = 0
    return out


__all__ = ["WRITES", "send_direct"]
