"""The core worker: one per process (node or driver), living on that process's event loop.

It owns the peer connections, the reference table and object store of the process,
submits tasks and actor calls, answers for the objects it owns, and, on a node, runs
tasks and hosts actors (:mod:`._executor`). On the head it also runs the control
plane (:mod:`._head`). Every method here runs on the loop unless it says otherwise;
user threads reach the loop through :attr:`Worker.inbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from . import _protocol as p
from . import _serialization as ser
from ._exceptions import (
    ActorDiedError,
    NodeDiedError,
    ObjectLostError,
    OwnerDiedError,
    RuntimeBaseError,
)
from ._heartbeat import DetectorConfig, HeartbeatSender
from ._lag import LoopLagMonitor, threshold_from_env
from ._refs import (
    PENDING,
    READY,
    ObjectRef,
    OwnedObject,
    ReferenceTable,
    current_worker_or_none,
    set_worker,
)
from ._scheduler import pick_node
from ._threads import LoopInbox
from ._transport import Connection, split_buffers

if TYPE_CHECKING:
    from ._executor import Executor
    from ._head import Head

log = logging.getLogger("runtime.worker")

#: How many placements in a row a caller tries to reach a restarting actor at.
_RELOCATE_TRIES = 5
#: Values at least this big stay in the producer's store and move on demand.
INLINE_MAX = 100 * 1024


@dataclass(slots=True)
class PendingTask:
    """A task or actor call this process submitted and waits on."""

    object_ids: list[bytes]
    node_id: str
    name: str
    actor_id: bytes | None = None
    retry: TaskRetry | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A remote function's retry options."""

    max_retries: int  # -1: without limit
    retry_exceptions: bool | tuple[type[BaseException], ...]


@dataclass(slots=True)
class TaskRetry:
    """What it takes to run a task again: its message, and how many tries are left."""

    msg: p.SubmitTask
    buffers: list[memoryview]
    fn_blob: Callable[[], bytes]
    retries_left: int  # -1: without limit
    retry_exceptions: bool | tuple[type[BaseException], ...]
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ActorState:
    """What this process knows about an actor it calls: where it is, calls waiting to go."""

    actor_id: bytes
    location: p.ActorLocation | None = None
    conn: Connection | None = None
    queue: list[tuple[p.CallActor, list[memoryview]]] = field(default_factory=list)
    resolving: bool = False
    dead: p.Value | None = None  # why the actor is dead, as the error its calls get
    creating: asyncio.Future[None] | None = None
    #: Calls sent and not answered, kept while the actor's calls may be retried (in order).
    inflight: dict[bytes, tuple[p.CallActor, list[memoryview], int]] = field(default_factory=dict)
    #: Retries left of calls that were already re-sent once (else max_task_retries).
    retries_left: dict[bytes, int] = field(default_factory=dict)
    #: The restart count of the incarnation we lost: the next one must have a higher one.
    lost_restarts: int = -1

    def track(self, msg: p.CallActor, buffers: list[memoryview]) -> None:
        """Keep a sent call (and the incarnation it went to) while the actor may restart."""
        loc = self.location
        if loc is not None and loc.max_restarts != 0:
            self.inflight[msg.task_id] = (msg, buffers, loc.num_restarts)

    def requeue(self, msgs: list[tuple[p.CallActor, list[memoryview]]]) -> None:
        """Put calls to send again back in the queue, in submission order."""
        merged = sorted([*msgs, *self.queue], key=lambda item: item[0].task_id)
        self.queue[:] = merged


