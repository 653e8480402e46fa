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
from typing import TYPE_CHECKING, Any

from ..common.exceptions import (
    ActorDiedError,
    InfeasibleError,
    NodeDiedError,
    ObjectLostError,
    RuntimeBaseError,
    TaskCancelledError,
)
from ..common.threads import LoopInbox
from ..execution.logs import print_lines
from ..objects import serialization as ser
from ..objects.plane import ObjectPlane
from ..objects.refs import (
    PENDING,
    READY,
    ObjectRef,
    OwnedObject,
    ReferenceTable,
    current_worker_or_none,
    return_id,
    set_worker,
)
from ..objects.store import ObjectStore
from ..scheduling.scheduler import fits, pick_node
from ..submission.actor_calls import ActorCaller
from ..submission.pending import (
    PendingTask,
    RetryPolicy,
    TaskRetry,
    merge_task_rows,
    owned_task_rows,
)
from ..submission.streaming import StreamState
from ..wire import protocol as p
from ..wire.admission import AdmissionControl
from ..wire.heartbeat import DetectorConfig, HeartbeatSender
from ..wire.tls import TlsConfig
from ..wire.transport import Connection, split_buffers
from .lag import LoopLagMonitor, threshold_from_env

if TYPE_CHECKING:
    from ..control.head import Head
    from ..execution.executor import Executor

log = logging.getLogger("runtime.worker")


def HEAD_RECONNECT_S() -> float:
    """How long a member keeps trying to reach a head that went away
    (``RUNTIME_HEAD_RECONNECT_S``, default 30 s); then a node stops."""
    value = os.environ.get("RUNTIME_HEAD_RECONNECT_S")
    return float(value) if value else 30.0


#: Values at least this big stay in the producer's store and move on demand.
INLINE_MAX = 100 * 1024


