"""Framed, authenticated connections between two peers over TCP (asyncio Protocol on uvloop).

A :class:`Connection` reads frames into a reusable buffer (large frames into a buffer of
their own, so their payload can be handed out without a copy), checks every length
before allocating, authenticates the peer with an HMAC challenge-response over the
cluster token before anything else, and coalesces writes adaptively: the first frame
of a loop iteration goes out at once, the rest of that iteration in one write. Without TLS,
every write after the handshake ends with a seal (:mod:`.integrity`) and no frame is handed
on before its seal has checked. A large frame whose payload has a home already (a chunk of an
object being fetched: :attr:`Connection.sink`) is read straight into it, past its header.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..common.exceptions import AuthenticationError, ProtocolError
from . import protocol as p
from .admission import FAILED, HELLO, PROVEN, AdmissionControl, make_ticket
from .integrity import BIG_WRITE, SEAL_BODY, SEAL_MARK_BIG, SEAL_SIZE, Seals, derive_keys
from .logsafe import RateLimitedLog, safe_text

log = logging.getLogger("runtime.transport")
#: Failed handshakes: anyone who can connect can cause these, so they are rate-limited.
_handshake_log = RateLimitedLog(log)

_PREFIX = struct.Struct(">II")
_U32 = struct.Struct(">I")
_SMALL_BUFFER: Final = 256 * 1024
#: The read buffer before authentication (two handshake frames and their prefixes).
_HANDSHAKE_BUFFER: Final = 2 * (4096 + 8)
#: Frames bigger than this are refused before the handshake completes.
_MAX_HANDSHAKE_FRAME: Final = 4096
HANDSHAKE_TIMEOUT: Final = 10.0

Buffer = bytes | bytearray | memoryview
#: Called with (connection, message, raw buffers) for every authenticated frame.
Handler = Callable[["Connection", p.Message, memoryview], None]
#: Called with (connection, error or None) once when the connection is closed.
CloseHandler = Callable[["Connection", BaseException | None], None]
#: Called with (connection, decoded header, payload bytes) when a large frame's header is in:
#: a writable view of exactly that many bytes to read the payload into, or None.
Sink = Callable[["Connection", p.Message, int], memoryview | None]


def _mac(token: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, label + b"".join(parts), hashlib.sha256).digest()


class Connection(asyncio.BufferedProtocol):
    """One end of a peer-to-peer link: framing, handshake, coalesced writes."""

    def __init__(
        self,
        *,
        local_id: str,
        token: bytes,
        on_message: Handler,
        on_close: CloseHandler,
        dialer: bool,
        max_frame: int = p.MAX_FRAME_SIZE,
        admission: AdmissionControl | None = None,
        integrity: bool = True,
        decode: Callable[[memoryview], Any] = p.decode,
    ) -> None:
        self.local_id = local_id
        #: Decodes a message's header after the handshake (a simulator's may skip parts).
        self._decode = decode
        #: Seal the frames after the handshake (off under TLS, which protects them already).
        self._integrity = integrity
        self._tx: Seals | None = None
        self._rx: Seals | None = None
        #: Frames read but not yet covered by a seal that checked (a sunk frame: its message
        #: and its payload).
        self._unsealed: list[memoryview | tuple[p.Message, memoryview]] = []
        #: The bytes those frames came in, as sent: the ones already moved out of the read
        #: buffer (``_held``, ``_held_size``), then the span of the read buffer from
        #: ``_span`` (-1: none) to the current frame. A seal hashes them in one pass.
        self._held: list[Buffer] = []
        self._held_size = 0
        self._span = -1
        self._admission = admission
        self.peer_id: str | None = None
        self._token = token
        self._on_message = on_message
        self._on_close = on_close
        self._dialer = dialer
        self._max_frame = max_frame
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        # Small until the peer proves the token (a handshake frame is 4 KiB at most): a flood
        # of unauthenticated connections once cost 256 KiB each.
        self._buf = bytearray(_HANDSHAKE_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        #: Where the rest of a large frame goes (a buffer of its own, or a sink's view).
        self._big: memoryview | None = None
        self._big_pos = 0
        #: The large frame being read into a sink's view: (its message, its bytes before the
        #: payload, as sent: the seal covers them).
        self._sunk: tuple[p.Message, bytes] | None = None
        #: Gives large frames' payloads a home (the object transfer sets it): see ``Sink``.
        self.sink: Sink | None = None
        self._batch: list[Buffer] = []
        self._flush_scheduled = False
        #: The frames of the batch sent after the handshake (and their bytes): _flush ends
        #: the batch with their seal.
        self._seal_parts: list[Buffer] = []
        self._seal_size = 0
        #: Every sealed write seals and writes under ``wlock``; other threads write on ``wfd``
        #: (:mod:`.direct`), and the loop writes ``rest`` (what such a write left) first.
        self.wlock = threading.Lock()
        self.wfd = -1
        self.rest: list[Buffer] | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.authenticated: asyncio.Future[Connection] = self._loop.create_future()
        self.closed = False
        self._nonce = os.urandom(16)
        self._peer_nonce = b""
        self._hs_timer: asyncio.TimerHandle | None = None
        #: Request ids waiting for an answer on this connection (failed when it closes).
        self.pending: set[int] = set()
        #: Function ids this peer has already been sent the definition of.
        self.known_functions: set[bytes] = set()
        self.peer_address: str | None = None

    # --- asyncio callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_address = f"{peer[0]}:{peer[1]}"
        if self._admission is not None and not self._dialer:
            pushed = self._admission.opened(self._host(), self, transport.get_extra_info("socket"))
            if pushed is not None:
                pushed.abort(ProtocolError("too many connections waiting in the handshake"))
        self._hs_timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        if self._dialer:
            ticket = make_ticket(self._token, self._nonce, self.local_id)
            self._send_header(p.Hello(p.PROTOCOL_VERSION, self.local_id, self._nonce, ticket))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return self._big[self._big_pos :]
        if self._end == len(self._buf):
            self._compact()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._big is not None:
                self._big_pos += nbytes
                if self._big_pos == self._big.nbytes:
                    self._big_done()
                return
            self._end += nbytes
            self._parse()
        except ProtocolError as exc:
            self.abort(exc)
        except AuthenticationError as exc:
            self.abort(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # --- reading -----------------------------------------------------------------------

    def _big_done(self) -> None:
        """A large frame is in: hand it on (or hold it for its seal)."""
        big, self._big = self._big, None
        sunk, self._sunk = self._sunk, None
        assert big is not None
        frame = big.toreadonly()
        if sunk is not None:
            msg, head = sunk
            if self._rx is not None:
                self._unsealed.append((msg, frame))
                self._held += (head, frame)
                self._held_size += len(head) + frame.nbytes
            else:
                self._on_message(self, msg, frame)
        elif self._rx is not None:
            self._unsealed.append(frame)
            self._held += (_U32.pack(frame.nbytes), frame)
            self._held_size += 4 + frame.nbytes
        else:
            self._dispatch(frame)

    def _sink_into(self, body_len: int, header_len: int) -> bool | None:
        """Read the large frame at ``_start`` straight into a sink's view, if the sink has one
        for it: True if so, False if not, None while its header is not all in yet."""
        head_end = self._start + 8 + header_len
        if head_end > self._end:
            if 8 + header_len > len(self._buf):
                return False  # a header this large is no chunk of an object
            if head_end > len(self._buf):
                self._compact()
            return None
        msg = p.decode(self._view[self._start + 8 : head_end])
        if isinstance(msg, p.HandshakeMessage):
            raise ProtocolError(f"unexpected {type(msg).__name__} after the handshake")
        assert self.sink is not None
        size = body_len - 4 - header_len
        dest = self.sink(self, msg, size)
        if dest is None or dest.nbytes != size:
            return False
        came = self._end - head_end
        dest[:came] = self._view[head_end : self._end]
        self._sunk = (msg, bytes(self._view[self._start : head_end]))
        self._big, self._big_pos = dest, came
        self._start = self._end = 0
        return True

    def _compact(self) -> None:
        live = self._end - self._start
        if self._start:
            self._buf[:live] = self._buf[self._start : self._end]
            self._start, self._end = 0, live

    def _parse(self) -> None:
        while self._end - self._start >= p.PREFIX_SIZE:
            body_len, header_len = _PREFIX.unpack_from(self._buf, self._start)
            if header_len >= SEAL_MARK_BIG and self._rx is not None:
                if body_len != SEAL_BODY:
                    raise ProtocolError(f"a seal frame of {body_len} bytes")
                if self._end - self._start < SEAL_SIZE:
                    break
                # What the seal covers: every byte since the previous seal, as sent (each
                # frame's [u32 length][body]); most often one span of the read buffer.
                start, held = self._start, self._held
                parts: Sequence[Buffer]
                if held:
                    parts, size = held, self._held_size
                    self._held, self._held_size = [], 0
                    if self._span >= 0:
                        parts = [*held, self._view[self._span : start]]
                        size += start - self._span
                elif self._span >= 0:
                    parts, size = (self._view[self._span : start],), start - self._span
                else:
                    parts, size = (), 0
                self._span = -1
                self._start = start + SEAL_SIZE
                tag = self._view[start + p.PREFIX_SIZE : start + SEAL_SIZE]
                if not self._rx.check(parts, size, header_len, tag):
                    raise ProtocolError(
                        f"write {self._rx.count - 1} failed its integrity check: bytes altered, "
                        "injected, replayed or reordered on the way"
                    )
                frames, self._unsealed = self._unsealed, []
                for frame in frames:
                    if isinstance(frame, tuple):  # a sunk frame, its header decoded
                        self._on_message(self, *frame)
                    else:
                        self._dispatch(frame)
                    if self.closed:
                        return
                continue
            limit = self._max_frame if self.authenticated.done() else _MAX_HANDSHAKE_FRAME
            if body_len > limit or header_len + 4 > body_len:
                raise ProtocolError(
                    f"frame of {body_len} bytes (header {header_len}) is malformed or exceeds "
                    f"the limit of {limit} bytes"
                )
            total = 4 + body_len
            have = self._end - self._start
            if have < total:
                self._keep_unsealed()  # the small buffer is about to be reused or moved
                if total > len(self._buf):
                    if self.sink is not None and self.authenticated.done():
                        sunk = self._sink_into(body_len, header_len)
                        if sunk is None:
                            return  # its header is not all in yet
                        if sunk:
                            if self._big_pos == self._big.nbytes:  # type: ignore[union-attr]
                                self._big_done()  # (an empty payload)
                            return
                    # A large frame gets a buffer of its own, filled straight from the socket.
                    big = bytearray(body_len)
                    chunk = have - 4
                    big[:chunk] = self._buf[self._start + 4 : self._end]
                    self._big, self._big_pos = memoryview(big), chunk
                    self._start = self._end = 0
                elif self._start + total > len(self._buf):
                    self._compact()
                return
            frame = self._view[self._start + 4 : self._start + total]
            if self._rx is not None:
                if self._span < 0:
                    self._span = self._start
                self._unsealed.append(frame)
                self._start += total
                continue
            self._start += total
            self._dispatch(frame)
            if self.closed:
                return
        if self._span >= 0 or self._unsealed:  # a write's frames came without their seal
            self._keep_unsealed()
        if self._start == self._end:
            self._start = self._end = 0

    def _keep_unsealed(self) -> None:
        """Copy the unsealed frames (and the bytes their seal covers) out of the small
        buffer before it is reused: rare, since a write's frames and its seal most often
        arrive in one read."""
        if self._span >= 0:
            held = bytes(self._buf[self._span : self._start])
            self._held.append(held)
            self._held_size += len(held)
            self._span = -1
        if self._unsealed:
            self._unsealed = [
                memoryview(bytes(f)) if isinstance(f, memoryview) and f.obj is self._buf else f
                for f in self._unsealed
            ]

    def _dispatch(self, frame: memoryview) -> None:
        """``frame`` is [u32 header length][header][raw buffers]."""
        (header_len,) = struct.unpack_from(">I", frame, 0)
        header = frame[4 : 4 + header_len]
        raw = frame[4 + header_len :]
        if raw.nbytes and frame.obj is self._buf:
            raw = memoryview(bytes(raw))  # the small buffer is reused: keep a copy
        if not self.authenticated.done():
            self._handshake(p.decode(header, handshake=True))
            return
        msg = self._decode(header)
        if isinstance(msg, p.HandshakeMessage):
            raise ProtocolError(f"unexpected {type(msg).__name__} after the handshake")
        self._on_message(self, msg, raw)

    # --- handshake -----------------------------------------------------------------------

    def _handshake(self, msg: p.Message) -> None:
        match msg:
            case p.Hello(version=version, peer_id=peer_id, nonce=nonce) if not self._dialer:
                if version != p.PROTOCOL_VERSION:
                    self._refuse(f"protocol version {version} is not {p.PROTOCOL_VERSION}")
                    return
                self.peer_id, self._peer_nonce = peer_id, bytes(nonce)
                if self._admission is not None:  # a token holder's ticket: a proven slot
                    proven = self._admission.check_ticket(self._token, nonce, peer_id, msg.ticket)
                    self._admission.progressed(self, PROVEN if proven else HELLO)
                # No MAC here: the dialer proves first (a MAC would let anyone who connects
                # test token guesses offline); the head's proof comes with the Welcome.
                self._send_header(p.Challenge(self.local_id, self._nonce))
            case p.Challenge(peer_id=peer_id, nonce=nonce) if self._dialer:
                self.peer_id, self._peer_nonce = peer_id, bytes(nonce)
                proof = _mac(
                    self._token, b"C", self._peer_nonce, self._nonce, self.local_id.encode()
                )
                self._send_header(p.Proof(proof))
            case p.Proof(mac=mac) if not self._dialer and self.peer_id is not None:
                assert self.peer_id is not None
                expect = _mac(
                    self._token, b"C", self._nonce, self._peer_nonce, self.peer_id.encode()
                )
                if not hmac.compare_digest(expect, mac):
                    self.peer_id = None  # one proof per connection: another is a protocol error
                    delay = self._admission.hello_delay(self._host()) if self._admission else 0
                    if delay:  # this host keeps failing the token check: slow it down
                        assert self._admission is not None
                        self._admission.progressed(self, FAILED)
                        self._loop.call_later(delay, self._refuse, "wrong cluster token")
                    else:
                        self._refuse("wrong cluster token")
                    return
                mac = _mac(self._token, b"S", self._peer_nonce, self._nonce, self.local_id.encode())
                self._send_header(p.Welcome(mac))
                self._authenticated()
            case p.Welcome(mac=mac) if self._dialer and self.peer_id is not None:
                expect = _mac(
                    self._token, b"S", self._nonce, self._peer_nonce, self.peer_id.encode()
                )
                if not hmac.compare_digest(expect, mac):
                    raise AuthenticationError(
                        "the peer does not hold the cluster token (its proof failed)"
                    )
                self._authenticated()
            case p.Refused(reason=reason):
                raise AuthenticationError(f"the peer refused the connection: {reason}")
            case _:
                raise ProtocolError(f"unexpected {type(msg).__name__} during the handshake")

    def _authenticated(self) -> None:
        # The full read buffer now; what the peer sent after its proof moves along (the frame
        # being handled has been consumed: _parse advanced past it before dispatching it).
        live = bytes(self._view[self._start : self._end])
        self._buf = bytearray(_SMALL_BUFFER)
        self._buf[: len(live)] = live
        self._view = memoryview(self._buf)
        self._start, self._end = 0, len(live)
        if self._hs_timer is not None:
            self._hs_timer.cancel()
        if self._admission is not None and not self._dialer:
            self._admission.settled(self._host(), self)
        if self._integrity:
            assert self.peer_id is not None
            if self._dialer:
                ids = (self._nonce, self._peer_nonce, self.local_id, self.peer_id)
                send_key, recv_key = derive_keys(self._token, *ids)
            else:
                ids = (self._peer_nonce, self._nonce, self.peer_id, self.local_id)
                recv_key, send_key = derive_keys(self._token, *ids)
            self._tx, self._rx = Seals(send_key), Seals(recv_key)
        self.authenticated.set_result(self)

    def _host(self) -> str:
        return (self.peer_address or "?").rpartition(":")[0]

    def _refuse(self, reason: str) -> None:
        if self.closed:  # pushed out, or gone, while a slowed-down refusal waited
            return
        if self._admission is not None and reason == "wrong cluster token":
            self._admission.failed(self._host())
        self._send_header(p.Refused(reason))
        self.abort(AuthenticationError(reason), flush=True)

    def _handshake_timeout(self) -> None:
        if not self.authenticated.done():
            self.abort(AuthenticationError("handshake timed out"))

    # --- writing -------------------------------------------------------------------------

    def _send_header(self, msg: p._Msg) -> None:
        header = p.encode(msg)
        self._write(_PREFIX.pack(4 + len(header), len(header)) + header)

    def send(self, msg: p._Msg, buffers: Sequence[Buffer] = ()) -> None:
        """Queue one message (and the raw buffers of its values) for the peer."""
        if self.closed:
            return
        header = p.encode(msg)
        tx = self._tx
        if tx is not None:
            size = 4 + len(header)
            if buffers:
                size += sum(memoryview(b).nbytes for b in buffers)
            head = _PREFIX.pack(size, len(header)) + header
            transport = self._transport
            if transport is None:
                return
            with self.wlock:
                if self.rest is not None:
                    self._write_rest(transport)
                if self._flush_scheduled:  # the seal goes after the batch, in _flush
                    self._batch.append(head)
                    self._batch.extend(buffers)
                    self._seal_parts.append(head)
                    self._seal_parts.extend(buffers)
                    self._seal_size += 4 + size
                    return
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
                if buffers or 4 + size >= BIG_WRITE:
                    transport.writelines([head, *buffers, tx.seal([head, *buffers], 4 + size)])
                else:
                    transport.write(tx.sealed(head))
            return
        if buffers:
            size = 4 + len(header) + sum(memoryview(b).nbytes for b in buffers)
            self._write(_PREFIX.pack(size, len(header)) + header)
            for b in buffers:
                self._write(b)
        else:
            self._write(_PREFIX.pack(4 + len(header), len(header)) + header)

    def _write(self, data: Buffer) -> None:
        transport = self._transport
        if transport is None or self.closed:
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
            transport.write(data)
        else:
            self._batch.append(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._batch and self.rest is None:  # (a rest set later posts a _flush too)
            return
        with self.wlock:
            batch, self._batch, transport = self._batch, [], self._transport
            if transport is None or self.closed:
                return
            if self.rest is not None:
                self._write_rest(transport)
            if self._seal_parts:
                assert self._tx is not None
                parts, self._seal_parts = self._seal_parts, []
                batch.append(self._tx.seal(parts, self._seal_size))
                self._seal_size = 0
            if batch:
                transport.writelines(batch)

    def _write_rest(self, transport: asyncio.Transport) -> None:
        """What a write from another thread left unwritten, first (loop, under ``wlock``)."""
        transport.writelines(self.rest or ())
        self.rest = None

    async def drain(self) -> None:
        """Wait until the peer has taken what was written (backpressure)."""
        if self._paused and not self.closed:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(fut)
            await fut

    # --- closing -------------------------------------------------------------------------

    def abort(self, exc: BaseException | None = None, *, flush: bool = False) -> None:
        """Close the connection; ``exc`` says why (logged, and given to waiters)."""
        if self.closed:
            return
        if exc is not None:
            if self.authenticated.done():
                log.warning(
                    "closing connection to %s (%s): %s",
                    safe_text(self.peer_id),
                    self.peer_address,
                    safe_text(exc, 400),
                )
            else:  # the peer has proved nothing: its words are escaped and capped
                _handshake_log.warning(
                    "handshake with %s failed (claimed peer id %s): %s",
                    self.peer_address,
                    safe_text(self.peer_id, 64) if self.peer_id is not None else "none",
                    safe_text(exc),
                )
        transport = self._transport
        if transport is not None:
            if flush:
                self._flush()
                transport.close()
            else:
                transport.abort()
        self._finish(exc)

    def close(self) -> None:
        """Close after sending what is queued."""
        if self._transport is not None and not self.closed:
            self._flush()
            self._transport.close()

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        with self.wlock:  # no write from another thread is under way, and none comes now
            self.closed = True
            if self.wfd >= 0:
                os.close(self.wfd)
                self.wfd = -1
        # Let go of what was read and never handed on (views of a sink's buffer among them).
        self._unsealed, self._held, self._big, self._sunk = [], [], None, None
        if self._hs_timer is not None:
            self._hs_timer.cancel()
        if self._admission is not None and not self._dialer:
            self._admission.settled(self._host(), self)
        if not self.authenticated.done():
            self.authenticated.set_exception(
                exc
                if isinstance(exc, AuthenticationError | ProtocolError)
                else ConnectionError(f"connection closed during the handshake: {exc}")
            )
            self.authenticated.exception()  # mark retrieved: the dialer may not be waiting
        self.resume_writing()
        self._on_close(self, exc)


def split_buffers(raw: memoryview, sizes: Sequence[int], offset: int) -> tuple[list[Any], int]:
    """Cut ``sizes`` consecutive buffers out of ``raw`` starting at ``offset``."""
    out = []
    for size in sizes:
        if offset + size > len(raw):
            raise ProtocolError("a value's buffers run past the end of the frame")
        out.append(raw[offset : offset + size])
        offset += size
    return out, offset
