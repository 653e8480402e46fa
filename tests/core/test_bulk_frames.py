"""Bulk transfers on the wire and in the store: a large frame whose payload has a home (a
chunk of an object being fetched) is read straight into it and handed on only after its
seal checks; a byte altered on the way is refused; a landing in the store is either the
stored object, byte for byte, or given back with nothing left behind.

Real TCP connections on loopback (the links of test_protocol) and a real object store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.core.common.exceptions import ProtocolError
from runtime.core.objects import blob
from runtime.core.objects import serialization as ser
from runtime.core.objects.landing import reserve
from runtime.core.objects.store import ObjectStore
from runtime.core.wire import protocol as p
from runtime.core.wire.integrity import BIG_WRITE, SEAL_MARK_BIG, SEAL_SIZE, Seals
from runtime.core.wire.transport import Connection
from tests.core.test_protocol import (  # the links fixtures: real connections on loopback
    End,
    Listener,
    _authenticated_pair,
    _next,
    dial,
    links,
    listen,
)

__all__ = ["dial", "links", "listen"]  # fixtures, used by name
pytestmark = pytest.mark.timeout(60)
MB = 1 << 20


def _chunk_reply(rid: int, size: int) -> p.ObjectReply:
    return p.ObjectReply(rid, value=p.Value(ser.KIND_BLOB, b"\x01", [size]))


def _homes(conn: Connection, homes: dict[int, bytearray]) -> list[int]:
    """Give ``conn`` a sink with a home for each rid of ``homes``; the sizes it was asked."""
    asked: list[int] = []

    def sink(_: Connection, msg: p.Message, size: int) -> memoryview | None:
        asked.append(size)
        if isinstance(msg, p.ObjectReply) and msg.rid in homes:
            return memoryview(homes[msg.rid])
        return None

    conn.sink = sink
    return asked


async def test_a_large_frame_with_a_home_is_read_into_it_and_others_get_a_buffer(
    listen, dial
) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert server.conn is not None and client.conn is not None
    payload = os.urandom(3 * MB + 5)
    home = bytearray(len(payload))
    asked = _homes(server.conn, {7: home})
    client.conn.send(_chunk_reply(7, len(payload)), [payload])
    client.conn.send(_chunk_reply(8, len(payload)), [payload])  # no home for this one
    _, msg, raw = await _next(server)
    assert isinstance(msg, p.ObjectReply) and msg.rid == 7
    assert raw.obj is home and raw.readonly  # handed on as a read-only view of its home
    assert bytes(home) == payload
    _, msg, raw = await _next(server)
    assert isinstance(msg, p.ObjectReply) and msg.rid == 8
    assert raw.obj is not home and bytes(raw) == payload
    assert asked == [len(payload)] * 2
    # Small frames never ask the sink; the link goes on as before.
    client.conn.send(p.Reply(9, value="small"))
    _, msg, _ = await _next(server)
    assert isinstance(msg, p.Reply) and msg.value == "small" and len(asked) == 2


async def test_a_sunk_frame_is_handed_on_only_after_its_seal_checks(listen, dial) -> None:
    """The frame and its seal arrive apart (the seal written last, later): nothing is handed
    on before the seal is in."""
    server, client = await _authenticated_pair(listen, dial)
    assert server.conn is not None and client.conn is not None
    assert client.conn._transport is not None and client.conn._tx is not None
    payload = os.urandom(2 * MB)
    home = bytearray(len(payload))
    _homes(server.conn, {3: home})
    header = p.encode(_chunk_reply(3, len(payload)))
    frame = (
        (4 + len(header) + len(payload)).to_bytes(4, "big")
        + len(header).to_bytes(4, "big")
        + header
        + payload
    )
    seal = client.conn._tx.seal((frame,))
    assert int.from_bytes(seal[4:8], "big") == SEAL_MARK_BIG and len(frame) >= BIG_WRITE
    client.conn._transport.write(frame)
    with pytest.raises(TimeoutError):  # all of it came, into its home, but no seal yet
        async with asyncio.timeout(0.5):
            await server.messages.get()
    assert bytes(home) == payload
    client.conn._transport.write(seal)
    _, msg, raw = await _next(server)
    assert isinstance(msg, p.ObjectReply) and msg.rid == 3 and raw.obj is home


@contextlib.asynccontextmanager
async def _flipping_relay(target: int, at: int) -> AsyncIterator[int]:
    """A TCP relay to port ``target`` that flips the byte at offset ``at`` of what the dialer
    sends (as an on-path attacker without the token could); yields its port."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flip: int | None
    ) -> None:
        seen = 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                if flip is not None and seen <= flip < seen + len(data):
                    data = bytearray(data)
                    data[flip - seen] ^= 0x01
                seen += len(data)
                writer.write(bytes(data))
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        writers.extend((writer, up_writer))
        for task in (pump(reader, up_writer, at), pump(up_reader, writer, None)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


async def test_a_byte_altered_in_a_large_sunk_frame_is_refused_and_never_handed_on(
    listen, dial
) -> None:
    listener: Listener = await listen()
    payload = os.urandom(3 * MB)
    home = bytearray(len(payload))
    async with _flipping_relay(listener.port, at=2 * MB) as relay_port:  # deep in the payload
        client: End = await dial(Listener(listener.server, relay_port, listener.end))
        assert client.conn is not None
        async with asyncio.timeout(10):
            await client.conn.authenticated
            server = listener.end
            assert server.conn is not None
            await server.conn.authenticated
        _homes(server.conn, {5: home})
        client.conn.send(_chunk_reply(5, len(payload)), [payload])
        exc = await server.wait_closed()
    assert isinstance(exc, ProtocolError) and "failed its integrity check" in str(exc)
    assert server.messages.empty()  # the chunk was never handed on...
    assert bytes(home) != payload  # ...though its altered bytes had come into its home


def test_big_seals_catch_a_flipped_bit_a_moved_write_and_a_replay() -> None:
    key = os.urandom(32)
    tx, rx = Seals(key), Seals(key)
    data = bytearray(os.urandom(BIG_WRITE * 3))
    seals = [tx.seal([data[:100], data[100:]]) for _ in range(3)]  # writes 0, 1, 2
    mark = SEAL_MARK_BIG
    assert all(len(s) == SEAL_SIZE for s in seals)
    assert rx.check([data], len(data), mark, seals[0][8:])  # parts cut anywhere: same bytes
    data[-1] ^= 0x80
    assert not rx.check([data], len(data), mark, seals[1][8:])
    data[-1] ^= 0x80
    assert not rx.check([data], len(data), mark, seals[1][8:])  # write 1's seal at write 2
    assert not Seals(key).check([data], len(data), mark, seals[2][8:])  # 2 replayed as 0
    assert not Seals(os.urandom(32)).check([data], len(data), mark, seals[0][8:])


# --- landing: the store's side ------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore("landing-test", str(tmp_path), capacity=256 * MB)
    if s.shm_dir is None:
        pytest.skip("no usable /dev/shm here")
    try:
        yield s
    finally:
        s.close()


def _blob_of(arr: np.ndarray) -> bytes:
    value, bufs = ser.serialize(arr, copy=False)
    layout = blob.Layout(value)
    out = bytearray(layout.size)
    for offset, view in layout.pieces(bufs):
        out[offset : offset + view.nbytes] = view
    return bytes(out)


async def test_a_landing_filled_and_committed_is_the_stored_object(store: ObjectStore) -> None:
    arr = np.random.default_rng(1).integers(0, 1 << 30, 5 * MB // 8 + 3, dtype=np.int64)
    data = _blob_of(arr)
    landing = reserve(store, b"o" * 16, len(data), "a test object")
    assert landing is not None and store.used == len(data)
    landing.start(asyncio.get_running_loop())
    await landing.ready(len(data))
    landing.view[:] = data
    landing.commit()
    value, bufs = store.get(b"o" * 16) or (None, [])
    assert value is not None
    got = ser.deserialize(value, bufs)
    assert np.array_equal(got, arr) and not got.flags.writeable
    assert store.used == len(data) and store.stats()["objects"] == 1
    del got, bufs
    store.free(b"o" * 16)
    assert store.used == 0


async def test_a_landing_given_back_midway_leaves_nothing(store: ObjectStore) -> None:
    size = 48 * MB
    landing = reserve(store, b"c" * 16, size, "a test object")
    assert landing is not None and Path(landing.path).exists()  # noqa: ASYNC240 (tmpfs)
    landing.start(asyncio.get_running_loop())
    await landing.ready(8 * MB)
    landing.view[: 8 * MB] = b"\x07" * (8 * MB)  # a few chunks had come when it was cut
    landing.abort()
    landing.abort()  # (twice is harmless)
    assert store.used == 0 and b"c" * 16 not in store
    assert not Path(landing.path).exists()  # noqa: ASYNC240 (tmpfs)
    assert store.shm_dir is not None and not any(
        name.startswith(("c" * 16).encode().hex()) for name in os.listdir(store.shm_dir)
    )


def test_no_landing_when_the_store_has_no_room_in_memory(tmp_path: Path) -> None:
    os.environ["RUNTIME_OBJECT_SPILLING"] = "0"
    try:
        small = ObjectStore("landing-full", str(tmp_path), capacity=4 * MB)
    finally:
        del os.environ["RUNTIME_OBJECT_SPILLING"]
    try:
        assert reserve(small, b"x" * 16, 8 * MB, "a test object") is None
        assert small.used == 0
    finally:
        small.close()
