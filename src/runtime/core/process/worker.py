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
from functools import partial
from typing import TYPE_CHECKING, Any

from ..common.errors import error_code
from ..common.exceptions import (
    NodeDiedError,
    NodeRetiredError,
    ObjectLostError,
    RuntimeBaseError,
)
from ..common.threads import LoopInbox
from ..control.views import MemberView
from ..control.views import merge as merge_view
from ..objects import serialization as ser
from ..objects.plane import ObjectPlane
from ..objects.refs import (
    PENDING,
    ObjectRef,
    current_worker_or_none,
    set_worker,
)
from ..objects.store import ObjectStore
from ..submission.actor_calls import ActorCaller
from ..submission.creations import ActorCreations
from ..submission.pending import (
    PendingTask,
    merge_task_rows,
    owned_task_rows,
)
from ..submission.streaming import StreamState
from ..submission.tasks import TaskSubmitter
from ..wire import protocol as p
from ..wire.admission import AdmissionControl
from ..wire.heartbeat import DetectorConfig, HeartbeatSender
from ..wire.tls import TlsConfig
from ..wire.transport import Connection
from .dispatch import Dispatch
from .lag import LoopLagMonitor, threshold_from_env
from .metrics import snapshot as metrics_snapshot
from .tunnel import Tunnel

if TYPE_CHECKING:
    from ..control.head import Head
    from ..execution.executor import Executor

log = logging.getLogger("runtime.worker")
#: How long a member waits for its view to show a node another member named (seconds).
VIEW_WAIT_S = 2.0


def HEAD_RECONNECT_S() -> float:
    """How long a member keeps trying to reach a head that went away
    (``RUNTIME_HEAD_RECONNECT_S``, default 30 s); then a node stops."""
    value = os.environ.get("RUNTIME_HEAD_RECONNECT_S")
    return float(value) if value else 30.0


