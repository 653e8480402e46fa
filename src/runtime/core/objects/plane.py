"""The object plane of a process: what it owns, what it stores, and how values are found.

The owner of an object answers for it (``GetObject``); a node that keeps a large value
(in its :class:`~runtime.core.objects.store.ObjectStore`) tells readers on its host which file to
map, and streams its bytes in chunks to readers elsewhere (``FetchObject``); reference
counts travel to owners in ``UpdateRefs``.
:class:`ObjectPlane` is a part of :class:`~runtime.core.process.worker.Worker`, kept in its own
module; every method runs on the worker's loop unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import msgspec

from ..common.context import current_task
from ..common.exceptions import NodeDiedError, ObjectLostError, OwnerDiedError, RuntimeBaseError
from ..common.threads import LoopInbox
from ..wire import protocol as p
from ..wire.transport import Connection, split_buffers
from . import blob
from . import serialization as ser
from .refs import PENDING, READY, ObjectRef, OwnedObject, ReferenceTable
from .store import ObjectStore

#: Values at least this big are kept in the object store and move on demand.
STORE_MIN: Final = 100 * 1024
#: An actor's handle token is the object ``actor id + this`` (no task id ends so).
_TOKEN_SUFFIX: Final = b"\xffhdl"
#: How often a borrower asks the owner for an object it could not read where it was.
_BORROWER_TRIES: Final = 3
#: A reader on another host fetches a stored object in chunks of this size,
CHUNK: Final = 8 << 20
#: with this many chunks in flight.
CHUNKS_IN_FLIGHT: Final = 4
_encode_int = msgspec.msgpack.Encoder().encode
_decode_int = msgspec.msgpack.Decoder(int).decode


class ObjectPlane:
    """Owned objects, the local store, and getting values (a part of Worker)."""

    # Provided by Worker.
    peer_id: str
    address: str
    loop: asyncio.AbstractEventLoop
    inbox: LoopInbox
    refs: ReferenceTable
    conns: dict[str, Connection]
    store: ObjectStore
    view: dict[str, p.NodeInfo]
    dead_peers: set[str]
    _refs_flush_armed: bool
    _closing: bool
    actor_out_of_scope: Callable[[bytes], None]  # ActorCaller's
    reconstruct: Callable[[OwnedObject], bool]  # TaskSubmitter's

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        raise NotImplementedError

    def new_id(self) -> bytes:
        raise NotImplementedError

    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection:
        raise NotImplementedError

    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    # --- reference bookkeeping ---------------------------------------------------------

    def _wake_refs(self) -> None:
        if not self._refs_flush_armed:
            self._refs_flush_armed = True
            self.inbox.post(self._arm_refs_flush)

    def _arm_refs_flush(self) -> None:
        self.loop.call_soon(self._flush_refs)

    def _flush_refs(self) -> None:
        self._refs_flush_armed = False
        outbox, freed = self.refs.take()
        for owner_id, (address, deltas) in outbox.items():
            conn = self.conns.get(owner_id)
            if conn is not None and not conn.closed:
                conn.send(p.UpdateRefs(deltas))
            elif not self._closing:
                self.spawn(self._send_refs_later(owner_id, address, deltas))
        for oid, entry in freed:
            self._release_entry(oid, entry)
        for actor_id in self.refs.take_unreferenced():
            self.actor_out_of_scope(actor_id)

    async def _send_refs_later(
        self, owner_id: str, address: str, deltas: list[tuple[bytes, int]]
    ) -> None:
        try:
            conn = await self.connect_peer(owner_id, address)
        except (OSError, RuntimeBaseError, ConnectionError):
            return  # the owner is gone: its objects went with it
        conn.send(p.UpdateRefs(deltas))

    def _release_entry(self, oid: bytes, entry: OwnedObject) -> None:
        if entry.value is not None and entry.value.refs:
            self.refs.unpin(entry.value.refs)
        loc = entry.location
        if loc is None:
            return
        if loc.node_id == self.peer_id:
            self._drop_stored(oid)
        else:
            conn = self.conns.get(loc.node_id)
            if conn is not None:
                conn.send(p.FreeObjects([oid]))
            else:
                self.spawn(self._free_remote(loc, oid))

    async def _free_remote(self, loc: p.Located, oid: bytes) -> None:
        with contextlib.suppress(OSError, RuntimeBaseError, ConnectionError):
            conn = await self.connect_peer(loc.node_id, loc.address)
            conn.send(p.FreeObjects([oid]))

    def _drop_stored(self, oid: bytes) -> None:
        value = self.store.free(oid)
        if value is not None and value.refs:
            self.refs.unpin(value.refs)

    # --- owned objects ---------------------------------------------------------------------

    def new_actor_token(self, actor_id: bytes) -> ObjectRef[Any]:
        """The token every handle of a new actor of this process holds (any thread): an
        owned object with no value, counted like any other; when nothing references it
        any more, here or elsewhere, the actor is stopped (Ray's out-of-scope actors)."""
        token = actor_token_id(actor_id)
        table = self.refs
        with table.lock:
            entry = table.owned[token] = OwnedObject()
            entry.state = READY
            table.actor_tokens[token] = actor_id
            table.local[token] = table.local.get(token, 0) + 1
        return ObjectRef.counted(token, self.peer_id, self.address, table)

    def new_owned(self, object_id: bytes) -> ObjectRef[Any]:
        """A ref to a pending object this process owns (any thread)."""
        table = self.refs
        with table.lock:
            table.owned[object_id] = OwnedObject()
            table.local[object_id] = table.local.get(object_id, 0) + 1
        return ObjectRef.counted(object_id, self.peer_id, self.address, table)

    def put(self, value: Any, *, counted: bool = True) -> ObjectRef[Any]:
        """Store ``value`` as an object owned by this process (any thread).

        A large value is written once into this process's object store (shared memory),
        where readers on this host map it; a small one stays inline in the owner's table.
        ``counted=False`` (a large call argument passed by ref): the ref returned counts
        nothing, so the object lives exactly as long as the call that pins it.
        """
        val, bufs = ser.serialize(value, copy=False)
        oid = self.new_id()
        entry = OwnedObject()
        if val.refs:
            self.refs.pin(val.refs)
        if ser.total_size(val) >= STORE_MIN:
            try:
                entry.location = self.store_value(oid, val, bufs, what=_put_label())
            except BaseException:
                if val.refs:
                    self.refs.unpin(val.refs)
                raise
        else:
            entry.value = val
            entry.buffers = ser.own_buffers(bufs)
        entry.state = READY
        with self.refs.lock:
            self.refs.owned[oid] = entry
            if not counted:
                return ObjectRef.counted(oid, self.peer_id, self.address, None)
            return ObjectRef(oid, self.peer_id, self.address)

    def resolve(self, oid: bytes, value: p.Value | p.Located, buffers: list[Any]) -> None:
        """An owned object became ready (loop)."""
        entry = self.refs.owned.get(oid)
        if entry is None:
            # Freed while pending: release what the result holds.
            if isinstance(value, p.Located):
                self._release_entry(oid, _located_entry(value))
            elif value.refs:
                self.refs.unpin(value.refs)
            return
        if entry.state == READY:
            return
        if isinstance(value, p.Located):
            entry.location = value
        else:
            entry.value = value
            entry.buffers = buffers
        entry.state = READY
        waiters, entry.waiters = entry.waiters, None
        if waiters:
            for wake in waiters:
                wake()

    # --- getting values ------------------------------------------------------------------

    async def wait_ready(self, ref: ObjectRef[Any]) -> None:
        """Wait until ``ref``'s object exists (its value may live elsewhere)."""
        entry = self.refs.owned.get(ref.id)
        if entry is not None:
            if entry.state == PENDING:
                await self._entry_ready(entry)
            return
        await self._ask_owner(ref)

    def _entry_ready(self, entry: OwnedObject) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        if entry.waiters is None:
            entry.waiters = []
        entry.waiters.append(wake)
        return fut

    def on_ready(self, object_id: bytes, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (on the loop) once the owned object is ready, or now if it is."""
        entry = self.refs.owned.get(object_id)
        if entry is None or entry.state == READY:
            wake()
            return
        if entry.waiters is None:
            entry.waiters = []
        entry.waiters.append(wake)

    async def get_async(self, ref: ObjectRef[Any]) -> Any:
        """The value of ``ref`` (raises the task's error if it failed)."""
        oid = ref.id
        entry = self.refs.owned.get(oid)
        if entry is not None:
            if entry.state == PENDING:
                await self.wait_ready(ref)
            while True:
                if entry.value is not None:
                    return ser.deserialize(entry.value, entry.buffers)
                assert entry.location is not None
                try:
                    value, bufs = await self._fetch(entry.location, oid)
                except ObjectLostError:
                    if not self.reconstruct(entry):
                        raise
                    await self.wait_ready(ref)  # made again from its lineage
                    continue
                return ser.deserialize(value, bufs)
        if ref.owner_id == self.peer_id:
            raise ObjectLostError(f"object {ref.hex()} was freed")
        value_or_loc, bufs = await self._ask_owner(ref)
        for tries_left in range(_BORROWER_TRIES - 1, -1, -1):
            if not isinstance(value_or_loc, p.Located):
                break
            fresh = value_or_loc.node_id == ref.owner_id  # the owner holds it and answered
            try:
                value, bufs = await self._fetch(value_or_loc, oid, fresh=fresh)
            except ObjectLostError:
                if not tries_left:
                    raise
                # Tell the owner: it makes the object again from its lineage (as it does
                # for its own reads), or answers why it cannot.
                value_or_loc, bufs = await self._ask_owner(ref, lost=value_or_loc)
                continue
            return ser.deserialize(value, bufs)
        assert isinstance(value_or_loc, p.Value)
        return ser.deserialize(value_or_loc, bufs)

    def try_get_local(self, ref: ObjectRef[Any]) -> tuple[bool, Any]:
        """(True, value) when the value is here and ready (any thread); raises its error."""
        entry = self.refs.owned.get(ref.id)
        if entry is None or entry.state != READY:
            return False, None
        value = entry.value
        if value is not None:
            return True, ser.deserialize(value, entry.buffers)
        loc = entry.location
        if loc is not None and loc.node_id == self.peer_id:
            item = self.store.get(ref.id)
            if item is not None:
                return True, ser.deserialize(item[0], item[1])
        return False, None

    def _here(self, oid: bytes) -> p.Located | None:
        """Where a stored object of this process is now (for a reader that maps it)."""
        entry = self.store.locate(oid)
        if entry is None:
            return None
        return p.Located(self.peer_id, self.address, entry.size, self.store.host_id, entry.path)

    async def _ask_owner(
        self, ref: ObjectRef[Any], lost: p.Located | None = None
    ) -> tuple[p.Value | p.Located, list[Any]]:
        try:
            conn = await self.connect_peer(ref.owner_id, ref.owner_address)
            reply, raw = await self.request(conn, p.GetObject(0, ref.id, lost))
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

    async def _fetch(
        self, loc: p.Located, oid: bytes, *, fresh: bool = False
    ) -> tuple[p.Value, list[Any]]:
        """The value a Located names: from this store, by mapping its file when it is on
        this host, else streamed from its node in chunks. ``fresh``: the holder itself
        just sent ``loc``."""
        if loc.node_id == self.peer_id:
            item = self.store.get(oid)
            if item is None:
                raise ObjectLostError(f"object {oid.hex()} is no longer in this node's store")
            return item
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
        return await self._fetch_chunks(loc, oid)

    def _map_segment(self, loc: p.Located, oid: bytes) -> tuple[p.Value, list[Any]]:
        """Map the holder's file; tell the holder when the mapping is gone (the last array
        over it collected), so it may reuse the file's pages for another object."""
        mem = blob.map_file(loc.segment)
        weakref.finalize(mem, self._unmapped_later, loc.node_id, loc.address, oid)
        return blob.parse(memoryview(mem), loc.segment)

    def _unmapped_later(self, node_id: str, address: str, oid: bytes) -> None:
        if self._closing:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: so is the worker
            self.inbox.post(self._send_unmapped, node_id, address, oid)

    def _send_unmapped(self, node_id: str, address: str, oid: bytes) -> None:
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            conn.send(p.Unmapped([oid]))
        elif not self._closing and node_id not in self.dead_peers:
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

    async def _fetch_chunks(self, loc: p.Located, oid: bytes) -> tuple[p.Value, list[Any]]:
        """Stream a stored object from another node into one buffer of its size (a few
        chunks in flight; the holder sends views of its mapping, nothing is copied twice)."""

        async def chunk(offset: int) -> tuple[int, memoryview]:
            reply, raw = await self._ask_holder(loc, oid, p.FetchObject(0, oid, offset, CHUNK))
            value = reply.value
            if not isinstance(value, p.Value) or value.kind != ser.KIND_BLOB:
                raise ObjectLostError(f"node {loc.node_id} sent a malformed chunk of {oid.hex()}")
            bufs, _ = split_buffers(raw, value.bufs, 0)
            return _decode_int(value.data), bufs[0]

        total, first = await chunk(0)
        dest = mmap.mmap(-1, max(total, 1))
        dest[: first.nbytes] = first
        offsets = list(range(first.nbytes, total, CHUNK))
        sem = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

        async def fill(offset: int) -> None:
            async with sem:
                _, data = await chunk(offset)
            dest[offset : offset + data.nbytes] = data

        if offsets:
            await asyncio.gather(*[fill(off) for off in offsets])
        return blob.parse(memoryview(dest), f"the copy of {oid.hex()} from {loc.node_id}")

    async def _serve_get_object(self, conn: Connection, msg: p.GetObject) -> None:
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
            await self._entry_ready(entry)
        loc = entry.location
        # A borrower could not read it there: if that holder lost it, make it again.
        lost = msg.lost is not None and loc is not None and loc.node_id == msg.lost.node_id
        if lost and loc is not None and await self._holder_lost(loc, msg.object_id):
            if not self.reconstruct(entry):
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
            await self._entry_ready(entry)
        if entry.value is not None:
            if entry.value.kind == ser.KIND_ERROR:
                conn.send(p.ObjectReply(msg.rid, error=entry.value))
            else:
                conn.send(p.ObjectReply(msg.rid, value=entry.value), entry.buffers)
        else:
            loc = entry.location
            assert loc is not None
            here = self._here(msg.object_id) if loc.node_id == self.peer_id else None
            conn.send(p.ObjectReply(msg.rid, value=here or loc))

    async def _holder_lost(self, loc: p.Located, oid: bytes) -> bool:
        """Whether the node ``loc`` names no longer has object ``oid`` (gone, or freed it)."""
        if loc.node_id == self.peer_id:
            return oid not in self.store
        try:
            await self._ask_holder(loc, oid, p.FetchObject(0, oid, same_host=True))
        except ObjectLostError:
            return True
        return False

    def _serve_fetch_object(self, conn: Connection, msg: p.FetchObject) -> None:
        if msg.same_host or msg.offset >= 0:
            self._serve_stored(conn, msg)
            return
        item = self.store.get(msg.object_id)
        if item is None:
            entry = self.refs.owned.get(msg.object_id)
            if entry is not None and entry.value is not None:
                item = (entry.value, entry.buffers)
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
            here = self._here(oid)
            if here is not None:
                conn.send(p.ObjectReply(msg.rid, value=here))
                return
        else:
            part = self.store.read(oid, msg.offset, msg.length)
            if part is not None:
                total, data = part
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

    def store_value(
        self,
        oid: bytes,
        value: p.Value,
        buffers: Sequence[Any],
        *,
        what: str | None = None,
    ) -> p.Located:
        """Keep a large value here until its owner frees it (any thread): written once into
        the object store. Raises OutOfMemoryError naming the producer when the store is full
        and nothing can be spilled (after waiting for frees, off the event loop)."""
        entry = self.store.put(
            oid,
            value,
            buffers,
            can_wait=not self.inbox.on_loop(),
            what=what or _result_label(),
        )
        return p.Located(
            self.peer_id, self.address, ser.total_size(value), self.store.host_id, entry.path
        )

    # --- listing -----------------------------------------------------------------------------

    def object_rows(self) -> dict[str, Any]:
        """What this process holds (for ``runtime list objects``): owned, stored, borrowed."""
        table = self.refs
        with table.lock:
            owned = [
                {
                    "object_id": oid.hex(),
                    "state": "ready" if e.state == READY else "pending",
                    "size": (
                        e.location.size
                        if e.location is not None
                        else ser.total_size(e.value)
                        if e.value is not None
                        else 0
                    ),
                    "stored_on": e.location.node_id if e.location is not None else "",
                    "local_refs": table.local.get(oid, 0),
                    "remote_refs": e.remote,
                }
                for oid, e in table.owned.items()
                if oid not in table.actor_tokens
            ]
            borrowed = [
                {"object_id": oid.hex(), "owner": owner, "local_refs": table.local.get(oid, 0)}
                for oid, (owner, _) in table.borrowed.items()
            ]
        return {
            "worker": self.peer_id,
            "owned": owned,
            "stored": self.store.rows(),
            "borrowed": borrowed,
            "store": self.store.stats(),
        }

    async def list_objects(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every object the live members of the cluster hold, one row per object."""
        answers = await self.ask_members(p.ListObjects, timeout)
        return merge_object_rows([self.object_rows(), *answers])

    async def ask_members(
        self, make: Callable[[int], Any], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The answers (dicts) of every other live member to the request ``make(0)``; a
        member that leaves or does not answer within ``timeout`` has none."""

        async def ask(node: p.NodeInfo) -> dict[str, Any] | None:
            try:
                async with asyncio.timeout(timeout):
                    conn = await self.connect_peer(node.node_id, node.address)
                    reply = await self.request(conn, make(0))
            except (OSError, ConnectionError, RuntimeBaseError, TimeoutError):
                return None  # gone meanwhile: it holds nothing any more
            if not isinstance(reply, p.Reply) or reply.error is not None:
                return None
            return reply.value if isinstance(reply.value, dict) else None

        members = [n for n in self.view.values() if n.alive and n.node_id != self.peer_id]
        answers = await asyncio.gather(*[ask(n) for n in members])
        return [a for a in answers if a is not None]


def actor_token_id(actor_id: bytes) -> bytes:
    """The object id of the token the handles of actor ``actor_id`` hold."""
    return actor_id + _TOKEN_SUFFIX


def _located_entry(loc: p.Located) -> OwnedObject:
    entry = OwnedObject()
    entry.location = loc
    return entry


def merge_object_rows(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per object from every member's ``object_rows()``: who owns it, where its
    bytes are (inline in the owner, or a store: memory, shm, spilled), and who holds refs."""
    rows: dict[str, dict[str, Any]] = {}

    def row(oid: str) -> dict[str, Any]:
        r = rows.get(oid)
        if r is None:
            r = rows[oid] = {
                "object_id": oid,
                "size": 0,
                "owner": "",
                "state": "",
                "where": "",
                "stored_on": "",
                "local_refs": 0,
                "remote_refs": 0,
                "borrowers": [],
                "path": "",
            }
        return r

    for a in answers:
        worker = a.get("worker", "")
        for o in a.get("owned", []):
            r = row(o["object_id"])
            r.update(owner=worker, state=o["state"], remote_refs=o["remote_refs"])
            r["size"] = r["size"] or o["size"]
            r["local_refs"] += o["local_refs"]
            if o["stored_on"]:
                r["stored_on"] = r["stored_on"] or o["stored_on"]
            elif not r["where"]:
                r["where"] = "inline" if o["state"] == "ready" else "pending"
        for st in a.get("stored", []):
            r = row(st["object_id"])
            r.update(where=st["where"], stored_on=worker, size=st["size"], path=st["path"])
        for b in a.get("borrowed", []):
            r = row(b["object_id"])
            r["owner"] = r["owner"] or b["owner"]
            r["local_refs"] += b["local_refs"]
            r["borrowers"].append(worker)
    return sorted(rows.values(), key=lambda r: (-int(r["size"]), r["object_id"]))


def _current_task_name() -> str | None:
    ctx = current_task.get()
    return ctx.name if ctx is not None else None


def _result_label() -> str:
    name = _current_task_name()
    return f"the result of task {name}" if name else "an object"


def _put_label() -> str:
    name = _current_task_name()
    return f"runtime.put() in task {name}" if name else "runtime.put()"
