"""The wire protocol and the framed, authenticated transport, in one process.

The first half feeds ``encode``/``decode`` directly; the second runs two
:class:`Connection` ends over loopback TCP on the test's (default asyncio) event loop,
and replays the main scenarios on uvloop, which the nodes run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import struct
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
import uvloop

from runtime.core.common.exceptions import AuthenticationError, ProtocolError
from runtime.core.wire import protocol as p
from runtime.core.wire import transport as _transport
from runtime.core.wire.integrity import Seals, derive_keys
from runtime.core.wire.transport import Connection

pytestmark = pytest.mark.timeout(30)

PREFIX = struct.Struct(">II")
TOKEN = b"t" * 32


def _value(n_bufs: int = 0) -> p.Value:
    return p.Value(1, b"\x80\x05N.", [8] * n_bufs, [(b"oid", "owner", "127.0.0.1:1")])


def _node(node_id: str = "n1") -> p.NodeInfo:
    return p.NodeInfo(node_id, "127.0.0.1:7000", False, {"CPU": 2.0}, {"CPU": 1.5}, 4242)


def _spec() -> p.ActorSpec:
    return p.ActorSpec(
        actor_id=b"a" * 16,
        class_name="Counter",
        cls_id=b"c" * 16,
        cls_blob=b"blob",
        args=_value(),
        resources={"CPU": 1.0},
        owner_id="driver",
        name="counter",
        namespace="ns",
        strategy={"node_id": "n1", "soft": True},
    )


#: One example of every message of the union, with its optional fields set.
EXAMPLES: list[p._Msg] = [
    p.Hello(p.PROTOCOL_VERSION, "peer", os.urandom(16)),
    p.Challenge("server", os.urandom(16), os.urandom(32)),
    p.Proof(os.urandom(32)),
    p.Welcome(),
    p.Refused("wrong cluster token"),
    p.Reply(7, error="boom", error_type="ValueError", value={"a": [1, 2.5, "x", None]}),
    p.RegisterNode(1, _node()),
    p.ClusterView([_node("n1"), _node("n2")]),
    p.ClusterView([_node("n3")], ["n1"], version=9, base=7),
    p.ClusterView([], [], version=9, base=-2, loads=[p.NodeLoad("n3", {"CPU": 0.5})]),
    p.ViewResync(7),
    p.ReportResources("n1", {"CPU": 0.5, "custom": 2.0}),
    p.CreateActor(3, _spec(), get_if_exists=True),
    p.CreateActors(3, [_spec(), _spec()], {b"c" * 12: b"blob"}, [False, True]),
    p.ActorsPlaced(
        [p.ActorLocation(b"a" * 16, "n1", "127.0.0.1:1", "ALIVE", "C", None, "", 1, False)]
    ),
    p.GetActor(4, "counter", "ns", actor_id=b"a" * 16, wait=True),
    p.KillActor(5, b"a" * 16, no_restart=False),
    p.ActorGone(b"a" * 16, "killed"),
    p.ListState(6, "actors"),
    p.KvOp(8, "put", "ns", "key", b"value", overwrite=False),
    p.StopCluster(9),
    p.DrainNode(9, "node-1"),
    p.Shutdown("bye"),
    p.Shutdown("evicted: silent", evicted=True),
    p.Heartbeat("node-1", 7),
    p.SubmitTask(b"t" * 16, b"f" * 16, "add", b"blob", _value(2), 1, {"CPU": 1.0}, "d", "h:1"),
    p.CallActor(b"t" * 16, b"a" * 16, "incr", _value(), 2, "driver", "127.0.0.1:1"),
    p.TaskDone(b"t" * 16, [_value(1), p.Located("n2", "127.0.0.1:7001", 1 << 20)]),
    p.TaskDone(b"t" * 16, error=_value()),
    p.CallBatch(
        [p.CallActor(b"t" * 16, b"a" * 16, "incr", _value(i), 1, "d", "h:1") for i in (1, 2)]
    ),
    p.SubmitBatch([p.SubmitTask(b"t" * 16, b"f" * 16, "add", None, _value(), 1, {}, "d", "h:1")]),
    p.DoneBatch([p.TaskDone(b"t" * 16, [_value(1)]), p.TaskDone(b"u" * 16, error=_value())]),
    p.StreamItem(b"t" * 16, 1, _value(1)),
    p.StreamItem(b"t" * 16, 2, p.Located("n2", "127.0.0.1:7001", 1 << 20)),
    p.StreamAck(b"t" * 16, 2),
    p.LendResources(b"t" * 16, lent=True),
    p.CancelTask(b"t" * 16, force=True, recursive=False),
    p.LogLines("n1", [("f pid=1", "hello", False), ("A pid=2", "oops", True)]),
    p.CreatePlacementGroup(
        14, p.PlacementGroupSpec(b"g" * 16, [{"CPU": 1.0}], "PACK", "driver", "pg", "ns")
    ),
    p.WaitPlacementGroup(15, b"g" * 16),
    p.RemovePlacementGroup(16, b"g" * 16),
    p.ReserveBundles(17, b"g" * 16, [(0, {"CPU": 1.0})]),
    p.ReleaseBundles(18, b"g" * 16, [0]),
    p.GetObject(10, b"o" * 20),
    p.FetchObject(11, b"o" * 20),
    p.ObjectReply(12, value=p.Located("n1", "127.0.0.1:7000", 10)),
    p.ObjectReply(13, error=_value()),
    p.UpdateRefs([(b"o" * 20, 1), (b"o" * 20, -1)]),
    p.FreeObjects([b"o" * 20, b"p" * 20]),
    p.ListObjects(13),
    p.ListTasks(14),
    p.ReadMetrics(15),
    p.Inspect(15, "stack", {"tail": 3}),
    p.Unmapped([b"o" * 20]),
    p.ObjectCopied(b"o" * 20, p.Located("n2", "10.0.0.2:7000", 10, "h2/boot", "/dev/shm/y")),
    p.GetObject(17, b"o" * 20, host="h2/boot"),
    p.FetchObject(14, b"o" * 20, 8 << 20, 8 << 20),
    p.FetchObject(15, b"o" * 20, same_host=True),
    p.ObjectReply(16, value=p.Located("n1", "127.0.0.1:7000", 10, "host/boot", "/dev/shm/x")),
]


def _name(msg: object) -> str:
    return type(msg).__name__


# --- encode / decode ---------------------------------------------------------------------


def test_the_examples_cover_every_message_of_the_union() -> None:
    assert {type(m) for m in EXAMPLES} == set(typing.get_args(p.Message))


@pytest.mark.parametrize("msg", EXAMPLES, ids=_name)
def test_every_message_survives_a_round_trip(msg: p._Msg) -> None:
    decoded = p.decode(p.encode(msg))
    assert type(decoded) is type(msg)
    assert decoded == msg


@pytest.mark.parametrize("msg", EXAMPLES, ids=_name)
def test_only_handshake_messages_decode_before_authentication(msg: p._Msg) -> None:
    if isinstance(msg, p.HandshakeMessage):
        assert p.decode(p.encode(msg), handshake=True) == msg
    else:
        with pytest.raises(ProtocolError):
            p.decode(p.encode(msg), handshake=True)


def test_decode_accepts_a_memoryview() -> None:
    msg = p.Refused("no")
    assert p.decode(memoryview(p.encode(msg))) == msg


def test_an_unknown_tag_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="malformed message"):
        p.decode(msgspec.msgpack.encode([99, "x"]))


def test_an_extra_field_is_a_protocol_error() -> None:
    data = msgspec.msgpack.encode([*msgspec.msgpack.decode(p.encode(p.Refused("no"))), "extra"])
    with pytest.raises(ProtocolError):
        p.decode(data)


def test_an_extra_field_in_a_nested_struct_is_a_protocol_error() -> None:
    fields = msgspec.msgpack.decode(p.encode(p.ReportResources("n1", {"CPU": 1.0})))
    fields[2]["extra"] = 1.0  # an extra resource is fine: the dict is open
    assert p.decode(msgspec.msgpack.encode(fields)) == p.ReportResources(
        "n1", {"CPU": 1.0, "extra": 1.0}
    )
    fields = msgspec.msgpack.decode(p.encode(p.RegisterNode(1, _node())))
    fields[2].append("extra")  # but NodeInfo has a fixed set of fields
    with pytest.raises(ProtocolError):
        p.decode(msgspec.msgpack.encode(fields))


def test_a_missing_field_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        p.decode(msgspec.msgpack.encode([1, p.PROTOCOL_VERSION, "peer"]))  # Hello without nonce


@pytest.mark.parametrize(
    "fields",
    [
        [1, "1", "peer", b"nonce"],  # Hello.version as a string
        [3, "not bytes"],  # Proof.mac as a string
        [22, "n1", {"CPU": "lots"}],  # ReportResources with a text amount
        [53, [[b"oid", "one"]]],  # UpdateRefs with a text delta
    ],
    ids=["hello-version", "proof-mac", "resource-amount", "ref-delta"],
)
def test_a_field_of_the_wrong_type_is_a_protocol_error(fields: list[object]) -> None:
    with pytest.raises(ProtocolError):
        p.decode(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\xff" * 16,
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x92\x04",  # truncated
        p.encode(p.Welcome()) + b"\x00",  # trailing bytes
        os.urandom(64),
    ],
    ids=["empty", "reserved-byte", "ff", "http", "truncated", "trailing", "random"],
)
def test_garbage_bytes_are_a_protocol_error(data: bytes) -> None:
    for handshake in (False, True):
        with pytest.raises(ProtocolError):
            p.decode(data, handshake=handshake)


def test_a_deeply_nested_value_is_a_protocol_error() -> None:
    header = p.encode(p.Reply(1))
    nested = header[:-1] + b"\x91" * 100_000 + b"\xc0"  # Reply.value = [[[[...]]]]
    with pytest.raises(ProtocolError):
        p.decode(nested)


# --- transport --------------------------------------------------------------------------


@dataclass
class End:
    """What one side of a link saw: its messages and how it closed."""

    name: str
    token: bytes = TOKEN
    max_frame: int = p.MAX_FRAME_SIZE
    messages: asyncio.Queue[tuple[Connection, p.Message, memoryview]] = field(
        default_factory=asyncio.Queue
    )
    closed: asyncio.Future[BaseException | None] | None = None
    conn: Connection | None = None

    def make(self, *, dialer: bool) -> Connection:
        self.closed = asyncio.get_running_loop().create_future()
        self.conn = Connection(
            local_id=self.name,
            token=self.token,
            on_message=self._on_message,
            on_close=self._on_close,
            dialer=dialer,
            max_frame=self.max_frame,
        )
        return self.conn

    def _on_message(self, conn: Connection, msg: p.Message, raw: memoryview) -> None:
        self.messages.put_nowait((conn, msg, raw))

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        assert conn is self.conn
        assert self.closed is not None
        assert not self.closed.done(), "on_close ran twice"
        self.closed.set_result(exc)

    async def wait_closed(self) -> BaseException | None:
        assert self.closed is not None
        async with asyncio.timeout(10):
            return await asyncio.shield(self.closed)


@dataclass
class Listener:
    server: asyncio.Server
    port: int
    end: End


Listen = typing.Callable[..., typing.Awaitable[Listener]]
Dial = typing.Callable[..., typing.Awaitable[End]]


@contextlib.asynccontextmanager
async def _links() -> AsyncIterator[tuple[Listen, Dial]]:
    """Listen (one accepted connection per server) and dial; close everything after."""
    listeners: list[Listener] = []
    dialed: list[End] = []

    async def listen(**kwargs: typing.Any) -> Listener:
        end = End("server", **kwargs)
        server = await asyncio.get_running_loop().create_server(
            lambda: end.make(dialer=False), "127.0.0.1", 0
        )
        listener = Listener(server, server.sockets[0].getsockname()[1], end)
        listeners.append(listener)
        return listener

    async def dial(listener: Listener, **kwargs: typing.Any) -> End:
        end = End("client", **kwargs)
        await asyncio.get_running_loop().create_connection(
            lambda: end.make(dialer=True), "127.0.0.1", listener.port
        )
        dialed.append(end)
        return end

    try:
        yield listen, dial
    finally:
        for end in [*dialed, *(listener.end for listener in listeners)]:
            if end.conn is not None:
                end.conn.abort()
        for listener in listeners:
            listener.server.close()
            await listener.server.wait_closed()


@pytest.fixture
async def links() -> AsyncIterator[tuple[Listen, Dial]]:
    async with _links() as pair:
        yield pair


@pytest.fixture
def listen(links: tuple[Listen, Dial]) -> Listen:
    return links[0]


@pytest.fixture
def dial(links: tuple[Listen, Dial]) -> Dial:
    return links[1]


async def _authenticated_pair(
    listen: Listen,
    dial: Dial,
    **server_kwargs: typing.Any,
) -> tuple[End, End]:
    listener = await listen(**server_kwargs)
    client = await dial(listener)
    assert client.conn is not None
    async with asyncio.timeout(10):
        await client.conn.authenticated
        assert listener.end.conn is not None  # it sent the Welcome
        await listener.end.conn.authenticated
    return listener.end, client


async def _next(end: End) -> tuple[Connection, p.Message, memoryview]:
    async with asyncio.timeout(10):
        return await end.messages.get()


async def test_a_handshake_delivers_messages_both_ways(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert server.conn is not None and client.conn is not None
    assert client.conn.peer_id == "server"
    assert server.conn.peer_id == "client"

    client.conn.send(p.GetObject(1, b"oid"))
    conn, msg, raw = await _next(server)
    assert conn is server.conn
    assert msg == p.GetObject(1, b"oid")
    assert isinstance(raw, memoryview)
    assert raw.nbytes == 0

    server.conn.send(p.ObjectReply(1, value=p.Value(1, b"data", [3])), [b"abc"])
    conn, msg, raw = await _next(client)
    assert conn is client.conn
    assert msg == p.ObjectReply(1, value=p.Value(1, b"data", [3]))
    assert bytes(raw) == b"abc"


async def test_a_burst_of_messages_arrives_complete_and_in_order(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None
    for i in range(2000):
        client.conn.send(p.Reply(i, value=i), [i.to_bytes(4, "big")] if i % 3 == 0 else ())
    for i in range(2000):
        _, msg, raw = await _next(server)
        assert msg == p.Reply(i, value=i)
        assert bytes(raw) == (i.to_bytes(4, "big") if i % 3 == 0 else b"")


async def test_big_frames_arrive_intact_between_small_ones(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None
    first = os.urandom(5 * 1024 * 1024)
    second = memoryview(bytearray(os.urandom(3 * 1024 * 1024 + 7)))
    client.conn.send(p.Reply(1))
    client.conn.send(p.ObjectReply(2, value=p.Value(1, b"", [len(first)])), [first])
    client.conn.send(p.Reply(3))
    client.conn.send(p.ObjectReply(4, value=p.Value(1, b"", [2, second.nbytes])), [b"xy", second])
    client.conn.send(p.Reply(5))
    await client.conn.drain()

    assert (await _next(server))[1] == p.Reply(1)
    _, msg, raw = await _next(server)
    assert msg == p.ObjectReply(2, value=p.Value(1, b"", [len(first)]))
    assert raw.readonly
    assert raw == first
    assert (await _next(server))[1] == p.Reply(3)
    _, msg, raw = await _next(server)
    assert isinstance(msg, p.ObjectReply)
    bufs, end = _transport.split_buffers(raw, [2, second.nbytes], 0)
    assert end == raw.nbytes
    assert bytes(bufs[0]) == b"xy"
    assert bufs[1] == second
    assert (await _next(server))[1] == p.Reply(5)


async def test_a_frame_of_exactly_the_limit_is_accepted(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial, max_frame=1024)
    assert client.conn is not None
    header = p.encode(p.Reply(1))
    payload = b"x" * (1024 - 4 - len(header))
    client.conn.send(p.Reply(1), [payload])
    _, msg, raw = await _next(server)
    assert msg == p.Reply(1)
    assert bytes(raw) == payload


async def test_an_oversized_frame_after_the_handshake_closes_the_connection(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial, max_frame=1024)
    assert client.conn is not None
    client.conn.send(p.Reply(1), [b"x" * 1024])
    exc = await server.wait_closed()
    assert isinstance(exc, ProtocolError)
    assert "exceeds the limit of 1024" in str(exc)
    assert server.messages.empty()
    await client.wait_closed()  # the peer sees the link go down too


@pytest.mark.parametrize(
    "prefix",
    [PREFIX.pack(2**31 - 1, 10), PREFIX.pack(2**32 - 1, 0), PREFIX.pack(8, 100), PREFIX.pack(3, 0)],
    ids=["huge", "max-u32", "header-past-body", "body-shorter-than-header-length"],
)
async def test_a_bad_length_prefix_after_the_handshake_closes_the_connection(
    listen, dial, prefix: bytes
) -> None:
    server, client = await _authenticated_pair(listen, dial, max_frame=1 << 20)
    assert client.conn is not None and client.conn._transport is not None
    client.conn._transport.write(prefix)
    assert isinstance(await server.wait_closed(), ProtocolError)


def _write_sealed(conn: Connection, data: bytes) -> None:
    """Write ``data`` (whole frames) and the seal that covers them, as ``send`` would."""
    assert conn._transport is not None and conn._tx is not None
    conn._transport.write(data + conn._tx.seal((data,)))


async def test_a_malformed_header_after_the_handshake_closes_the_connection(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None and client.conn._transport is not None
    header = msgspec.msgpack.encode([99, "unknown"])
    _write_sealed(client.conn, PREFIX.pack(4 + len(header), len(header)) + header)
    exc = await server.wait_closed()
    assert isinstance(exc, ProtocolError)
    assert server.messages.empty()


async def test_a_deeply_nested_header_after_the_handshake_is_a_protocol_error(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None and client.conn._transport is not None
    header = p.encode(p.Reply(1))[:-1] + b"\x91" * 100_000 + b"\xc0"
    _write_sealed(client.conn, PREFIX.pack(4 + len(header), len(header)) + header)
    exc = await server.wait_closed()
    assert isinstance(exc, ProtocolError)


async def test_a_handshake_message_after_the_handshake_closes_the_connection(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None
    client.conn.send(p.Hello(p.PROTOCOL_VERSION, "client", os.urandom(16)))
    exc = await server.wait_closed()
    assert isinstance(exc, ProtocolError)
    assert "after the handshake" in str(exc)


async def test_a_wrong_token_fails_both_ends_and_delivers_nothing(listen, dial) -> None:
    listener = await listen()
    client = await dial(listener, token=b"not the token")
    assert client.conn is not None
    with pytest.raises(AuthenticationError, match="wrong cluster token"):
        async with asyncio.timeout(10):
            await client.conn.authenticated
    await listener.end.wait_closed()
    assert listener.end.conn is not None
    assert listener.end.conn.authenticated.done()
    assert listener.end.conn.authenticated.exception() is not None
    assert listener.end.messages.empty()
    assert client.messages.empty()


async def _raw_handshake(
    port: int, token: bytes, *, peer_id: str = "raw", version: int = p.PROTOCOL_VERSION
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, p.Message]:
    """Dial with plain streams, answer the challenge with ``token``, return the verdict.
    The writer's ``seals`` attribute seals what the dialer sends after the handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = os.urandom(16)
    writer.write(_frame(p.Hello(version, peer_id, nonce)))
    challenge = await _read_message(reader)
    if isinstance(challenge, p.Challenge):
        mac = hmac.new(token, b"C" + challenge.nonce + nonce + peer_id.encode(), hashlib.sha256)
        writer.write(_frame(p.Proof(mac.digest())))
        keys = derive_keys(token, nonce, challenge.nonce, peer_id, challenge.peer_id)
        writer.seals = Seals(keys[0])  # type: ignore[attr-defined]
        return reader, writer, await _read_message(reader)
    return reader, writer, challenge


