"""Sealed writes from a thread that is not the connection's loop: the direct path of a call.

A sync actor call used to cross threads four times on top of the two process wake-ups of a
loopback round trip: the caller's thread handed the call to its loop, the node's loop handed
it to the actor's thread, the actor's thread handed the answer back to the node's loop, and
the caller's loop handed the answer to the caller's thread. :func:`send_direct` lets the
caller's thread write its call frame, and the actor's thread its answer, without the first
and third of those: the thread seals the frame and writes it on ``Connection.wfd`` (a dup of
the connection's socket, made by the loop at the first ask) itself.

The guarantees of the loop's writes hold: under the connection's ``wlock`` (which every
sealed write of the loop takes too) the frame takes its seal's sequence number and is
written, so writes never interleave and their seals' numbers follow the order of their bytes;
it is written only when nothing is queued before it (no batch of the loop's waiting for its
seal, nothing in the transport's buffers, no unwritten rest of another direct write), so it
overtakes nothing. What the socket did not take at once (``rest``) is written by the loop
before anything else it writes. Under TLS (no seals, the transport encrypts) and on a
connection without a socket of its own there is no direct path (``wfd`` is ``NEVER``).
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
#: ``Connection.wfd`` before it is a descriptor: not asked for yet, asked for (the loop opens
#: it), never (TLS, or no socket of its own).
NOT_YET, ASKED, NEVER = -1, -2, -3


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
        if conn.wfd == NOT_YET:
            _ask(conn)
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


def _ask(conn: Connection) -> None:
    """The first direct write to ``conn``: the loop dups its socket (here, another thread
    could dup a descriptor the loop has just closed, and its number reused)."""
    with conn.wlock:
        if conn.wfd != NOT_YET or conn.closed:
            return
        conn.wfd = ASKED
    try:
        conn._loop.call_soon_threadsafe(open_direct, conn)
    except RuntimeError:  # the loop is closed: the connection goes with it
        conn.wfd = NEVER


def open_direct(conn: Connection) -> None:
    """Let other threads write on ``conn`` (loop): a dup of its socket, closed with it. Only
    sealed connections (not TLS) with a socket of their own; a connection carries a second
    descriptor only once a thread has asked to write on it."""
    transport = conn._transport
    with conn.wlock:
        if conn.wfd >= 0 or conn.closed:
            return
        sock = None
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        conn.wfd = os.dup(fd) if fd >= 0 and conn._tx is not None else NEVER


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


__all__ = ["ASKED", "NEVER", "NOT_YET", "WRITES", "open_direct", "send_direct"]
