"""Sealed writes from threads that are not the connection's loop (``wire.direct``), racing
the loop's own writes on real loopback connections: frames never interleave, every seal
checks, each thread's frames arrive in its order, and a byte flipped on the way in a frame
written directly is refused like any other. On asyncio's loop and on uvloop.

The links fixtures of test_protocol (an authenticated pair of Connections on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import typing

import pytest

from runtime.core.common.exceptions import ProtocolError
from runtime.core.objects import serialization as ser
from runtime.core.wire import direct
from runtime.core.wire import protocol as p
from runtime.core.wire.integrity import BIG_WRITE
from runtime.core.wire.transport import Connection
from tests.core.test_protocol import (
    Dial,
    Listen,
    _authenticated_pair,
    _next,
    dial,
    links,
    listen,
    run_on_uvloop,
)

__all__ = ["dial", "links", "listen"]  # fixtures, used by name
pytestmark = pytest.mark.timeout(120)

THREADS = 8
FRAMES = 2_000
#: Payload sizes around the 64 KiB write at which the seal turns from BLAKE2b to AES-GMAC
#: (the frame's prefix and header come on top), and small ones; 0: a header-only frame.
SIZES = (0, 100, BIG_WRITE - 64, BIG_WRITE - 40, BIG_WRITE, BIG_WRITE + 24, 300, 2_000)


def _payload(rid: int, size: int) -> bytes:
    return (rid.to_bytes(4, "big") * (size // 4 + 1))[:size]


def _frame(rid: int) -> tuple[p.Message, list[bytes]]:
    size = SIZES[rid % len(SIZES)]
    if size == 0:
        return p.Reply(rid, value="header only"), []
    return p.ObjectReply(rid, value=p.Value(ser.KIND_BLOB, b"\x01", [size])), [_payload(rid, size)]


async def _opened(conn: Connection) -> None:
    """A connection carries no second descriptor until a thread asks to write on it: the
    first ask goes to the loop, which dups the socket (one pass later)."""
    assert conn.wfd == direct.NOT_YET
    assert not await asyncio.to_thread(direct.send_direct, conn, p.Reply(0, value="ask"))
    assert conn.wfd == direct.ASKED or conn.wfd >= 0  # (the loop may have run meanwhile)
    await asyncio.sleep(0)
    assert conn.wfd >= 0


def _while_the_loop_waits(fn: typing.Callable[..., bool], *args: typing.Any) -> bool:
    """``fn(*args)`` on another thread while the loop's thread waits for it (blocked: what
    the loop scheduled for the end of its pass stays scheduled)."""
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join(10)
    return out[0]


def _writer(conn: Connection, loop: asyncio.AbstractEventLoop, base: int, fell: list[int]) -> None:
    """FRAMES frames, direct when the connection lets it, else through the loop (waiting
    until the loop has sent it, so this thread's order holds, as the runtime's inbox does)."""
    for i in range(FRAMES):
        msg, bufs = _frame(base + i)
        if not direct.send_direct(conn, msg, bufs):
            fell[0] += 1
            sent = threading.Event()

            def send(msg: p.Message = msg, bufs: list[bytes] = bufs, sent: threading.Event = sent):
                conn.send(msg, bufs)
                sent.set()

            loop.call_soon_threadsafe(send)
            assert sent.wait(30)


async def test_direct_writes_from_many_threads_racing_the_loop_never_interleave(
    listen, dial
) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None
    await _opened(client.conn)
    loop = asyncio.get_running_loop()
    before = direct.WRITES[0]
    fell = [[0] for _ in range(THREADS)]
    threads = [
        threading.Thread(target=_writer, args=(client.conn, loop, (t + 1) << 20, fell[t]))
        for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    # The loop writes too, meanwhile (one frame per frame it reads): its batches (sealed at
    # the end of the iteration) and the direct writes share one sequence of seals.
    seen: dict[int, int] = {}
    ours = 0
    for _ in range((THREADS + 1) * FRAMES):
        if ours < FRAMES:
            msg, bufs = _frame(ours)
            client.conn.send(msg, bufs)
            ours += 1
        _, msg, raw = await _next(server)
        rid = msg.rid  # type: ignore[union-attr]
        who, n = rid >> 20, rid & ((1 << 20) - 1)
        assert n == seen.get(who, -1) + 1, f"writer {who}: frame {n} after {seen.get(who)}"
        seen[who] = n
        size = SIZES[rid % len(SIZES)]
        assert bytes(raw) == _payload(rid, size)
    for t in threads:
        t.join(30)
    assert seen == dict.fromkeys(range(THREADS + 1), FRAMES - 1)
    written = direct.WRITES[0] - before
    fallen = sum(f[0] for f in fell)
    assert written + fallen == THREADS * FRAMES
    # Both paths were taken, interleaved (under uvloop about a third of the frames go
    # direct; on asyncio's loop, whose transport buffers more, a few per cent).
    assert written > 0 and fallen > 0
    assert not client.conn.closed and not server.conn.closed  # type: ignore[union-attr]


async def test_a_direct_write_waits_for_what_the_loop_queued_and_the_loop_for_its_rest(
    listen, dial
) -> None:
    server, client = await _authenticated_pair(listen, dial)
    conn = client.conn
    assert conn is not None
    await _opened(conn)
    conn.send(p.Reply(1, value="first"))  # written at once; the loop's flush is scheduled
    conn.send(p.Reply(2, value="second"))  # batched until the flush: nothing may pass it
    assert not _while_the_loop_waits(direct.send_direct, conn, p.Reply(3, value="x"))
    await asyncio.sleep(0)  # the flush
    assert await asyncio.to_thread(direct.send_direct, conn, p.Reply(3, value="third"))
    # A write larger than the socket takes at once: the loop writes its rest before its own.
    big = _payload(4, 16 << 20)
    msg = p.ObjectReply(4, value=p.Value(ser.KIND_BLOB, b"\x01", [len(big)]))
    assert await asyncio.to_thread(direct.send_direct, conn, msg, [big])
    conn.send(p.Reply(5, value="after the rest"))
    got = [await _next(server) for _ in range(5)]
    assert [m.rid for _, m, _ in got] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert bytes(got[3][2]) == big
    fd = conn.wfd  # the second descriptor goes with the connection
    conn.abort()
    assert conn.wfd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


async def test_a_byte_flipped_in_a_directly_written_frame_is_refused(listen, dial) -> None:
    """A relay between the two ends forwards the handshake and a first direct frame as they
    are, then flips one byte of the second: its seal fails, it is never handed on, and the
    receiver closes the connection saying why."""
    listener = await listen()
    marker = b"FLIP-ME-PLEASE"
    writers: list[asyncio.StreamWriter] = []
    relays: list[asyncio.Task[None]] = []

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, flip: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(1 << 16):
                if flip and marker in data:
                    at = data.index(marker)
                    data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                dst.write(data)
                await dst.drain()
        dst.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relays.append(asyncio.current_task())  # type: ignore[arg-type]
        up_r, up_w = await asyncio.open_connection("127.0.0.1", listener.port)
        writers.extend((writer, up_w))
        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))

    relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        port = relay_server.sockets[0].getsockname()[1]

        class ViaRelay:
            pass

        via = ViaRelay()
        via.port = port  # type: ignore[attr-defined]
        client = await dial(via)
        assert client.conn is not None
        await asyncio.wait_for(client.conn.authenticated, 10)
        await _opened(client.conn)
        server = listener.end
        assert await asyncio.to_thread(direct.send_direct, client.conn, p.Reply(1, value="ok"))
        _, msg, _ = await _next(server)
        assert isinstance(msg, p.Reply) and msg.rid == 1
        bad = p.Reply(2, value=marker.decode())
        assert await asyncio.to_thread(direct.send_direct, client.conn, bad)
        exc = await server.wait_closed()
        assert isinstance(exc, ProtocolError) and "integrity check" in str(exc)
        assert server.messages.empty()  # the altered frame was never handed on
    finally:
        if client.conn is not None:
            client.conn.abort()
        for w in writers:
            w.close()
        if relays:
            await asyncio.wait(relays, timeout=10)
        relay_server.close()
        await relay_server.wait_closed()


@pytest.mark.parametrize(
    "scenario",
    [
        test_direct_writes_from_many_threads_racing_the_loop_never_interleave,
        test_a_direct_write_waits_for_what_the_loop_queued_and_the_loop_for_its_rest,
        test_a_byte_flipped_in_a_directly_written_frame_is_refused,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
def test_direct_writes_behave_the_same_on_uvloop(
    scenario: typing.Callable[[Listen, Dial], typing.Awaitable[None]],
) -> None:
    """The nodes run uvloop, whose transport writes differently from asyncio's."""
    run_on_uvloop(scenario)