def _frame(msg: p._Msg, raw: bytes = b"") -> bytes:
    header = p.encode(msg)
    return PREFIX.pack(4 + len(header) + len(raw), len(header)) + header + raw


async def _read_message(reader: asyncio.StreamReader) -> p.Message:
    async with asyncio.timeout(10):
        body_len, header_len = PREFIX.unpack(await reader.readexactly(8))
        body = await reader.readexactly(body_len - 4)
    return p.decode(body[:header_len])


async def _assert_eof(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(10):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_a_listener_refuses_a_wrong_proof_with_a_reason(listen) -> None:
    listener = await listen()
    reader, writer, verdict = await _raw_handshake(listener.port, b"wrong token")
    try:
        assert verdict == p.Refused("wrong cluster token")
        await _assert_eof(reader)
        assert isinstance(await listener.end.wait_closed(), AuthenticationError)
    finally:
        await _close(writer)


async def test_a_listener_refuses_another_protocol_version(listen) -> None:
    listener = await listen()
    reader, writer, verdict = await _raw_handshake(listener.port, TOKEN, version=999)
    try:
        assert isinstance(verdict, p.Refused)
        assert "999" in verdict.reason
        await _assert_eof(reader)
    finally:
        await _close(writer)


async def test_a_raw_dialer_with_the_right_token_is_welcomed(listen) -> None:
    listener = await listen()
    _, writer, verdict = await _raw_handshake(listener.port, TOKEN, peer_id="raw-peer")
    try:
        assert isinstance(verdict, p.Welcome)
        assert listener.end.conn is not None
        assert listener.end.conn.peer_id == "raw-peer"
        data = _frame(p.Reply(1, value="hi"))
        writer.write(data + writer.seals.seal((data,)))  # type: ignore[attr-defined]
        _, msg, _ = await _next(listener.end)
        assert msg == p.Reply(1, value="hi")
    finally:
        await _close(writer)


@pytest.mark.parametrize(
    "data",
    [
        PREFIX.pack(4097, 100) + b"\x00" * 4089,
        PREFIX.pack(2**31 - 1, 10),
        _frame(p.Reply(1, value="sneaky")),
        _frame(p.Proof(b"m" * 32)),  # a proof before any hello
        _frame(p.Welcome()),  # only a dialer may be welcomed
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["over-4096", "huge", "reply", "early-proof", "welcome", "http"],
)
async def test_anything_but_a_hello_before_the_handshake_closes_the_connection(
    listen, data: bytes
) -> None:
    listener = await listen()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(data)
        exc = await listener.end.wait_closed()
        assert isinstance(exc, ProtocolError)
        await _assert_eof(reader)
        assert listener.end.messages.empty()
        assert listener.end.conn is not None
        with pytest.raises(ProtocolError):
            listener.end.conn.authenticated.result()
    finally:
        await _close(writer)


async def test_a_silent_dialer_is_dropped_when_the_handshake_times_out(
    listen, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_transport, "HANDSHAKE_TIMEOUT", 0.2)
    listener = await listen()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        exc = await listener.end.wait_closed()
        assert isinstance(exc, AuthenticationError)
        assert "timed out" in str(exc)
        await _assert_eof(reader)
    finally:
        await _close(writer)


async def test_nothing_is_sent_after_the_connection_closed(listen, dial) -> None:
    server, client = await _authenticated_pair(listen, dial)
    assert client.conn is not None
    client.conn.close()
    await client.wait_closed()
    client.conn.send(p.Reply(1))  # a no-op, not an error
    await server.wait_closed()
    assert server.messages.empty()


@pytest.mark.parametrize(
    "scenario",
    [
        test_a_handshake_delivers_messages_both_ways,
        test_a_burst_of_messages_arrives_complete_and_in_order,
        test_big_frames_arrive_intact_between_small_ones,
        test_an_oversized_frame_after_the_handshake_closes_the_connection,
        test_a_wrong_token_fails_both_ends_and_delivers_nothing,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
def test_the_transport_behaves_the_same_on_uvloop(
    scenario: typing.Callable[[Listen, Dial], typing.Awaitable[None]],
) -> None:
    """The nodes run uvloop, whose buffered-protocol path differs from asyncio's."""
    run_on_uvloop(scenario)


def run_on_uvloop(scenario: typing.Callable[[Listen, Dial], typing.Awaitable[None]]) -> None:
    """Run one of the links scenarios on uvloop (the loop the nodes run)."""

    async def main() -> None:
        async with _links() as (listen, dial):
            await scenario(listen, dial)

    uvloop.run(main())
