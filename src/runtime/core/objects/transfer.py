"""Moving objects between processes: asking an owner for an object, mapping a stored file on
the same host, streaming it in chunks from another host (and keeping a copy there, which
the owner gives later readers: :mod:`.copies`), and answering those requests
(``GetObject``, ``FetchObject``, ``ObjectCopied``, ``Unmapped``). A part of the object plane.

A stream from another host is read straight into its copy's file in the reader's store (a
:class:`~.landing.Landing`): the connection hands each chunk's payload to the file from the
socket, and the holder sends views of its own mapping, so the bytes are copied once on
each side, by the kernel. Every chunk must come within ``CHUNK_TIMEOUT_S``; a stream cut
midway fails with :class:`ObjectLostError` and gives its reservation back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import msgspec

from ..common.exceptions import (
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    OwnerDiedError,
    RuntimeBaseError,
)
from ..wire import protocol as p
from ..wire.transport import Connection, split_buffers
from . import blob
from . import serialization as ser
from .copies import CopyDirectory
from .host import ObjectHost
from .landing import Landing, NoRoom, reserve
from .refs import PENDING, ObjectRef, OwnedObject, ReferenceTable
from .segments import populate

#: A reader on another host fetches a stored object in chunks of this size,
CHUNK: Final = 8 << 20
#: with this many chunks in flight,
CHUNKS_IN_FLIGHT: Final = 4
#: after a first one of this size, which tells the object's size and header.
FIRST_CHUNK: Final = 1 << 20
#: A chunk that has not come within this long (seconds) fails the stream: the holder hangs.
CHUNK_TIMEOUT_S: Final = float(os.environ.get("RUNTIME_OBJECT_CHUNK_TIMEOUT_S", "60"))
_encode_int = msgspec.msgpack.Encoder().encode
_decode_int = msgspec.msgpack.Decoder(int).decode
log = logging.getLogger("runtime.objects")
_NOTHING: Final = memoryview(b"")
_prefault_pool: ThreadPoolExecutor | None = None
#: (owner id, owner address) of an object being read; None: this process owns it.
Owner = tuple[str, str] | None


class ObjectTransfer:
    """Gets objects from where they are, and serves this process's objects to others."""

    def __init__(
        self,
        host: ObjectHost,
        refs: ReferenceTable,
        entry_ready: Callable[[OwnedObject], asyncio.Future[None]],
    ) -> None:
        self.host = host
        self.refs = refs
        self.entry_ready = entry_ready
        self.peer_id = host.peer_id
        self.inbox = host.inbox
        self.conns = host.conns
        self.store = host.store
        self.dead_peers = host.dead_peers
        self.spawn = host.spawn
        self.connect_peer = host.connect_peer
        self.request = host.request
        #: Copies of this process's objects on other hosts (owner side).
        self.copies = CopyDirectory(host.loop, self._alive)
        #: Bytes of stored objects this process streamed to readers on other hosts.
        self.served_bytes = 0
        #: Objects being streamed here now: a second reader waits for the same copy.
        self._fetching: dict[bytes, asyncio.Task[tuple[p.Value, list[Any]]]] = {}
        #: Chunk requests in flight whose payload has a place: id(request) -> (request,
        #: the connection it went on, where its payload goes). The connections' sink reads
        #: their replies into those places.
        self._sinking: dict[int, tuple[p.FetchObject, Connection, memoryview]] = {}

    def _alive(self, node_id: str) -> bool:
        return node_id not in self.dead_peers and node_id in self.host.view

    def here(self, oid: bytes) -> p.Located | None:
        """Where a stored object of this process is now (for a reader that maps it)."""
        entry = self.store.locate(oid)
        if entry is None:
            return None
        return p.Located(
            self.peer_id, self.host.address, entry.size, self.store.host_id, entry.path
        )

    async def ask_owner(
        self, ref: ObjectRef[Any], lost: p.Located | None = None
    ) -> tuple[p.Value | p.Located, list[Any]]:
        try:
            conn = await self.connect_peer(ref.owner_id, ref.owner_address)
            msg = p.GetObject(0, ref.id, lost, host=self.store.host_id)
            reply, raw = await self.request(conn, msg)
        except (OSError, ConnectionError, NodeDiedError) as exc:
            raise OwnerDiedError(
                f"the owner {ref.owner_id} of object {ref.hex()} is unreachable: {exc}"
            ) from None
        if reply.error is not None:
            raise ser.error_from_value(reply.error)
        value = reply.value
        assert value is not None
        if isinstance(value, p.Value) and value.bufs:
            bufs, _ = split_buffers(raw, value.bufs, 0)
            return value, bufs
        return value, []

    async def fetch(
        self, loc: p.Located, oid: bytes, *, fresh: bool = False, owner: Owner = None
    ) -> tuple[p.Value, list[Any]]:
        """The value a Located names: from this store (its own, or a copy read before), by
        mapping its file when it is on this host, else streamed from its node in chunks and
        kept here (the owner, ``owner``, hears of the copy). ``fresh``: the holder itself
        just sent ``loc``."""
        item = self.store.get(oid)
        if item is not None:
            return item
        if loc.node_id == self.peer_id:
            raise ObjectLostError(f"object {oid.hex()} is no longer in this node's store")
        if loc.host and loc.host == self.store.host_id:
            for _ in range(3):
                if not fresh:
                    # Ask the holder where the object is now: it may have been spilled, and a
                    # holder that died took its objects with it (its files are orphans).
                    msg = p.FetchObject(0, oid, same_host=True)
                    reply, _ = await self._ask_holder(loc, oid, msg)
                    moved = reply.value
                    assert isinstance(moved, p.Located)
                    loc = moved
                fresh = False
                if not loc.segment:
                    break  # kept in the holder's own memory: fetch it
                try:
                    return self._map_segment(loc, oid)
                except FileNotFoundError:
                    pass  # spilled or freed since: ask again
        stream = self._fetching.get(oid)
        if stream is None:  # one stream per object here, in a task of its own: a reader
            # that is cancelled does not cancel it for the others
            # (not the worker's spawn: its failure is the readers' to raise, not to log)
            stream = self.host.loop.create_task(self._stream(loc, oid, owner))
            stream.add_done_callback(_retrieved)
            self._fetching[oid] = stream
        return await asyncio.shield(stream)

    async def _stream(self, loc: p.Located, oid: bytes, owner: Owner) -> tuple[p.Value, list[Any]]:
        try:
            landed, value, bufs = await self._fetch_chunks(loc, oid)
            if not landed:
                return await self._keep_copy(oid, value, bufs, loc, owner)
            kept = self.here(oid)
            self._report_copy(oid, kept, owner)
            return self.store.get(oid) or (value, bufs)
        finally:
            del self._fetching[oid]

    async def _keep_copy(
        self, oid: bytes, value: p.Value, bufs: list[Any], source: p.Located, owner: Owner
    ) -> tuple[p.Value, list[Any]]:
        """Keep what was streamed in this process's store, where readers on this host map it
        and readers elsewhere may fetch it; tell the owner. A value holding refs is not kept
        (its copy would have to pin them), nor one the store has no room for."""
        kept: p.Located | None = None
        if not value.refs:
            what = f"a copy of object {oid.hex()} read from node {source.node_id}"
            try:
                stored = await self.host.loop.run_in_executor(
                    None, lambda: self.store.put(oid, value, bufs, can_wait=False, what=what)
                )
            except (OutOfMemoryError, OSError) as exc:
                log.info("not keeping %s: %s", what, exc)
            else:
                kept = p.Located(
                    self.peer_id, self.host.address, source.size, self.store.host_id, stored.path
                )
                value, bufs = self.store.get(oid) or (value, bufs)
        self._report_copy(oid, kept, owner)
        return value, bufs

    def _report_copy(self, oid: bytes, kept: p.Located | None, owner: Owner) -> None:
        if owner is None or owner[0] == self.peer_id:
            if oid in self.refs.owned:
                self.copies.copied(oid, self.peer_id, kept, self._serves(self.peer_id))
            elif kept is not None:  # freed while it streamed
                self.store.free(oid)
            return
        conn = self.conns.get(owner[0])
        if conn is not None and not conn.closed:
            conn.send(p.ObjectCopied(oid, kept))
        elif not self.host.closing:
            self.spawn(self._report_copy_later(oid, kept, owner))

    async def _report_copy_later(self, oid: bytes, kept: p.Located | None, owner: Owner) -> None:
        assert owner is not None
        with contextlib.suppress(OSError, RuntimeBaseError, ConnectionError):
            conn = await self.connect_peer(*owner)
            conn.send(p.ObjectCopied(oid, kept))

    def _serves(self, node_id: str) -> bool:
        """Whether a copy on ``node_id`` may serve other readers (a driver's serves no one:
        it may be outside the cluster's network, behind the head's client relay)."""
        info = self.host.view.get(node_id)
        return info is not None and not info.is_driver

    def on_copied(self, conn: Connection, msg: p.ObjectCopied) -> None:
        """A reader finished reading an object of ours, and maybe keeps a copy."""
        oid, loc = msg.object_id, msg.location
        reader = conn.peer_id or ""  # as it asked (GetObject): its lease ends
        if oid in self.refs.owned:
            serves = loc is not None and loc.node_id == reader and self._serves(reader)
            self.copies.copied(oid, reader, loc, serves)
        elif loc is not None:  # freed meanwhile: the copy goes too
            conn.send(p.FreeObjects([oid]))

    def _map_segment(self, loc: p.Located, oid: bytes) -> tuple[p.Value, list[Any]]:
        """Map the holder's file; tell the holder when the mapping is gone (the last array
        over it collected), so it may reuse the file's pages for another object."""
        mem = blob.map_file(loc.segment)
        weakref.finalize(mem, self._unmapped_later, loc.node_id, loc.address, oid)
        return blob.parse(memoryview(mem), loc.segment)

    def _unmapped_later(self, node_id: str, address: str, oid: bytes) -> None:
        if self.host.closing:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: so is the worker
            self.inbox.post(self._send_unmapped, node_id, address, oid)

    def _send_unmapped(self, node_id: str, address: str, oid: bytes) -> None:
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            conn.send(p.Unmapped([oid]))
        elif not self.host.closing and node_id not in self.dead_peers:
            self.spawn(self._send_unmapped_later(node_id, address, oid))

    async def _send_unmapped_later(self, node_id: str, address: str, oid: bytes) -> None:
        with contextlib.suppress(OSError, RuntimeBaseError, ConnectionError):
            conn = await self.connect_peer(node_id, address)
            conn.send(p.Unmapped([oid]))

    async def _ask_holder(
        self, loc: p.Located, oid: bytes, msg: p.FetchObject
    ) -> tuple[p.ObjectReply, memoryview]:
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
            reply, raw = await self.request(conn, msg)
        except (OSError, ConnectionError, NodeDiedError) as exc:
            raise ObjectLostError(
                f"object {oid.hex()} was on node {loc.node_id}, which is unreachable: {exc}"
            ) from None
        if reply.error is not None:
            raise ser.error_from_value(reply.error)
        return reply, raw

    async def _fetch_chunks(self, loc: p.Located, oid: bytes) -> tuple[bool, p.Value, list[Any]]:
        """Stream a stored object from another node: (whether it landed in this store, its
        value, its buffers). A first small chunk tells its size and header; the object then
        lands in a file reserved in this store (else, when it holds refs or the store has no
        room, in memory of its own), each chunk read into its place from the socket."""
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
        except (OSError, ConnectionError, NodeDiedError) as exc:
            raise ObjectLostError(
                f"object {oid.hex()} was on node {loc.node_id}, which is unreachable: {exc}"
            ) from None
        conn.sink = self._sink
        stream = _Stream(conn, loc, oid)
        stream.total, first = await self._chunk(stream, 0, FIRST_CHUNK, None)
        header = blob.peek(first)
        if header is not None and not header.refs and stream.total > first.nbytes:
            what = f"a copy of object {oid.hex()} read from node {loc.node_id}"
            landing = await self._reserve(oid, stream.total, what)
            if landing is not None:
                try:
                    landing.start(self.host.loop)
                    stream.landing = landing
                    await self._fill(stream, landing.view, first)
                    _, value = landing.commit()
                    return True, value, []
                except NoRoom as exc:
                    log.info("reading object %s into memory: %s", oid.hex(), exc)
                finally:
                    stream.landing = None
                    landing.abort()  # (nothing, once committed)
        dest = memoryview(mmap.mmap(-1, max(stream.total, 1)))
        await self._fill(stream, dest, first)
        value, bufs = blob.parse(dest, f"the copy of {oid.hex()} from {loc.node_id}")
        return False, value, bufs

    async def _reserve(self, oid: bytes, size: int, what: str) -> Landing | None:
        """A landing in this store (off the loop: reserving may spill); one made for a
        stream cancelled meanwhile is given back."""
        made = self.host.loop.run_in_executor(None, reserve, self.store, oid, size, what)
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            made.add_done_callback(_give_back)
            raise

    async def _fill(self, stream: _Stream, dest: memoryview, first: memoryview) -> None:
        """Fetch the rest of the object into ``dest`` after ``first`` (a few chunks in
        flight, each read into its place); the first failure cancels the others."""
        if stream.landing is not None:
            await stream.landing.ready(first.nbytes)
        dest[: first.nbytes] = first
        total = stream.total
        try:
            async with asyncio.TaskGroup() as chunks:
                for offset in range(first.nbytes, total, CHUNK):
                    place = dest[offset : min(total, offset + CHUNK)]
                    chunks.create_task(self._chunk(stream, offset, place.nbytes, place))
                    del place  # (a view of the mapping: it goes with its chunk)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    async def _chunk(
        self, stream: _Stream, offset: int, size: int, into: memoryview | None
    ) -> tuple[int, memoryview]:
        """Ask for the ``size`` bytes at ``offset``: (the object's size, those bytes; or
        nothing when ``into``, their place, was given: they were read there)."""
        loc, oid = stream.loc, stream.oid
        msg = p.FetchObject(0, oid, offset, size)
        async with stream.sem:
            if into is not None:
                if stream.landing is not None:
                    await stream.landing.ready(offset + size)
                self._sinking[id(msg)] = (msg, stream.conn, into)
            try:
                async with asyncio.timeout(CHUNK_TIMEOUT_S):
                    reply, raw = await self.request(stream.conn, msg)
            except TimeoutError:
                raise ObjectLostError(
                    f"node {loc.node_id} sent no chunk of object {oid.hex()} within "
                    f"{CHUNK_TIMEOUT_S:g} s (RUNTIME_OBJECT_CHUNK_TIMEOUT_S)"
                ) from None
            except (OSError, ConnectionError, NodeDiedError) as exc:
                raise ObjectLostError(
                    f"the stream of object {oid.hex()} from node {loc.node_id} was cut: {exc}"
                ) from None
            finally:
                self._sinking.pop(id(msg), None)
        if reply.error is not None:
            raise ser.error_from_value(reply.error)
        value = reply.value
        if not isinstance(value, p.Value) or value.kind != ser.KIND_BLOB:
            raise ObjectLostError(f"node {loc.node_id} sent a malformed chunk of {oid.hex()}")
        data = split_buffers(raw, value.bufs, 0)[0][0]
        total = _decode_int(value.data)
        if into is None:
            return total, data
        if total != stream.total or data.nbytes != size:
            raise ObjectLostError(f"node {loc.node_id} sent a short chunk of {oid.hex()}")
        if data.obj is not into.obj:  # not read into its place (the sink had none)
            into[:] = data
        return total, _NOTHING

    def _sink(self, conn: Connection, msg: p.Message, size: int) -> memoryview | None:
        """Where the payload of a large frame goes: a chunk this process asked for goes to
        its place (the connection reads it there, then checks its seal); anything else, None."""
        if not self._sinking or not isinstance(msg, p.ObjectReply):
            return None
        for request, asked, into in self._sinking.values():
            if request.rid == msg.rid and asked is conn:
                value = msg.value
                ok = isinstance(value, p.Value) and value.bufs == [size] == [into.nbytes]
                return into if ok else None
        return None

    async def serve_get_object(self, conn: Connection, msg: p.GetObject) -> None:
        entry = self.refs.owned.get(msg.object_id)
        if entry is None:
            conn.send(
                p.ObjectReply(
                    msg.rid,
                    error=ser.system_error_value(
                        ObjectLostError,
                        f"object {msg.object_id.hex()} does not exist (freed or never owned here)",
                    ),
                )
            )
            return
        if entry.state == PENDING:
            await self.entry_ready(entry)
        loc = entry.location
        if msg.lost is not None and self.copies.is_copy(msg.object_id, msg.lost.node_id):
            self.copies.lost(msg.object_id, msg.lost.node_id, conn.peer_id or "")
        # A borrower could not read it there: if that holder lost it, make it again.
        lost = msg.lost is not None and loc is not None and loc.node_id == msg.lost.node_id
        if lost and loc is not None and await self._holder_lost(loc, msg.object_id):
            if not self.host.reconstruct(entry):
                conn.send(
                    p.ObjectReply(
                        msg.rid,
                        error=ser.system_error_value(
                            ObjectLostError,
                            f"object {msg.object_id.hex()} was lost with node {loc.node_id}, "
                            "and the task that made it cannot run again (it was put, or its "
                            "retries are used up)",
                        ),
                    )
                )
                return
            await self.entry_ready(entry)
        if entry.value is not None:
            if entry.value.kind == ser.KIND_ERROR:
                conn.send(p.ObjectReply(msg.rid, error=entry.value))
            else:
                conn.send(p.ObjectReply(msg.rid, value=entry.value), entry.buffers)
        else:
            loc = entry.location
            assert loc is not None
            here = self.here(msg.object_id) if loc.node_id == self.peer_id else None
            reader = conn.peer_id or ""
            source = await self.copies.source(msg.object_id, here or loc, reader, msg.host)
            conn.send(p.ObjectReply(msg.rid, value=source))

    async def _holder_lost(self, loc: p.Located, oid: bytes) -> bool:
        """Whether the node ``loc`` names no longer has object ``oid`` (gone, or freed it)."""
        if loc.node_id == self.peer_id:
            return oid not in self.store
        try:
            await self._ask_holder(loc, oid, p.FetchObject(0, oid, same_host=True))
        except ObjectLostError:
            return True
        return False

    def serve_fetch_object(self, conn: Connection, msg: p.FetchObject) -> None:
        if msg.same_host or msg.offset >= 0:
            self._serve_stored(conn, msg)
            return
        item = self.store.get(msg.object_id)
        if item is None:
            entry = self.refs.owned.get(msg.object_id)
            if entry is not None and entry.value is not None:
                item = (entry.value, list(entry.buffers))
        if item is None:
            conn.send(
                p.ObjectReply(
                    msg.rid,
                    error=ser.system_error_value(
                        ObjectLostError,
                        f"object {msg.object_id.hex()} is not in the store of {self.peer_id}",
                    ),
                )
            )
            return
        conn.send(p.ObjectReply(msg.rid, value=item[0]), item[1])

    def _serve_stored(self, conn: Connection, msg: p.FetchObject) -> None:
        oid = msg.object_id
        if msg.same_host:
            here = self.here(oid)
            if here is not None:
                conn.send(p.ObjectReply(msg.rid, value=here))
                return
        else:
            part = self.store.read(oid, msg.offset, msg.length)
            if part is not None:
                total, data = part
                self.served_bytes += data.nbytes
                _prefault(data, max(msg.offset, 0))
                value = p.Value(ser.KIND_BLOB, _encode_int(total), [data.nbytes])
                conn.send(p.ObjectReply(msg.rid, value=value), [data])
                return
        conn.send(
            p.ObjectReply(
                msg.rid,
                error=ser.system_error_value(
                    ObjectLostError, f"object {oid.hex()} is not in the store of {self.peer_id}"
                ),
            )
        )


