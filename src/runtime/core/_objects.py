"""The object plane of a process: what it owns, what it stores, and how values are found.

The owner of an object answers for it (``GetObject``); a node that keeps a large value
serves its bytes (``FetchObject``); reference counts travel to owners in ``UpdateRefs``.
:class:`ObjectPlane` is a part of :class:`~runtime.core._worker.Worker`, kept in its own
module; every method runs on the worker's loop unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import _protocol as p
from . import _serialization as ser
from ._exceptions import NodeDiedError, ObjectLostError, OwnerDiedError, RuntimeBaseError
from ._refs import PENDING, READY, ObjectRef, OwnedObject, ReferenceTable
from ._threads import LoopInbox
from ._transport import Connection, split_buffers


class ObjectPlane:
    """Owned objects, the local store, and getting values (a part of Worker)."""

    # Provided by Worker.
    peer_id: str
    address: str
    loop: asyncio.AbstractEventLoop
    inbox: LoopInbox
    refs: ReferenceTable
    conns: dict[str, Connection]
    store: dict[bytes, tuple[p.Value, list[Any]]]
    _refs_flush_armed: bool
    _closing: bool

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        raise NotImplementedError

    def new_id(self) -> bytes:
        raise NotImplementedError

    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection:
        raise NotImplementedError

    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def reconstruct(self, entry: OwnedObject) -> bool:
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
        item = self.store.pop(oid, None)
        if item is not None and item[0].refs:
            self.refs.unpin(item[0].refs)

    # --- owned objects ---------------------------------------------------------------------

    def new_owned(self, object_id: bytes) -> ObjectRef[Any]:
        """A ref to a pending object this process owns (any thread)."""
        table = self.refs
        with table.lock:
            table.owned[object_id] = OwnedObject()
            table.local[object_id] = table.local.get(object_id, 0) + 1
        return ObjectRef.counted(object_id, self.peer_id, self.address, table)

    def put(self, value: Any) -> ObjectRef[Any]:
        """Store ``value`` as an object owned by this process (any thread)."""
        val, bufs = ser.serialize(value)
        oid = self.new_id()
        entry = OwnedObject()
        if val.refs:
            self.refs.pin(val.refs)
        entry.value = val
        entry.buffers = list(bufs)
        entry.state = READY
        with self.refs.lock:
            self.refs.owned[oid] = entry
            return ObjectRef(oid, self.peer_id, self.address)

    def _resolve(self, oid: bytes, value: p.Value | p.Located, buffers: list[Any]) -> None:
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
        if isinstance(value_or_loc, p.Located):
            value, bufs = await self._fetch(value_or_loc, oid)
            return ser.deserialize(value, bufs)
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

    async def _ask_owner(self, ref: ObjectRef[Any]) -> tuple[p.Value | p.Located, list[Any]]:
        try:
            conn = await self.connect_peer(ref.owner_id, ref.owner_address)
            reply, raw = await self.request(conn, p.GetObject(0, ref.id))
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

    async def _fetch(self, loc: p.Located, oid: bytes) -> tuple[p.Value, list[Any]]:
        if loc.node_id == self.peer_id:
            item = self.store.get(oid)
            if item is None:
                raise ObjectLostError(f"object {oid.hex()} is no longer in this node's store")
            return item
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
            reply, raw = await self.request(conn, p.FetchObject(0, oid))
        except (OSError, ConnectionError, NodeDiedError) as exc:
            raise ObjectLostError(
                f"object {oid.hex()} was on node {loc.node_id}, which is unreachable: {exc}"
            ) from None
        if reply.error is not None:
            raise ser.error_from_value(reply.error)
        value = reply.value
        assert isinstance(value, p.Value)
        bufs, _ = split_buffers(raw, value.bufs, 0)
        return value, bufs

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
        if entry.value is not None:
            if entry.value.kind == ser.KIND_ERROR:
                conn.send(p.ObjectReply(msg.rid, error=entry.value))
            else:
                conn.send(p.ObjectReply(msg.rid, value=entry.value), entry.buffers)
        else:
            loc = entry.location
            assert loc is not None
            if loc.node_id == self.peer_id and msg.object_id in self.store:
                value, bufs = self.store[msg.object_id]
                conn.send(p.ObjectReply(msg.rid, value=value), bufs)
            else:
                conn.send(p.ObjectReply(msg.rid, value=loc))

    def _serve_fetch_object(self, conn: Connection, msg: p.FetchObject) -> None:
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

    def store_value(self, oid: bytes, value: p.Value, buffers: list[Any]) -> p.Located:
        """Keep a large value here until its owner frees it (any thread)."""
        self.store[oid] = (value, buffers)
        return p.Located(self.peer_id, self.address, ser.total_size(value))


def _located_entry(loc: p.Located) -> OwnedObject:
    entry = OwnedObject()
    entry.location = loc
    return entry