class Worker:
    """The per-process runtime. Create, ``await start()``, use, ``await aclose()``."""

    def __init__(
        self,
        *,
        role: str,
        token: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        listen_sock: socket.socket | None = None,
        head_address: str | None = None,
        resources: dict[str, float] | None = None,
        namespace: str = "",
        state_dir: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        assert role in ("head", "node", "driver", "client")
        self.role = role
        self.is_driver = role in ("driver", "client")
        self.token = token
        self.host = host
        self.port = port
        self._listen_sock = listen_sock
        self.head_address = head_address
        self.resources = dict(resources or {})
        self.namespace = namespace
        self.state_dir = state_dir
        self.labels = labels or {}
        self.peer_id = os.urandom(8).hex()
        self.job_id = self.peer_id if self.is_driver else ""
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.inbox = LoopInbox(self.loop)
        self.inbox.thread_id = threading.get_ident()
        self.refs = ReferenceTable(self.peer_id, self._wake_refs)
        self._refs_flush_armed = False
        self.address = ""
        self.conns: dict[str, Connection] = {}
        self._dialing: dict[str, asyncio.Future[Connection]] = {}
        self._all_conns: set[Connection] = set()
        self.view: dict[str, p.NodeInfo] = {}
        self.dead_peers: set[str] = set()
        self.view_changed = asyncio.Event()
        self.store: dict[bytes, tuple[p.Value, list[Any]]] = {}
        self.tasks: dict[bytes, PendingTask] = {}
        self.load: dict[str, int] = {}
        self.actors: dict[bytes, ActorState] = {}
        self._rids = itertools.count(1)
        self._rpcs: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8)
        self._server: asyncio.Server | None = None
        self._head_conn: Connection | None = None
        self._tg = asyncio.TaskGroup()
        self._closing = False
        self.closed = asyncio.Event()
        self.executor: Executor | None = None
        self.head: Head | None = None
        self.on_head_lost: Callable[[], None] | None = None
        self.evicted = False
        self._heartbeat: HeartbeatSender | None = None
        self._lag_monitor: LoopLagMonitor | None = None
        self.started_at = time.time()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then register with the head (or become it)."""
        await self._tg.__aenter__()
        if self._listen_sock is not None:
            self._server = await self.loop.create_server(self._accept, sock=self._listen_sock)
        else:
            self._server = await self.loop.create_server(
                self._accept, self.host, self.port, backlog=1024
            )
        sockname = self._server.sockets[0].getsockname()
        self.address = f"{sockname[0]}:{sockname[1]}"
        set_worker(self)
        info = p.NodeInfo(
            self.peer_id,
            self.address,
            self.is_driver,
            dict(self.resources),
            dict(self.resources),
            os.getpid(),
            labels=self.labels,
        )
        if not self.is_driver:
            from ._executor import Executor

            self.executor = Executor(self)
            threshold = threshold_from_env()
            if threshold > 0:
                self._lag_monitor = LoopLagMonitor(self.loop, threshold)
                self._lag_monitor.start()
        if self.role == "head":
            from ._head import Head

            self.head = Head(self)
            self.head.register_local(info)
            self.head_address = self.address
        else:
            assert self.head_address is not None
            conn = await self.connect_address(self.head_address)
            self._head_conn = conn
            unwrap_reply(await self.request(conn, p.RegisterNode(0, info)))
            if not self.is_driver:
                config = DetectorConfig.from_env()
                self._heartbeat = HeartbeatSender(
                    self.peer_id, self.head_address, self.token, config.interval
                )
                self._heartbeat.start()

    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        """Run a background coroutine owned by this worker (cancelled on close)."""
        return self._tg.create_task(coro, name=name)

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._lag_monitor is not None:
            self._lag_monitor.stop()
        if self.executor is not None:
            self.executor.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._all_conns):
            conn.close()
        for t in list(self._tg._tasks):
            t.cancel()
        with contextlib.suppress(BaseException):
            await self._tg.__aexit__(None, None, None)
        for fut in self._rpcs.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the runtime is shutting down"))
        self._rpcs.clear()
        # Whoever still waits on an object of ours gets an answer, not a hang.
        gone = ser.system_error_value(ObjectLostError, "the runtime shut down before it was ready")
        with self.refs.lock:
            owned = list(self.refs.owned.items())
        for oid, entry in owned:
            if entry.state == PENDING:
                self._resolve(oid, gone, [])
        if current_worker_or_none() is self:
            set_worker(None)
        self.closed.set()

    # --- ids ----------------------------------------------------------------------------

    def new_id(self) -> bytes:
        return self._id_prefix + next(self._ids).to_bytes(8, "big")

    # --- connections ----------------------------------------------------------------------

    def _make_conn(self, dialer: bool) -> Connection:
        conn = Connection(
            local_id=self.peer_id,
            token=self.token,
            on_message=self._on_message,
            on_close=self._on_close,
            dialer=dialer,
        )
        self._all_conns.add(conn)
        conn.authenticated.add_done_callback(self._on_authenticated)
        return conn

    def _accept(self) -> Connection:
        return self._make_conn(dialer=False)

    def _on_authenticated(self, fut: asyncio.Future[Connection]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        conn = fut.result()
        peer = conn.peer_id
        if peer is not None and peer.split("#", 1)[0] in self.dead_peers:
            conn.abort()  # a retired incarnation: declared dead, it must rejoin as a new node
            return
        if peer is not None and peer not in self.conns:
            self.conns[peer] = conn

    async def connect_address(self, address: str, peer_id: str | None = None) -> Connection:
        """Dial ``address`` (host:port) and authenticate; reuse a live connection to ``peer_id``."""
        if peer_id is not None:
            conn = self.conns.get(peer_id)
            if conn is not None and not conn.closed:
                return conn
        key = peer_id or address
        pending = self._dialing.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Connection] = self.loop.create_future()
        self._dialing[key] = fut
        try:
            host, _, port = address.rpartition(":")
            _, conn = await self.loop.create_connection(
                lambda: self._make_conn(dialer=True), host, int(port)
            )
            await conn.authenticated
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._dialing[key]

    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection:
        conn = self.conns.get(peer_id)
        if conn is not None and not conn.closed:
            return conn
        if address is None:
            info = self.view.get(peer_id)
            if info is None:
                raise NodeDiedError(f"node {peer_id} is not in the cluster")
            address = info.address
        return await self.connect_address(address, peer_id)

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self._all_conns.discard(conn)
        peer = conn.peer_id
        for rid in conn.pending:
            fut = self._rpcs.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    NodeDiedError(f"the connection to {peer} closed before it answered ({exc})")
                )
        if peer is None or self.conns.get(peer) is not conn:
            return
        del self.conns[peer]
        replacement = next((c for c in self._all_conns if c.peer_id == peer and not c.closed), None)
        if replacement is not None:
            self.conns[peer] = replacement
            return
        if self._closing:
            return
        self.peer_lost(peer)

    def peer_lost(self, peer: str) -> None:
        """Everything waiting on ``peer`` is retried or fails: its tasks, its actors' calls."""
        self.dead_peers.add(peer)  # ids never come back: a restarted node gets a new one
        info = self.view.get(peer)
        if info is not None:
            info.alive = False
        again: set[bytes] = set()
        for state in self.actors.values():
            if state.location is not None and state.location.node_id == peer:
                again |= self._actor_node_lost(state, peer)
        for task_id, task in list(self.tasks.items()):
            if task.node_id != peer or task_id in again:
                continue
            del self.tasks[task_id]
            if task.actor_id is None:
                self.load[peer] = self.load.get(peer, 1) - 1
                if self._retry(task, f"node {peer} died while running it"):
                    continue
            if task.actor_id is not None:
                lost = self.actors.get(task.actor_id)
                restarts = lost is not None and lost.lost_restarts >= 0
                err = ser.system_error_value(
                    ActorDiedError,
                    f"the actor's node {peer} died while the call {task.name} was in flight;"
                    " the call may have run"
                    + ("; the actor restarts for the calls after it" if restarts else ""),
                )
            else:
                err = _node_failure(task, f"node {peer} died while running task {task.name}")
            for oid in task.object_ids:
                self._resolve(oid, err, [])
        if self.head is not None:
            self.head.peer_lost(peer)
        if self.executor is not None:
            self.executor.peer_lost(peer)
        if self._head_conn is not None and self._head_conn.peer_id == peer:
            log.warning("lost the connection to the head")
            if self.on_head_lost is not None:
                self.on_head_lost()

    # --- requests -----------------------------------------------------------------------

    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any:
        """Send a message that carries ``rid`` and wait for its Reply/ObjectReply."""
        rid = next(self._rids)
        msg.rid = rid
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._rpcs[rid] = fut
        conn.pending.add(rid)
        conn.send(msg, buffers)
        try:
            return await fut
        finally:
            self._rpcs.pop(rid, None)
            conn.pending.discard(rid)

    async def head_request(self, msg: Any) -> Any:
        """A control-plane request; raises the error the head answered with."""
        if self.head is not None:
            reply = await self.head.handle_local(msg)
        else:
            assert self._head_conn is not None
            reply = await self.request(self._head_conn, msg)
        return unwrap_reply(reply)

    def reply(
        self, conn: Connection, rid: int, value: Any = None, error: BaseException | None = None
    ) -> None:
        if error is None:
            conn.send(p.Reply(rid, value=value))
        else:
            conn.send(p.Reply(rid, error=str(error), error_type=type(error).__name__))

    # --- dispatch -----------------------------------------------------------------------

    def _on_message(self, conn: Connection, msg: p.Message, raw: memoryview) -> None:
        match msg:
            case p.CallActor():
                if self.executor is not None:
                    self.executor.on_call_actor(conn, msg, raw)
                else:
                    conn.send(
                        p.TaskDone(
                            msg.task_id,
                            error=ser.system_error_value(
                                ActorDiedError, "a driver hosts no actors"
                            ),
                        )
                    )
            case p.TaskDone():
                self._on_task_done(msg, raw)
            case p.SubmitTask():
                if self.executor is None:
                    conn.send(
                        p.TaskDone(
                            msg.task_id,
                            error=ser.system_error_value(
                                NodeDiedError, "a driver does not run tasks"
                            ),
                        )
                    )
                else:
                    self.executor.on_submit_task(conn, msg, raw)
            case p.Reply() | p.ObjectReply():
                fut = self._rpcs.get(msg.rid)
                if fut is not None and not fut.done():
                    fut.set_result((msg, raw) if isinstance(msg, p.ObjectReply) else msg)
            case p.GetObject():
                self.spawn(self._serve_get_object(conn, msg))
            case p.FetchObject():
                self._serve_fetch_object(conn, msg)
            case p.UpdateRefs(deltas=deltas):
                for oid, delta in deltas:
                    self.refs.apply_delta(oid, delta)
            case p.FreeObjects(object_ids=object_ids):
                for oid in object_ids:
                    self._drop_stored(oid)
            case p.ClusterView(nodes=nodes):
                self._set_view(nodes)
            case p.Shutdown(reason=reason, evicted=evicted):
                log.info("shutdown requested by the head: %s", reason)
                self.evicted = evicted
                if self.on_head_lost is not None:
                    self.on_head_lost()
            case _:
                if self.head is not None:
                    self.head.on_message(conn, msg)
                elif self.executor is not None and isinstance(msg, p.CreateActor | p.KillActor):
                    self.executor.on_control(conn, msg)
                else:
                    log.warning("ignoring %s from %s", type(msg).__name__, conn.peer_id)

    def _set_view(self, nodes: list[p.NodeInfo]) -> None:
        for n in nodes:
            if n.node_id in self.dead_peers:
                n.alive = False  # the head has not noticed yet
        ids = {n.node_id for n in nodes}
        gone = [i for i in self.view if i not in ids and i not in self.dead_peers]
        self.view = {n.node_id: n for n in nodes}
        for peer in gone:  # left the cluster, or declared dead by the head: cut it off
            conn = self.conns.pop(peer, None)
            if conn is not None:
                conn.abort()
            if peer != self.peer_id:
                self.peer_lost(peer)
        self.view_changed.set()
        self.view_changed = asyncio.Event()

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

    def _on_task_done(self, msg: p.TaskDone, raw: memoryview) -> None:
        task = self.tasks.pop(msg.task_id, None)
        if task is None:
            return
        if task.actor_id is None:
            self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
        if msg.error is not None:
            if task.retry is not None and self._retry_on_error(task, msg.error):
                return
            if task.actor_id is not None and self._resend_elsewhere(task, msg):
                return
        if task.actor_id is not None:
            state = self.actors.get(task.actor_id)
            if state is not None and state.inflight:
                state.inflight.pop(msg.task_id, None)
                state.retries_left.pop(msg.task_id, None)
        if msg.error is not None:
            for oid in task.object_ids:
                self._resolve(oid, msg.error, [])
            return
        offset = 0
        for oid, value in zip(task.object_ids, msg.returns, strict=False):
            if isinstance(value, p.Value) and value.bufs:
                bufs, offset = split_buffers(raw, value.bufs, offset)
                self._resolve(oid, value, bufs)
            else:
                self._resolve(oid, value, [])

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
            if entry.value is not None:
                return ser.deserialize(entry.value, entry.buffers)
            assert entry.location is not None
            value, bufs = await self._fetch(entry.location, oid)
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

    # --- tasks -------------------------------------------------------------------------------

    def submit_task(
        self,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
        object_ids: list[bytes],
        policy: RetryPolicy | None = None,
    ) -> None:
        """Send a task to the best node (loop). ``fn_blob`` pickles the function if needed."""
        retry = None
        if policy is not None and policy.max_retries != 0:
            retry = TaskRetry(msg, buffers, fn_blob, policy.max_retries, policy.retry_exceptions)
        self._place_task(
            PendingTask(object_ids, "", msg.fn_name, retry=retry), msg, buffers, fn_blob
        )

    def _place_task(
        self,
        task: PendingTask,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
    ) -> None:
        try:
            node_id = pick_node(self.view.values(), msg.resources, self.load)
        except RuntimeBaseError as exc:
            err = ser.error_value(exc)
            for oid in task.object_ids:
                self._resolve(oid, err, [])
            return
        task.node_id = node_id
        self.tasks[msg.task_id] = task
        self.load[node_id] = self.load.get(node_id, 0) + 1
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            self._send_task(conn, msg, buffers, fn_blob)
        else:
            self.spawn(self._send_task_later(node_id, msg, buffers, fn_blob))

    def _retry(self, task: PendingTask, why: str) -> bool:
        """Submit ``task`` again if it has tries left (loop); False when it has none."""
        retry = task.retry
        if retry is None or retry.retries_left == 0:
            return False
        if retry.retries_left > 0:
            retry.retries_left -= 1
        retry.failures.append(why)
        log.info("retrying task %s: %s", task.name, why)
        if retry.msg.args.refs:
            self.refs.pin(retry.msg.args.refs)  # the last try released its pins, or died with them
        self._place_task(task, retry.msg, retry.buffers, retry.fn_blob)
        return True

    def _retry_on_error(self, task: PendingTask, error: p.Value) -> bool:
        retry = task.retry
        assert retry is not None
        allowed = retry.retry_exceptions
        if allowed is False or not ser.is_application_error(error):
            return False
        if isinstance(allowed, tuple):
            exc = ser.error_from_value(error)
            cause = getattr(exc, "cause", None)
            if not isinstance(exc, allowed) and not isinstance(cause, allowed):
                return False
        return self._retry(task, "it raised an exception and retry_exceptions allows a retry")

    def _send_task(
        self,
        conn: Connection,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
    ) -> None:
        if msg.fn_id not in conn.known_functions:
            msg.fn_blob = fn_blob()
            conn.known_functions.add(msg.fn_id)
        conn.send(msg, buffers)

    async def _send_task_later(
        self,
        node_id: str,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
    ) -> None:
        try:
            conn = await self.connect_peer(node_id)
        except (OSError, ConnectionError, RuntimeBaseError) as exc:
            task = self.tasks.get(msg.task_id)
            if task is not None and task.node_id == node_id:
                del self.tasks[msg.task_id]
                self.load[node_id] = self.load.get(node_id, 1) - 1
                if self._retry(task, f"node {node_id} could not be reached: {exc}"):
                    return
                self.tasks[msg.task_id] = task
                self.load[node_id] = self.load.get(node_id, 0) + 1
                err = _node_failure(task, f"cannot reach node {node_id}: {exc}")
                self._on_task_done(p.TaskDone(msg.task_id, error=err), memoryview(b""))
            return
        self._send_task(conn, msg, buffers, fn_blob)

    # --- actors ------------------------------------------------------------------------------

    def actor_state(self, actor_id: bytes, location: p.ActorLocation | None = None) -> ActorState:
        state = self.actors.get(actor_id)
        if state is None:
            state = self.actors[actor_id] = ActorState(actor_id, location)
        elif location is not None and state.location is None:
            state.location = location
        return state

    def call_actor(
        self, msg: p.CallActor, buffers: list[memoryview], object_ids: list[bytes]
    ) -> None:
        """Send an actor call, keeping this caller's order (loop)."""
        state = self.actor_state(msg.actor_id)
        if state.dead is not None:
            err = state.dead
            for oid in object_ids:
                self._resolve(oid, err, [])
            return
        node_id = state.location.node_id if state.location is not None else ""
        self.tasks[msg.task_id] = PendingTask(object_ids, node_id, msg.method, msg.actor_id)
        conn = state.conn
        if conn is not None and not conn.closed and not state.queue:
            msg.actor_id = state.actor_id
            state.track(msg, buffers)
            conn.send(msg, buffers)
            return
        state.queue.append((msg, buffers))
        if not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))

    async def _resolve_actor(self, state: ActorState) -> None:
        try:
            if state.creating is not None:
                await state.creating
            conn = None
            for _ in range(_RELOCATE_TRIES):
                conn = await self._locate_actor(state)
                if conn is not None or state.dead is not None:
                    break
            if state.dead is None and conn is None:
                state.dead = ser.system_error_value(
                    ActorDiedError, "the actor could not be reached after its restarts"
                )
            if state.dead is not None:
                self._fail_queued(state, state.dead)
                return
            assert conn is not None and state.location is not None
            state.conn = conn
            queue, state.queue = state.queue, []
            for msg, buffers in queue:
                msg.actor_id = state.actor_id
                task = self.tasks.get(msg.task_id)
                if task is not None:
                    task.node_id = state.location.node_id
                state.track(msg, buffers)
                conn.send(msg, buffers)
        except (OSError, ConnectionError, RuntimeBaseError) as exc:
            reason = (
                str(exc)
                if isinstance(exc, ActorDiedError)
                else f"the actor cannot be reached: {exc}"
            )
            state.dead = ser.system_error_value(ActorDiedError, reason)
            self._fail_queued(state, state.dead)
        finally:
            state.resolving = False

    async def _locate_actor(self, state: ActorState) -> Connection | None:
        """Ask the head where the actor is (waiting while it is placed or restarted) and
        connect; None when that node cannot be reached (it may be restarting elsewhere)."""
        while state.dead is None and (
            state.location is None
            or state.location.state == "PENDING"
            or state.location.num_restarts <= state.lost_restarts
        ):
            lost = state.lost_restarts
            raw = await self.head_request(p.GetActor(0, "", "", state.actor_id, True, lost))
            state.location = msgspec.convert(raw, p.ActorLocation)
            if state.location.state == "ALIVE" and state.location.num_restarts <= lost:
                state.dead = ser.system_error_value(
                    ActorDiedError, "the actor was lost and did not come back in time"
                )
        loc = state.location
        if state.dead is None and loc is not None and loc.state == "DEAD":
            state.dead = loc.death_error or ser.system_error_value(
                ActorDiedError, loc.death_cause or "the actor is dead"
            )
        if state.dead is not None:
            return None
        assert loc is not None
        try:
            conn = await self.connect_peer(loc.node_id, loc.address)
        except (OSError, ConnectionError, NodeDiedError):
            if loc.max_restarts == 0:
                raise
            state.lost_restarts, state.location = loc.num_restarts, None
            return None
        return conn

    def _resend_elsewhere(self, task: PendingTask, done: p.TaskDone) -> bool:
        """A call reached a node its actor had left for a restart: it did not run, so send
        it again to the actor's next placement."""
        assert done.error is not None and task.actor_id is not None
        if ser.system_error_class(done.error) != "ActorUnavailableError":
            return False
        state = self.actors.get(task.actor_id)
        entry = state.inflight.pop(done.task_id, None) if state is not None else None
        if state is None or entry is None:
            return False
        msg, buffers, incarnation = entry
        self.tasks[done.task_id] = task
        state.requeue([(msg, buffers)])
        loc = state.location
        if loc is not None and loc.num_restarts <= incarnation:
            state.location, state.conn, state.lost_restarts = None, None, incarnation
        if not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))
        return True

    def _actor_node_lost(self, state: ActorState, peer: str) -> set[bytes]:
        """The node hosting an actor we call died. Returns the calls that go again (once it
        restarts elsewhere); the others in flight fail."""
        loc = state.location
        state.conn = None
        if loc is None or loc.max_restarts == 0:
            state.dead = ser.system_error_value(ActorDiedError, f"the actor's node {peer} died")
            return set()
        # It restarts elsewhere: calls with retries left go again, first and in order.
        again: list[tuple[p.CallActor, list[memoryview]]] = []
        for task_id in sorted(state.inflight):  # ids grow with submission order
            msg, buffers, _ = state.inflight.pop(task_id)
            left = state.retries_left.pop(task_id, loc.max_task_retries)
            if left == 0 or task_id not in self.tasks:
                continue
            state.retries_left[task_id] = left - 1 if left > 0 else left
            again.append((msg, buffers))
        state.requeue(again)
        state.location, state.lost_restarts = None, loc.num_restarts
        if state.queue and not state.resolving:
            state.resolving = True
            self.spawn(self._resolve_actor(state))
        return {msg.task_id for msg, _ in again}

    def _fail_queued(self, state: ActorState, err: p.Value) -> None:
        queue, state.queue = state.queue, []
        for msg, _ in queue:
            task = self.tasks.pop(msg.task_id, None)
            if task is not None:
                for oid in task.object_ids:
                    self._resolve(oid, err, [])


def _node_failure(task: PendingTask, what: str) -> p.Value:
    tries = len(task.retry.failures) + 1 if task.retry is not None else 1
    if tries > 1:
        what += f" (the task was tried {tries} times; max_retries stops it there)"
    return ser.system_error_value(NodeDiedError, what)


def unwrap_reply(reply: p.Reply) -> Any:
    """The value of a Reply, or the error it carries raised with its original type."""
    if reply.error is None:
        return reply.value
    from . import _exceptions as exc_mod

    cls = getattr(exc_mod, reply.error_type or "", None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        raise cls(reply.error)
    if reply.error_type in ("ValueError", "TypeError", "KeyError"):
        raise {"ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError}[
            reply.error_type
        ](reply.error)
    raise RuntimeBaseError(f"{reply.error_type}: {reply.error}")


def _located_entry(loc: p.Located) -> OwnedObject:
    entry = OwnedObject()
    entry.location = loc
    return entry


__all__ = ["PendingTask", "Worker", "unwrap_reply"]
