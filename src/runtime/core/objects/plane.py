"""The object plane of a process: what it owns, what it stores, and how values are found.

The owner of an object answers for it (``GetObject``); a node that keeps a large value
(in its :class:`~runtime.core.objects.store.ObjectStore`) tells readers on its host which file to
map, and streams its bytes in chunks to readers elsewhere (``FetchObject``); reference
counts travel to owners in ``UpdateRefs``.
:class:`ObjectPlane` is a part the worker holds; it sees the worker through :class:`ObjectHost`,
and moves objects between processes with its :class:`~.transfer.ObjectTransfer`. Every
method runs on the worker's loop unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..common.context import current_task
from ..common.exceptions import ObjectLostError, RuntimeBaseError
from ..wire import protocol as p
from . import serialization as ser
from . import sites
from .host import ObjectHost
from .refs import PENDING, READY, ObjectRef, OwnedObject, ReferenceTable
from .transfer import ObjectTransfer

_new_ref = object.__new__

#: Values at least this big are kept in the object store and move on demand.
STORE_MIN: Final = 100 * 1024
#: An actor's handle token is the object ``actor id + this`` (no task id ends so).
_TOKEN_SUFFIX: Final = b"\xffhdl"
#: How often a borrower asks the owner for an object it could not read where it was.
_BORROWER_TRIES: Final = 3


class ObjectPlane:
    """Owned objects, reference counts and getting values (a part of the worker)."""

    def __init__(self, host: ObjectHost) -> None:
        self.host = host
        # The host's tables and methods, bound once (the per-call path looks up nothing more).
        self.peer_id = host.peer_id
        self.loop = host.loop
        self.inbox = host.inbox
        self.conns = host.conns
        self.store = host.store
        self.spawn = host.spawn
        self.new_id = host.new_id
        self.connect_peer = host.connect_peer
        self.request = host.request
        #: This process's address: set by the worker once it listens.
        self.address = host.address
        self.refs = ReferenceTable(self.peer_id, self._wake_refs)
        self._refs_flush_armed = False
        #: Moving objects between processes: asking owners, fetching, serving.
        self.transfer = ObjectTransfer(host, self.refs, self.entry_ready)

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
            elif not self.host.closing:
                self.spawn(self._send_refs_later(owner_id, address, deltas))
        for oid, entry in freed:
            self._release_entry(oid, entry)
        for actor_id in self.refs.take_unreferenced():
            self.host.actor_out_of_scope(actor_id)

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
        for where in [loc, *self.transfer.copies.forget(oid)]:  # the copies readers kept too
            if where.node_id == self.peer_id:
                self.drop_stored(oid)
                continue
            conn = self.conns.get(where.node_id)
            if conn is not None:
                conn.send(p.FreeObjects([oid]))
            else:
                self.spawn(self._free_remote(where, oid))

    async def _free_remote(self, loc: p.Located, oid: bytes) -> None:
        with contextlib.suppress(OSError, RuntimeBaseError, ConnectionError):
            conn = await self.connect_peer(loc.node_id, loc.address)
            conn.send(p.FreeObjects([oid]))

    def drop_stored(self, oid: bytes) -> None:
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
        entry = OwnedObject()
        if sites.RECORD:
            entry.call_site = sites.creation_site("call")
        with table.lock:
            table.owned[object_id] = entry
            table.local[object_id] = table.local.get(object_id, 0) + 1
        ref: ObjectRef[Any] = _new_ref(ObjectRef)  # ObjectRef.counted, inline: once per call
        ref.id, ref.owner_id, ref.owner_address, ref._table = (
            object_id,
            self.peer_id,
            self.address,
            table,
        )
        return ref

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
        if sites.RECORD:
            entry.call_site = sites.creation_site("put")
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
        if entry.waiters is None:
            return
        with self.refs.lock:  # a blocked thread may be adding itself (api.blocking.wait_owned)
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
                await self.entry_ready(entry)
            return
        await self.transfer.ask_owner(ref)

    def entry_ready(self, entry: OwnedObject) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        with self.refs.lock:  # as a blocked thread adds itself (api.blocking.wait_owned)
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
        with self.refs.lock:  # as a blocked thread adds itself (api.blocking.wait_owned)
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
                    value, bufs = await self.transfer.fetch(entry.location, oid)
                except ObjectLostError:
                    if not self.host.reconstruct(entry):
                        raise
                    await self.wait_ready(ref)  # made again from its lineage
                    continue
                return ser.deserialize(value, bufs)
        if ref.owner_id == self.peer_id:
            raise ObjectLostError(f"object {ref.hex()} was freed")
        value_or_loc, bufs = await self.transfer.ask_owner(ref)
        for tries_left in range(_BORROWER_TRIES - 1, -1, -1):
            if not isinstance(value_or_loc, p.Located):
                break
            fresh = value_or_loc.node_id == ref.owner_id  # the owner holds it and answered
            try:
                value, bufs = await self.transfer.fetch(
                    value_or_loc, oid, fresh=fresh, owner=(ref.owner_id, ref.owner_address)
                )
            except ObjectLostError:
                if not tries_left:
                    raise
                # Tell the owner: it makes the object again from its lineage (as it does
                # for its own reads), or answers why it cannot.
                value_or_loc, bufs = await self.transfer.ask_owner(ref, lost=value_or_loc)
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
                    "call_site": e.call_site,
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

        members = [n for n in self.host.view.values() if n.alive and n.node_id != self.peer_id]
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
                "call_site": "",
            }
        return r

    for a in answers:
        worker = a.get("worker", "")
        for o in a.get("owned", []):
            r = row(o["object_id"])
            r.update(owner=worker, state=o["state"], remote_refs=o["remote_refs"])
            r["call_site"] = o.get("call_site", "")
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
