"""Object references and the per-process reference table that decides when objects are freed.

An :class:`ObjectRef` names an object and its owner (the process that created it).
Every process counts its live ``ObjectRef`` instances per object. A process that is
not the owner becomes a *borrower* when its first instance appears and tells the
owner (+1); when its last instance dies it tells the owner again (-1). A serialized
value that contains refs *pins* them (+1 at the owner) until whoever holds the value
releases it, so a ref in flight is never freed under it. The owner frees an object
when it has no local instance and no remote holder.

The table is plain state guarded by a lock (``__del__`` runs on any thread); the
messages it wants sent are queued in :attr:`ReferenceTable.outbox` for the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ..common.threads import LoopInbox
from ..wire.protocol import Located, Value

T = TypeVar("T")

RefTuple = tuple[bytes, str, str]


class _Context(threading.local):
    refs: list[RefTuple] | None = None


#: While a value is being pickled, ObjectRef.__reduce__ records itself here.
serialization_context = _Context()

PENDING = 0
READY = 1

#: The buffers of a value that has none, shared by every such value (a million pending
#: results must not cost a million empty lists): never mutated, only replaced.
NO_BUFFERS: list[Any] = []


def return_id(task_id: bytes, index: int) -> bytes:
    """The object id of return value ``index`` of task ``task_id``."""
    return task_id + index.to_bytes(4, "big")


class OwnedObject(msgspec.Struct, gc=False, eq=False):
    """What the owner knows of one of its objects.

    One per object a process owns, made for every call's result: a struct outside the
    cyclic collector (``gc=False``), so a pipelined caller's thousands of pending results add
    nothing to every collection's walk, and it is built in C. It must never be part of a
    reference cycle: what it holds (values, a location, lineage, waiters) does not lead back
    to it, and a waiter that gives up takes itself out (:meth:`AllReady.cancel`).
    """

    state: int = PENDING
    value: Value | None = None  # inline value or error
    #: (``()`` until it has a value: a default made without a call per object)
    buffers: Sequence[Any] = ()
    location: Located | None = None  # where a large value lives
    remote: int = 0  # pins + borrowers elsewhere (below 0 while a +1 is on its way)
    waiters: list[Callable[[], None]] | None = None
    #: How to make a lost large result again: (the task's retry record, its return ids).
    lineage: tuple[Any, Sequence[bytes]] | None = None
    #: Where the user made it (``objects.sites``; only when recording is on).
    call_site: str = ""


class ReferenceTable:
    """Counts of live refs in this process and of remote holders of owned objects."""

    def __init__(self, self_id: str, wake: Callable[[], None]) -> None:
        self.self_id = self_id
        self.lock = threading.RLock()
        self.local: dict[bytes, int] = {}
        self.owned: dict[bytes, OwnedObject] = {}
        self.borrowed: dict[bytes, tuple[str, str]] = {}
        #: owner id -> (owner address, ordered (object id, delta) list) to send.
        self.outbox: dict[str, tuple[str, list[tuple[bytes, int]]]] = {}
        #: Objects freed by the owner whose value or copies need releasing on the loop.
        self.freed: list[tuple[bytes, OwnedObject]] = []
        #: Handle tokens of the actors this process created (token object id -> actor id):
        #: a token is referenced by every handle of its actor, and by every call in flight
        #: to it, wherever they are; when it is freed, the actor is out of scope.
        self.actor_tokens: dict[bytes, bytes] = {}
        #: Actors whose token was freed, to stop on the loop.
        self.unreferenced: list[bytes] = []
        #: Objects a ref of which was pickled outside the runtime's serialization (plain
        #: ``pickle`` / ``cloudpickle`` in user code): pinned once each, as Ray does, until
        #: :meth:`release_out_of_band` (``runtime._private.internal_api.free``).
        self.out_of_band: dict[bytes, tuple[str, str]] = {}
        self._wake = wake

    # --- local instances ------------------------------------------------------------

    def add_local(self, oid: bytes, owner_id: str, owner_address: str) -> None:
        with self.lock:
            n = self.local.get(oid, 0)
            self.local[oid] = n + 1
            if n == 0 and owner_id != self.self_id:
                self.borrowed[oid] = (owner_id, owner_address)
                self._send(owner_id, owner_address, oid, 1)

    def remove_local(self, oid: bytes) -> None:
        with self.lock:  # once per ref dropped: a pipelined caller drops one per call
            local = self.local
            n = local.pop(oid, 0) - 1
            if n > 0:
                local[oid] = n
                return
            if self.borrowed:
                owner = self.borrowed.pop(oid, None)
                if owner is not None:
                    self._send(owner[0], owner[1], oid, -1)
                    return
            entry = self.owned.get(oid)
            if entry is not None and entry.remote == 0:
                if (
                    entry.location is None
                    and ((value := entry.value) is None or not value.refs)
                    and oid not in self.actor_tokens
                ):  # (what _free does then, inline: once per call's result)
                    del self.owned[oid]
                    return
                self._free(oid, entry)

    # --- remote holders (owner side) and pins -----------------------------------------

    def pin(self, refs: list[tuple[bytes, str, str]]) -> None:
        """Hold the objects ``refs`` name on behalf of a serialized value."""
        self._change(refs, 1)

    def unpin(self, refs: list[tuple[bytes, str, str]]) -> None:
        """Release what :meth:`pin` held."""
        self._change(refs, -1)

    def pin_out_of_band(self, oid: bytes, owner_id: str, owner_address: str) -> None:
        """Pin an object whose ref left the runtime's sight (pickled by user code): the
        bytes may be unpickled anywhere later, so the object stays until released."""
        with self.lock:
            if oid in self.out_of_band:
                return
            self.out_of_band[oid] = (owner_id, owner_address)
            self._change([(oid, owner_id, owner_address)], 1)

    def release_out_of_band(self, oid: bytes) -> bool:
        """Drop the pin of :meth:`pin_out_of_band`; False if there was none."""
        with self.lock:
            owner = self.out_of_band.pop(oid, None)
            if owner is None:
                return False
            self._change([(oid, *owner)], -1)
            return True

    def _change(self, refs: list[tuple[bytes, str, str]], delta: int) -> None:
        with self.lock:
            for oid, owner_id, owner_address in refs:
                if owner_id == self.self_id:
                    self.apply_delta(oid, delta)
                else:
                    self._send(owner_id, owner_address, oid, delta)

    def apply_delta(self, oid: bytes, delta: int) -> None:
        """A change to the remote holders of an owned object (from a peer or a pin)."""
        with self.lock:
            entry = self.owned.get(oid)
            if entry is None:
                return
            # Deltas travel on different connections (a pin from the node that ran a task,
            # its release by this owner once the result is in), so one can overtake another:
            # the count may dip below zero for a moment. It is not clamped (that would lose
            # the +1 still on its way and pin the object for good), and only exactly zero frees.
            entry.remote += delta
            if entry.remote == 0:
                self._maybe_free(oid)

    def _maybe_free(self, oid: bytes) -> None:
        entry = self.owned.get(oid)
        if entry is None or entry.remote != 0 or self.local.get(oid, 0) > 0:
            return
        self._free(oid, entry)

    def _free(self, oid: bytes, entry: OwnedObject) -> None:
        """Nothing holds ``entry`` any more, here or elsewhere (with the lock held)."""
        del self.owned[oid]
        actor_id = self.actor_tokens.pop(oid, None)
        if actor_id is not None:
            self.unreferenced.append(actor_id)
            self._wake()
            return
        if entry.state == PENDING:
            # Nobody can ask for it any more; drop the result when it arrives.
            return
        if entry.location is not None or (entry.value is not None and entry.value.refs):
            self.freed.append((oid, entry))
            self._wake()

    def _send(self, owner_id: str, owner_address: str, oid: bytes, delta: int) -> None:
        slot = self.outbox.get(owner_id)
        if slot is None:
            slot = self.outbox[owner_id] = (owner_address, [])
        slot[1].append((oid, delta))
        self._wake()

    def take(
        self,
    ) -> tuple[dict[str, tuple[str, list[tuple[bytes, int]]]], list[tuple[bytes, OwnedObject]]]:
        """Hand the queued messages and freed objects to the loop."""
        with self.lock:
            outbox, self.outbox = self.outbox, {}
            freed, self.freed = self.freed, []
            return outbox, freed

    def take_unreferenced(self) -> list[bytes]:
        """Hand the actors whose last handle is gone to the loop."""
        with self.lock:
            out, self.unreferenced = self.unreferenced, []
            return out


class AllReady:
    """A user's thread waiting until every one of many owned objects is ready (a blocking
    ``get`` of a list), on one lock the loop releases.

    It watches one pending object at a time: when that one is ready, the loop looks past it
    once, at the end of that pass (by then a batch of answers has resolved many), for the
    next still pending. A waiter per object (a list and a call each) cost a pipelined
    caller about as much as the rest of its bookkeeping of the answer.
    """

    __slots__ = ("_at", "_entries", "_loop", "_table", "ready")

    def __init__(
        self, table: ReferenceTable, loop: asyncio.AbstractEventLoop, entries: list[OwnedObject]
    ) -> None:
        self._table = table
        self._loop = loop
        self._entries = entries
        self._at = 0
        #: Held until every entry is ready.
        self.ready = threading.Lock()
        self.ready.acquire()

    def watch(self) -> bool:
        """Watch the next pending entry (with the table's lock held); True when none is
        left (``ready`` is then not released: nobody needs to wait)."""
        entries, i, n = self._entries, self._at, len(self._entries)
        wake = self._wake
        while i < n:
            entry = entries[i]
            if entry.state != READY:
                waiters = entry.waiters
                if waiters is None:
                    waiters = entry.waiters = []
                waiters.append(wake)
                if entry.state != READY:
                    self._at = i
                    return False
                # Made ready while this thread looked (the loop sets the state before it
                # takes the lock to call the waiters, and may have seen none): look on.
                waiters.remove(wake)
            i += 1
        self._at = n
        return True

    def cancel(self) -> None:
        """The waiting thread gave up (a timeout, an interrupt): stop watching (with the
        table's lock held), so that no entry keeps this waiter, nor it the entries."""
        entries, at = self._entries, self._at
        if at < len(entries):
            waiters = entries[at].waiters
            if waiters is not None and self._wake in waiters:
                waiters.remove(self._wake)
        self._entries = []
        self._at = 0

    def _wake(self) -> None:  # on the loop: the watched entry is ready
        if self._at == len(self._entries) - 1:  # the last one (a get of one ref): done
            self._at += 1
            self.ready.release()
            return
        self._loop.call_soon(self._next)

    def _next(self) -> None:
        with self._table.lock:
            done = self.watch()
        if done:
            self.ready.release()


class RefHost(Protocol):
    """What refs and serialization need of the process's worker (the worker is one)."""

    @property
    def refs(self) -> ReferenceTable: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def inbox(self) -> LoopInbox: ...
    def get_async(self, ref: ObjectRef[Any]) -> Coroutine[Any, Any, Any]: ...
    def put(self, value: Any, *, counted: bool = True) -> ObjectRef[Any]: ...


#: The worker of this process, set while it runs (ObjectRef needs its table in __del__).
_worker: RefHost | None = None


def set_worker(worker: RefHost | None) -> None:
    global _worker
    _worker = worker


def current_worker_or_none() -> RefHost | None:
    return _worker


def current_worker() -> RefHost:
    worker = _worker
    if worker is None:
        raise RuntimeError(
            "the runtime is not initialized: call runtime.init() (or use runtime.connect())"
        )
    return worker


class ObjectRef(Generic[T]):
    """A reference to an object in the cluster: ``await ref`` or ``runtime.get(ref)``.

    Refs are cheap to copy and pass around: passed to a task at the top level of its
    arguments, a ref is replaced by its value; nested in a container, it stays a ref.
    """

    __slots__ = ("__weakref__", "_table", "id", "owner_address", "owner_id")

    def __init__(self, object_id: bytes, owner_id: str, owner_address: str) -> None:
        self.id = object_id
        self.owner_id = owner_id
        self.owner_address = owner_address
        worker = _worker
        self._table: ReferenceTable | None = None
        if worker is not None:
            self._table = worker.refs
            worker.refs.add_local(object_id, owner_id, owner_address)

    @classmethod
    def counted(
        cls, object_id: bytes, owner_id: str, owner_address: str, table: ReferenceTable | None
    ) -> ObjectRef[Any]:
        """A ref whose local count the caller has already taken in ``table`` (None: a ref
        that counts nothing, e.g. one only serialized into a call that pins it)."""
        ref: ObjectRef[Any] = cls.__new__(cls)
        ref.id, ref.owner_id, ref.owner_address, ref._table = (
            object_id,
            owner_id,
            owner_address,
            table,
        )
        return ref

    def __del__(self) -> None:
        table = self._table
        if table is not None and (worker := _worker) is not None and worker.refs is table:
            table.remove_local(self.id)

    def hex(self) -> str:
        return self.id.hex()

    def __repr__(self) -> str:
        return f"ObjectRef({self.id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        refs = serialization_context.refs
        if refs is not None:
            refs.append((self.id, self.owner_id, self.owner_address))
        elif (worker := _worker) is not None:
            # Pickled by user code (out of band), as Ray allows by default: nothing tracks
            # where the bytes go, so the object is pinned until the owner exits or the
            # program frees it (``runtime._private.internal_api.free``).
            worker.refs.pin_out_of_band(self.id, self.owner_id, self.owner_address)
        return (ObjectRef, (self.id, self.owner_id, self.owner_address))

    def __copy__(self) -> ObjectRef[T]:
        return self  # immutable: a copy is the same ref (and pins nothing)

    def __deepcopy__(self, memo: dict[int, Any]) -> ObjectRef[T]:
        return self

    def __await__(self) -> Generator[Any, None, T]:
        worker = current_worker()
        if worker.inbox.on_loop():
            return worker.get_async(self).__await__()
        # Awaited on another event loop (e.g. a driver's own asyncio.run next to init()):
        # resolve on the runtime's loop and hand the result over.
        fut = asyncio.run_coroutine_threadsafe(worker.get_async(self), worker.loop)
        return asyncio.wrap_future(fut).__await__()

    def future(self) -> concurrent.futures.Future[T]:
        """A ``concurrent.futures.Future`` that resolves to the object's value."""
        worker = current_worker()
        return asyncio.run_coroutine_threadsafe(worker.get_async(self), worker.loop)

    def as_future(self) -> asyncio.Future[T]:
        """An ``asyncio.Future`` on the runtime's loop (use from async code on that loop)."""
        return asyncio.ensure_future(current_worker().get_async(self))