class Worker(ObjectPlane):
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
        #: Mesh TLS (on top of the token handshake), from the environment; None: plain TCP.
        self.tls = TlsConfig.from_env()
        self._client_ssl = self.tls.client_context() if self.tls is not None else None
        self.admission = AdmissionControl()
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
        self.store = ObjectStore(self.peer_id, state_dir)
        self.tasks: dict[bytes, PendingTask] = {}
        self.streams: dict[bytes, StreamState] = {}
        #: runtime_env packages this process shipped (by content hash), kept alive here.
        self.env_packages: dict[str, ObjectRef[Any]] = {}
        #: The runtime_env of init(), under every task and actor this process submits.
        self.job_env: dict[str, Any] = {}
        #: Where the bundles of placement groups this process submits into are (by index).
        self.group_nodes: dict[bytes, list[str]] = {}
        self._spread_turn = 0
        self.load: dict[str, int] = {}
        self._rids = itertools.count(1)
        self._rpcs: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8)
        self._server: asyncio.Server | None = None
        self.head_conn: Connection | None = None
        #: Background tasks (cancelled on close). Not a TaskGroup: one failing task must not
        #: cancel every other one, nor the task that started the worker.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.closed = asyncio.Event()
        self.executor: Executor | None = None
        self.head: Head | None = None
        self.on_head_lost: Callable[[], None] | None = None
        self.evicted = False
        self._rejoining = False
        self._info: p.NodeInfo | None = None
        self._heartbeat: HeartbeatSender | None = None
        self._lag_monitor: LoopLagMonitor | None = None
        self.started_at = time.time()
        #: The parts (each sees this worker through a protocol of what it needs).
        self.caller = ActorCaller(self)
        self.actors = self.caller.actors
        self.call_actor = self.caller.call_actor
        self.actor_state = self.caller.actor_state
        self.actor_killed = self.caller.actor_killed
        self.actor_out_of_scope = self.caller.actor_out_of_scope

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then register with the head (or become it)."""
        server_ssl = self.tls.server_context() if self.tls is not None else None
        if self._listen_sock is not None:
            self._server = await self.loop.create_server(
                self._accept, sock=self._listen_sock, ssl=server_ssl
            )
        else:
            self._server = await self.loop.create_server(
                self._accept, self.host, self.port, backlog=1024, ssl=server_ssl
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
            from ..execution.executor import Executor

            self.executor = Executor(self)
            threshold = threshold_from_env()
            if threshold > 0:
                self._lag_monitor = LoopLagMonitor(self.loop, threshold)
                self._lag_monitor.start()
        if self.role == "head":
            from ..control.head import Head

            self.head = Head(self)
            self.head.register_local(info)
            self.head_address = self.address
        else:
            assert self.head_address is not None
            conn = await self.connect_address(self.head_address)
            self.head_conn = conn
            self._info = info
            p.unwrap_reply(await self.request(conn, p.RegisterNode(0, info)))
            if not self.is_driver:
                config = DetectorConfig.from_env()
                self._heartbeat = HeartbeatSender(
                    self.peer_id, self.head_address, self.token, config.interval, tls=self.tls
                )
                self._heartbeat.start()

    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        """Run a background coroutine owned by this worker (cancelled on close). Its error,
        if nobody awaits it, is logged; it stops nothing else. RuntimeError once closed."""
        if self.closed.is_set():
            coro.close()
            raise RuntimeError("this runtime worker is closed")
        task: asyncio.Task[Any] = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and not self._closing:
            log.warning("background task %s failed: %r", task.get_name(), exc, exc_info=exc)

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
        for _ in range(3):  # tasks spawned while the others wind down are cancelled too
            tasks = [t for t in self._tasks if t is not asyncio.current_task()]
            if not tasks:
                break
            for t in tasks:
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
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
                self.resolve(oid, gone, [])
        if current_worker_or_none() is self:
            set_worker(None)
        self.store.close()
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
            admission=self.admission,
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
            # A retired incarnation: declared dead, it must rejoin as a new node. Tell it so
            # (it may never have heard: e.g. it was cut off when it was evicted).
            if self.head is not None and "#" not in peer:
                conn.send(p.Shutdown("evicted: this node was declared dead", evicted=True))
                conn.close()
            else:
                conn.abort()
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
                lambda: self._make_conn(dialer=True), host, int(port), ssl=self._client_ssl
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
        for pg_id, nodes in list(self.group_nodes.items()):
            if peer in nodes:  # its lost bundles are placed again: ask the head anew
                del self.group_nodes[pg_id]
        info = self.view.get(peer)
        if info is not None:
            info.alive = False
        again: set[bytes] = set()
        for state in self.caller.actors.values():
            if state.location is not None and state.location.node_id == peer:
                again |= self.caller.actor_node_lost(state, peer)
        for task_id, task in list(self.tasks.items()):
            if task.node_id != peer or task_id in again:
                continue
            del self.tasks[task_id]
            if task.actor_id is None:
                self.load[peer] = self.load.get(peer, 1) - 1
                if self._retry(task, f"node {peer} died while running it"):
                    continue
            if task.actor_id is not None:
                lost = self.caller.actors.get(task.actor_id)
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
                self.resolve(oid, err, [])
            if task.stream is not None:
                task.stream.on_done(err)
        if self.head is not None:
            self.head.peer_lost(peer)
        if self.executor is not None:
            self.executor.peer_lost(peer)
        if self.head_conn is not None and self.head_conn.peer_id == peer:
            self.dead_peers.discard(peer)  # the head may come back (same id, same address)
            if not self._rejoining:  # one at a time: every closed connection lands here
                log.warning("lost the connection to the head; trying to reach it again")
                self._rejoining = True
                self.spawn(self._rejoin_head())

    async def _rejoin_head(self) -> None:
        """Reconnect to a head that went away (it may be restarting), within a bound."""
        assert self.head_address is not None and self._info is not None
        deadline = time.monotonic() + HEAD_RECONNECT_S()
        try:
            while time.monotonic() < deadline and not self._closing and not self.evicted:
                try:
                    conn = await self.connect_address(self.head_address)
                    if self.executor is not None:
                        self._info.available = dict(self.executor.sched.available)
                    p.unwrap_reply(await self.request(conn, p.RegisterNode(0, self._info)))
                except ValueError as exc:
                    if "declared dead" in str(exc):  # evicted meanwhile: rejoin as a new node
                        log.warning("the head declared this node dead; rejoining with a new id")
                        self.evicted = True
                        break
                    log.debug("the head is not back yet: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                except (OSError, ConnectionError, RuntimeBaseError) as exc:
                    log.debug("the head is not back yet: %s", exc)
                    await asyncio.sleep(0.2)
                    continue
                self.head_conn = conn
                log.info("reconnected to the head at %s", self.head_address)
                return
        finally:
            self._rejoining = False
        if self.evicted:
            if self.on_head_lost is not None:
                self.on_head_lost()
            return
        if not self._closing:
            log.warning("the head did not come back within %.0f s", HEAD_RECONNECT_S())
            if self.on_head_lost is not None:
                self.on_head_lost()

    # --- requests -----------------------------------------------------------------------

    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any:
        """Send a message that carries ``rid`` and wait for its Reply/ObjectReply."""
        if conn.closed:
            who = "the head" if conn is self.head_conn else f"peer {conn.peer_id}"
            raise NodeDiedError(f"the connection to {who} is closed")
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
            assert self.head_conn is not None
            reply = await self.request(self.head_conn, msg)
        return p.unwrap_reply(reply)

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
            case p.StreamItem(task_id=task_id, index=index, value=value):
                stream = self.streams.get(task_id)
                if stream is not None:
                    bufs: list[Any] = []
                    if isinstance(value, p.Value) and value.bufs:
                        bufs, _ = split_buffers(raw, value.bufs, 0)
                    stream.conn = conn
                    stream.on_item(index, value, bufs)
                elif isinstance(value, p.Located):  # the stream was dropped: free its item
                    conn.send(p.FreeObjects([return_id(task_id, index)]))
            case p.LogLines() if self.head is None:
                if self.is_driver:
                    print_lines(msg)
            case p.StreamAck():
                if self.executor is not None:
                    self.executor.on_stream_ack(msg)
            case p.CancelTask(task_id=task_id, force=force, recursive=recursive):
                if self.executor is not None:
                    self.executor.cancel(task_id, force=force, recursive=recursive)
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
            case p.ListObjects(rid=rid):
                conn.send(p.Reply(rid, value=self.object_rows()))
            case p.ListTasks(rid=rid):
                conn.send(p.Reply(rid, value=self.task_rows()))
            case p.Unmapped(object_ids=object_ids):
                for oid in object_ids:
                    self.store.unmapped(oid)
            case p.ClusterView(nodes=nodes, departed=departed):
                self.set_view(nodes, departed)
            case p.Shutdown(reason=reason, evicted=evicted):
                log.info("shutdown requested by the head: %s", reason)
                self.evicted = evicted
                if self.on_head_lost is not None:
                    self.on_head_lost()
            case _:
                if self.head is not None:
                    self.head.on_message(conn, msg)
                elif self.executor is not None and isinstance(
                    msg, p.CreateActor | p.KillActor | p.ReserveBundles | p.ReleaseBundles
                ):
                    self.executor.on_control(conn, msg)
                else:
                    log.warning("ignoring %s from %s", type(msg).__name__, conn.peer_id)

    def task_rows(self) -> dict[str, Any]:
        """This member's part of ``runtime list tasks``: what its executor has, and the
        tasks and actor calls it submitted that are not answered yet."""
        return {
            "node_id": self.peer_id,
            "running": self.executor.task_rows() if self.executor is not None else [],
            "owned": owned_task_rows(self.tasks),
        }

    async def list_tasks(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every live task and actor call in the cluster, one row each."""
        answers = await self.ask_members(p.ListTasks, timeout)
        return merge_task_rows([self.task_rows(), *answers])

    def set_view(self, nodes: list[p.NodeInfo], departed: Sequence[str] = ()) -> None:
        for n in nodes:
            if n.node_id in self.dead_peers:
                n.alive = False  # the head has not noticed yet
        gone = [i for i in departed if i not in self.dead_peers and i != self.peer_id]
        self.view = {n.node_id: n for n in nodes}
        for peer in gone:  # left the cluster, or declared dead by the head: cut it off
            conn = self.conns.pop(peer, None)
            if conn is not None:
                conn.abort()
            if peer != self.peer_id:
                self.peer_lost(peer)
        self.view_changed.set()
        self.view_changed = asyncio.Event()

    def _on_task_done(self, msg: p.TaskDone, raw: memoryview) -> None:
        task = self.tasks.pop(msg.task_id, None)
        if task is None:
            return
        if (
            msg.error is not None
            and task.retry is not None
            and ser.system_error_class(msg.error) == "NoRoomError"
        ):
            self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
            self._spill(task)
            return
        if task.stream is not None:
            if task.actor_id is None:
                self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
            else:
                state = self.caller.actors.get(task.actor_id)
                if state is not None:
                    state.inflight.pop(msg.task_id, None)
            task.stream.on_done(msg.error)
            return
        if task.actor_id is None:
            self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
        if msg.error is not None:
            if task.retry is not None and self._retry_on_error(task, msg.error):
                return
            if task.actor_id is not None and self.caller.resend_elsewhere(task, msg):
                return
        if task.actor_id is not None:
            state = self.caller.actors.get(task.actor_id)
            if state is not None and state.inflight:
                state.inflight.pop(msg.task_id, None)
                state.retries_left.pop(msg.task_id, None)
        if msg.error is not None:
            for oid in task.object_ids:
                self.resolve(oid, msg.error, [])
            return
        offset = 0
        for oid, value in zip(task.object_ids, msg.returns, strict=False):
            if isinstance(value, p.Value) and value.bufs:
                bufs, offset = split_buffers(raw, value.bufs, offset)
                self.resolve(oid, value, bufs)
            else:
                self.resolve(oid, value, [])
                if isinstance(value, p.Located) and task.retry is not None:
                    entry = self.refs.owned.get(oid)
                    if entry is not None:  # a retriable task can make it again if it is lost
                        entry.lineage = (task.retry, task.object_ids)

    def reconstruct(self, entry: OwnedObject) -> bool:
        """Run the task that made a lost object again (lineage); False when it cannot."""
        if entry.lineage is None:
            return False
        retry, object_ids = entry.lineage
        if retry.retries_left == 0:
            return False
        for oid in object_ids:  # its sibling results come again too
            sibling = self.refs.owned.get(oid)
            if sibling is not None and sibling.state == READY and sibling.location is not None:
                sibling.state, sibling.location, sibling.lineage = PENDING, None, None
        task = PendingTask(object_ids, "", retry.msg.fn_name, retry=retry)
        return self._retry(task, "an object it made was lost with its node")

    # --- tasks -------------------------------------------------------------------------------

    def submit_task(
        self,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
        object_ids: list[bytes],
        policy: RetryPolicy | None = None,
        *,
        stream: StreamState | None = None,
    ) -> None:
        """Send a task to the best node (loop). ``fn_blob`` pickles the function if needed."""
        retry = None
        if policy is not None and stream is None:  # kept also to place it again (spills)
            retry = TaskRetry(msg, buffers, fn_blob, policy.max_retries, policy.retry_exceptions)
        if stream is not None:
            self.streams[msg.task_id] = stream
        task = PendingTask(object_ids, "", msg.fn_name, retry=retry, stream=stream)
        self._place_task(task, msg, buffers, fn_blob)

    def send_to_node(self, node_id: str, msg: Any) -> None:
        """Send ``msg`` to a peer if connected (loop); dropped otherwise."""
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            conn.send(msg)

    def cancel_task(self, task_id: bytes, *, force: bool, recursive: bool) -> bool:
        """runtime.cancel (loop): the caller gets TaskCancelledError at once; the node running
        the call stops it (a queued call never runs). False when it already finished."""
        task = self.tasks.get(task_id)
        if task is None:
            return False
        task.retry = None  # a cancelled task is never retried
        conn: Connection | None = None
        if task.actor_id is not None:
            state = self.caller.actors.get(task.actor_id)
            if state is not None:
                for i, (queued, _) in enumerate(state.queue):
                    if queued.task_id == task_id:  # not sent yet: it never will be
                        del state.queue[i]
                        break
                else:
                    conn = state.conn
                state.inflight.pop(task_id, None)
        elif task.node_id:
            conn = self.conns.get(task.node_id)
            if conn is None or conn.closed:  # the task itself waits for this connection
                self.spawn(
                    self._cancel_later(task.node_id, p.CancelTask(task_id, force, recursive))
                )
        if conn is not None and not conn.closed:
            conn.send(p.CancelTask(task_id, force, recursive))
        err = ser.system_error_value(TaskCancelledError, f"{task.name} was cancelled")
        self._on_task_done(p.TaskDone(task_id, error=err), memoryview(b""))
        return True

    async def _cancel_later(self, node_id: str, msg: p.CancelTask) -> None:
        with contextlib.suppress(OSError, ConnectionError, RuntimeBaseError):
            conn = await self.connect_peer(node_id)
            conn.send(msg)

    def _place_task(
        self,
        task: PendingTask,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
    ) -> None:
        try:
            if msg.bundle is not None:
                pg_id, index = bytes(msg.bundle[0]), int(msg.bundle[1])
                nodes = self.group_nodes.get(pg_id)
                if nodes is None:  # learn where the group is (waits until it is placed)
                    self.spawn(self._place_in_group(pg_id, task, msg, buffers, fn_blob))
                    return
                if index >= len(nodes):
                    raise InfeasibleError(
                        f"placement_group_bundle_index {index} is out of range: the group has "
                        f"{len(nodes)} bundles"
                    )
                choices = [nodes[index]] if index >= 0 else list(dict.fromkeys(nodes))
                node_id = min(choices, key=lambda n: self.load.get(n, 0))
            elif msg.strategy is not None:
                node_id = self._pick_by_strategy(msg)
            else:
                node_id = pick_node(self.view.values(), msg.resources, self.load)
        except RuntimeBaseError as exc:
            err = ser.error_value(exc)
            for oid in task.object_ids:
                self.resolve(oid, err, [])
            return
        task.node_id = node_id
        if task.stream is not None:
            task.stream.node_id = node_id
        self.tasks[msg.task_id] = task
        self.load[node_id] = self.load.get(node_id, 0) + 1
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            self._send_task(conn, msg, buffers, fn_blob)
        else:
            self.spawn(self._send_task_later(node_id, msg, buffers, fn_blob))

    def _pick_by_strategy(self, msg: p.SubmitTask) -> str:
        strategy = msg.strategy
        if strategy[0] == "node":
            node_id, soft = str(strategy[1]), bool(strategy[2])
            info = self.view.get(node_id)
            if info is not None and info.alive and fits(msg.resources, info.resources):
                return node_id
            if not soft:
                raise InfeasibleError(
                    f"task {msg.fn_name} must run on node {node_id} (NodeAffinity, soft=False), "
                    "which is not alive or can never hold its resources"
                )
            return pick_node(self.view.values(), msg.resources, self.load)
        # SPREAD: round robin over the nodes that can hold it, least loaded first.
        self._spread_turn += 1
        feasible = [
            n.node_id
            for n in self.view.values()
            if not n.is_driver and n.alive and fits(msg.resources, n.resources)
        ]
        if not feasible:
            return pick_node(self.view.values(), msg.resources, self.load)  # raises
        feasible.sort()
        turn = self._spread_turn
        return min(
            feasible,
            key=lambda n: (self.load.get(n, 0), (feasible.index(n) - turn) % len(feasible)),
        )

    async def _place_in_group(
        self,
        pg_id: bytes,
        task: PendingTask,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
    ) -> None:
        try:
            placed = await self.head_request(p.WaitPlacementGroup(0, pg_id))
            self.group_nodes[pg_id] = list(placed["nodes"])
        except (RuntimeBaseError, ValueError, OSError, ConnectionError) as exc:
            err = ser.system_error_value(
                InfeasibleError, f"task {msg.fn_name} cannot run in its placement group: {exc}"
            )
            for oid in task.object_ids:
                self.resolve(oid, err, [])
            if task.stream is not None:
                task.stream.on_done(err)
            return
        self._place_task(task, msg, buffers, fn_blob)

    def _spill(self, task: PendingTask) -> None:
        """A node sent the task back (its room was held by actors): place it again, a little
        later, once this process's view of the nodes has caught up."""
        retry = task.retry
        assert retry is not None
        retry.msg.spills += 1
        if retry.msg.args.refs:
            self.refs.pin(retry.msg.args.refs)  # the node released its pins with the task
        self.loop.call_later(
            0.02 * retry.msg.spills, self._place_task, task, retry.msg, retry.buffers, retry.fn_blob
        )

    def _retry(self, task: PendingTask, why: str) -> bool:
        """Submit ``task`` again if it has tries left (loop); False when it has none."""
        retry = task.retry
        if retry is None or retry.retries_left == 0:
            return False
        if retry.retries_left > 0:
            retry.retries_left -= 1
        retry.failures.append(why)
        retry.msg.attempt += 1  # a new try, meant to run again (not a resend of the last)
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


def _node_failure(task: PendingTask, what: str) -> p.Value:
    tries = len(task.retry.failures) + 1 if task.retry is not None else 1
    if tries > 1:
        what += f" (the task was tried {tries} times; max_retries stops it there)"
    return ser.system_error_value(NodeDiedError, what)


__all__ = ["PendingTask", "Worker"]