#: Values at least this big stay in the producer's store and move on demand.
INLINE_MAX = 100 * 1024


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
        host_share: tuple[str, str | None, float] = ("", None, 0.0),
        advertise: str | None = None,
        tunnel: Tunnel | None = None,
    ) -> None:
        assert role in ("head", "node", "driver", "client")
        #: (host id, path of the host's shared ledger, CPU slot): see scheduling.host.
        self.host_id, self.host_ledger, self.slot = host_share
        self.role = role
        #: Mesh TLS (on top of the token handshake), from the environment; None: plain TCP.
        self.tls = TlsConfig.from_env()
        self._client_ssl = self.tls.client_context() if self.tls is not None else None
        self.admission = AdmissionControl()
        self.is_driver = role in ("driver", "client")
        self.token = token
        self.host = host
        self.port = port
        #: The host others dial this member at, when not the one it listens on.
        self.advertise = advertise
        #: A remote driver's way in through the head's client port (core.client); None: direct.
        self.tunnel = tunnel
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
        self.address = ""
        self.conns: dict[str, Connection] = {}
        self._dialing: dict[str, asyncio.Future[Connection]] = {}
        self._all_conns: set[Connection] = set()
        #: peer -> its authenticated connections (a closed one's replacement is found here,
        #: not by a scan of every connection: a head of 2,000 members scanned on each leave).
        self._peer_conns: dict[str, set[Connection]] = {}
        self.view: dict[str, p.NodeInfo] = {}
        self.dead_peers: set[str] = set()
        self.view_changed = asyncio.Event()
        #: The version of the head's view this member holds (deltas apply on top of it).
        self.member_view = MemberView()
        self.store = ObjectStore(self.peer_id, state_dir)
        self.tasks: dict[bytes, PendingTask] = {}
        self.streams: dict[bytes, StreamState] = {}
        #: runtime_env packages this process shipped (by content hash), kept alive here.
        self.env_packages: dict[str, ObjectRef[Any]] = {}
        #: The runtime_env of init(), under every task and actor this process submits.
        self.job_env: dict[str, Any] = {}
        #: Where the bundles of placement groups this process submits into are (by index).
        self.group_nodes: dict[bytes, list[str]] = {}
        self.load: dict[str, int] = {}
        self._rids = itertools.count(1)
        self.rpcs: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8)
        self._server: asyncio.Server | None = None
        self.head_conn: Connection | None = None
        #: Background tasks (cancelled on close). Not a TaskGroup: one failing task must not
        #: cancel every other one, nor the task that started the worker.
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.closed = asyncio.Event()
        self.executor: Executor | None = None
        self.head: Head | None = None
        self.on_head_lost: Callable[[], None] | None = None
        self.evicted = False
        self._rejoining = False
        self._info: p.NodeInfo | None = None
        self._heartbeat: HeartbeatSender | None = None
        self.lag_monitor: LoopLagMonitor | None = None
        self.started_at = time.time()
        #: The parts (each sees this worker through a protocol of what it needs), and the
        #: methods of theirs others call on the worker, bound once.
        self.objects = ObjectPlane(self)
        self.refs = self.objects.refs
        self.put = self.objects.put
        self.get_async = self.objects.get_async
        self.new_owned = self.objects.new_owned
        self.new_actor_token = self.objects.new_actor_token
        self.resolve = self.objects.resolve
        self.store_value = self.objects.store_value
        self.wait_ready = self.objects.wait_ready
        self.on_ready = self.objects.on_ready
        self.try_get_local = self.objects.try_get_local
        self.list_objects = self.objects.list_objects
        self.metrics_snapshot = partial(metrics_snapshot, self)  # this process's metrics
        self.ask_members = self.objects.ask_members
        self.caller = ActorCaller(self)
        self.actors = self.caller.actors
        self.call_actor = self.caller.call_actor
        self.actor_state = self.caller.actor_state
        self.actor_killed = self.caller.actor_killed
        self.actor_out_of_scope = self.caller.actor_out_of_scope
        self.creations = ActorCreations(self)  # actors created here, asked of the head together
        self.submitter = TaskSubmitter(self)
        self.submit_task = self.submitter.submit_task
        self.cancel_task = self.submitter.cancel_task
        self.reconstruct = self.submitter.reconstruct
        self.dispatch = Dispatch(self)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then register with the head (or become it)."""
        server_ssl = self.tls.server_context() if self.tls is not None else None
        if self.tunnel is not None:  # a remote driver: members reach it through the head
            self.address = self.tunnel.address
            self.tunnel.serve(self.adopt)
        else:
            if self._listen_sock is not None:
                self._server = await self.loop.create_server(
                    self._accept, sock=self._listen_sock, ssl=server_ssl
                )
            else:
                self._server = await self.loop.create_server(
                    self._accept, self.host, self.port, backlog=1024, ssl=server_ssl
                )
            sockname = self._server.sockets[0].getsockname()
            self.address = f"{self.advertise or sockname[0]}:{sockname[1]}"
        self.objects.address = self.address
        set_worker(self)
        info = p.NodeInfo(
            self.peer_id,
            self.address,
            self.is_driver,
            dict(self.resources),
            dict(self.resources),
            os.getpid(),
            labels=self.labels,
            host_id=self.host_id,
            slot=self.slot,
        )
        if not self.is_driver:
            from ..execution.executor import Executor

            self.executor = Executor(self)
            threshold = threshold_from_env()
            if threshold > 0:
                self.lag_monitor = LoopLagMonitor(self.loop, threshold)
                self.lag_monitor.start()
        self.dispatch.bind()  # the executor's handlers, now that it exists
        if self.role == "head":
            from ..control.head import Head

            self.head = Head(self)
            self.head.register_local(info)
            self.head_address = self.address
            self.dispatch.bind()  # the head takes what no part here handles
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
        if not task.cancelled() and (exc := task.exception()) is not None and not self.closing:
            log.warning("background task %s failed: %r", task.get_name(), exc, exc_info=exc)

    async def aclose(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.lag_monitor is not None:
            self.lag_monitor.stop()
        if self.executor is not None:
            self.executor.close()
        if self._server is not None:
            self._server.close()
        if self.tunnel is not None:
            self.tunnel.close()
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
        for fut in self.rpcs.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the runtime is shutting down"))
        self.rpcs.clear()
        # Whoever still waits on an object of ours gets an answer, not a hang.
        gone = ser.system_error_value(ObjectLostError, "the runtime shut down before it was ready")
        with self.refs.lock:
            owned = list(self.refs.owned.items())
        for oid, entry in owned:
            if entry.state == PENDING:
                self.resolve(oid, gone, [])
        self.tasks.clear()  # (records outside the cyclic collector: submission.pending)
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
            on_message=self.dispatch.dispatch,
            on_close=self._on_close,
            dialer=dialer,
            admission=self.admission,
            integrity=self.tls is None,  # TLS protects the frames already
        )
        self._all_conns.add(conn)
        conn.authenticated.add_done_callback(self._on_authenticated)
        return conn

    def _accept(self) -> Connection:
        return self._make_conn(dialer=False)

    async def adopt(self, sock: socket.socket) -> None:
        """Take a connection a member opened to this process through its tunnel."""
        server_ssl = self.tls.server_context() if self.tls is not None else None
        await self.loop.connect_accepted_socket(self._accept, sock, ssl=server_ssl)

    def _on_authenticated(self, fut: asyncio.Future[Connection]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        conn = fut.result()
        peer = conn.peer_id
        if conn.closed:  # closed before this ran: its close found nothing to undo
            return
        if peer is not None and peer.split("#", 1)[0] in self.dead_peers:
            # A retired incarnation: declared dead, it must rejoin as a new node. Tell it so
            # (it may never have heard: e.g. it was cut off when it was evicted).
            if self.head is not None and "#" not in peer:
                conn.send(p.Shutdown("evicted: this node was declared dead", evicted=True))
                conn.close()
            else:
                conn.abort()
            return
        if peer is not None:
            self._peer_conns.setdefault(peer, set()).add(conn)
            if peer not in self.conns:
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
            if self.tunnel is not None:  # through the head's client relay (names unchecked)
                sock = await self.tunnel.dial(host, int(port))
                _, conn = await self.loop.create_connection(
                    lambda: self._make_conn(dialer=True),
                    sock=sock,
                    ssl=self._client_ssl,
                    server_hostname=host if self._client_ssl is not None else None,
                )
            else:
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
            # Another member may know of a node before this one's view does (the head sends
            # views once per burst of joins): wait for the next view, bounded.
            deadline = self.loop.time() + VIEW_WAIT_S
            while info is None and peer_id not in self.dead_peers:
                if (left := deadline - self.loop.time()) <= 0:
                    break
                changed = self.view_changed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await changed.wait()
                info = self.view.get(peer_id)
            if info is None:
                raise NodeDiedError(f"node {peer_id} is not in the cluster")
            address = info.address
        return await self.connect_address(address, peer_id)

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self._all_conns.discard(conn)
        peer = conn.peer_id
        who = f"the head ({peer})" if conn is self.head_conn else str(peer)
        for rid in conn.pending:
            fut = self.rpcs.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_exception(
                    NodeDiedError(f"the connection to {who} closed before it answered ({exc})")
                )
        others = self._peer_conns.get(peer) if peer is not None else None
        if others is not None:
            others.discard(conn)
            if not others:
                del self._peer_conns[peer]  # type: ignore[arg-type]
        if peer is None or self.conns.get(peer) is not conn:
            return
        del self.conns[peer]
        replacement = next((c for c in others or () if not c.closed), None)
        if replacement is not None:
            self.conns[peer] = replacement
            return
        if self.closing:
            return
        self.peer_lost(peer)

    def peer_lost(self, peer: str) -> None:
        """Everything waiting on ``peer`` is retried or fails: its tasks, its actors' calls."""
        self.dead_peers.add(peer)  # ids never come back: a restarted node gets a new one
        info = self.view.get(peer)
        if info is not None:
            info.alive = False
        again: set[bytes] = set()
        for state in self.caller.actors.values():
            if state.location is not None and state.location.node_id == peer:
                again |= self.caller.actor_node_lost(state, peer)
        self.submitter.node_lost(peer, again)
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
            while time.monotonic() < deadline and not self.closing and not self.evicted:
                try:
                    conn = await self.connect_address(self.head_address)
                    if self.executor is not None:
                        self._info.available = dict(self.executor.sched.available)
                    p.unwrap_reply(await self.request(conn, p.RegisterNode(0, self._info)))
                except NodeRetiredError:  # evicted meanwhile: rejoin as a new node
                    log.warning("the head declared this node dead; rejoining with a new id")
                    self.evicted = True
                    break
                except ValueError as exc:
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
        if not self.closing:
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
        self.rpcs[rid] = fut
        conn.pending.add(rid)
        conn.send(msg, buffers)
        try:
            return await fut
        finally:
            self.rpcs.pop(rid, None)
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
            conn.send(
                p.Reply(
                    rid,
                    error=str(error),
                    error_type=type(error).__name__,
                    code=error_code(type(error)),
                )
            )

    # --- dispatch -----------------------------------------------------------------------

    def on_shutdown(self, reason: str, evicted: bool) -> None:
        """The head told this member to stop (``evicted``: it was declared dead)."""
        log.info("shutdown requested by the head: %s", reason)
        self.evicted = evicted
        if self.on_head_lost is not None:
            self.on_head_lost()

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

    def set_view(
        self, nodes: list[p.NodeInfo], departed: Sequence[str] = (), whole: bool = True
    ) -> None:
        """The head's view: ``whole``, or a delta (``nodes`` changed, ``departed`` left)."""
        for n in nodes:
            if n.node_id in self.dead_peers:
                n.alive = False  # the head has not noticed yet
        gone = [i for i in departed if i not in self.dead_peers and i != self.peer_id]
        # A new dict each time: other threads read the view (runtime.nodes()).
        self.view = merge_view({} if whole else dict(self.view), nodes, departed, whole)
        for peer in gone:  # left the cluster, or declared dead by the head: cut it off
            conn = self.conns.pop(peer, None)
            if conn is not None:
                conn.abort()
            if peer != self.peer_id:
                self.peer_lost(peer)
        self.view_changed.set()
        self.view_changed = asyncio.Event()


__all__ = ["PendingTask", "Worker"]