def _prefault(data: memoryview, offset: int) -> None:
    """Fill the page tables under a chunk about to be sent (bytes ``offset``.. of a
    mapping), so the seal and the socket read it without a page fault per 4 KiB (which cost
    the holder more than the seal): the first chunks of a stream here, in one call; the
    chunk a reader will ask for next (the one ``CHUNKS_IN_FLIGHT`` chunks on, as it asks
    for one more each time one comes) in a thread, ahead of its request."""
    mem = data.obj
    n = data.nbytes
    if not isinstance(mem, mmap.mmap) or not n:
        return
    if offset < FIRST_CHUNK + CHUNKS_IN_FLIGHT * CHUNK:
        populate(mem, offset, n)
    ahead = offset + CHUNKS_IN_FLIGHT * n
    if ahead < len(mem):
        _prefaulter().submit(populate, mem, ahead, n)


def _prefaulter() -> ThreadPoolExecutor:
    global _prefault_pool
    if _prefault_pool is None:
        _prefault_pool = ThreadPoolExecutor(1, thread_name_prefix="runtime-prefault")
    return _prefault_pool


class _Stream:
    """One object being streamed here: from where, its size, where it lands."""

    __slots__ = ("conn", "landing", "loc", "oid", "sem", "total")

    def __init__(self, conn: Connection, loc: p.Located, oid: bytes) -> None:
        self.conn, self.loc, self.oid = conn, loc, oid
        self.total = -1
        self.landing: Landing | None = None
        self.sem = asyncio.Semaphore(CHUNKS_IN_FLIGHT)


def _give_back(made: asyncio.Future[Landing | None]) -> None:
    if not made.cancelled() and made.exception() is None and (landing := made.result()):
        landing.abort()


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a stream's failure seen: every reader that waited on it raised it already."""
    if not task.cancelled():
        task.exception()
