"""The worker's one table from message type to handler: a message is looked up by its type
once and handed to the part that owns it (executor, task submitter, object plane, head).

Handlers take ``(conn, msg, raw)``. The executor's and the head's entries are bound when the
worker has them (:meth:`Dispatch.bind`): a node's per-call path is one lookup and one call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..common.exceptions import ActorDiedError, NodeDiedError
from ..execution.intake import take_calls
from ..execution.logs import print_lines
from ..objects import serialization as ser
from ..objects.plane import ObjectPlane
from ..objects.refs import ReferenceTable, return_id
from ..objects.store import ObjectStore
from ..submission.creations import ActorCreations
from ..submission.streaming import StreamState
from ..submission.tasks import TaskSubmitter
from ..wire import protocol as p
from ..wire.gather import NO_RAW, buffers_size, unbatch
from ..wire.transport import Connection, split_buffers
from .inspect import answer

if TYPE_CHECKING:  # imported when the worker makes them (a driver has neither)
    from ..control.head import Head
    from ..control.views import MemberView
    from ..execution.calls import Lane
    from ..execution.executor import Executor
    from ..execution.hosted import HostedActor

log = logging.getLogger("runtime.worker")

Handler = Callable[[Connection, Any, memoryview], None]


class DispatchHost(Protocol):
    """What the dispatch table needs of the worker (the worker is one)."""

    @property
    def executor(self) -> Executor | None: ...
    @property
    def head(self) -> Head | None: ...
    @property
    def is_driver(self) -> bool: ...
    @property
    def streams(self) -> dict[bytes, StreamState]: ...
    @property
    def refs(self) -> ReferenceTable: ...
    @property
    def store(self) -> ObjectStore: ...
    @property
    def objects(self) -> ObjectPlane: ...
    @property
    def submitter(self) -> TaskSubmitter: ...
    @property
    def creations(self) -> ActorCreations: ...
    @property
    def rpcs(self) -> dict[int, asyncio.Future[Any]]: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]: ...
    def set_view(self, nodes: list[p.NodeInfo], departed: Any = (), whole: bool = True) -> None: ...
    @property
    def member_view(self) -> MemberView: ...
    @property
    def view(self) -> dict[str, p.NodeInfo]: ...
    def task_rows(self) -> dict[str, Any]: ...
    def metrics_snapshot(self) -> dict[str, Any]: ...
    def on_shutdown(self, reason: str, evicted: bool) -> None: ...


class Dispatch:
    """Message type -> handler, for every message a worker receives after the handshake."""

    def __init__(self, host: DispatchHost) -> None:
        self.host = host
        self.table: dict[type, Handler] = {}
        self.bind()

    def bind(self) -> None:
        """(Re)build the table from the parts the worker has now (after start, the executor
        and the head)."""
        host = self.host
        executor = host.executor
        transfer = host.objects.transfer
        self.table = {
            p.CallActor: executor.on_call_actor if executor is not None else self._call_actor,
            p.SubmitTask: executor.on_submit_task if executor is not None else self._submit_task,
            # Answers of tasks this node relayed to a runtime_env process go back to their
            # submitters; the rest are this process's own.
            p.TaskDone: (
                executor.pools.answers(host.submitter.on_task_done)
                if executor is not None
                else host.submitter.on_task_done
            ),
            p.CallBatch: self._call_batch,
            p.SubmitBatch: self._submit_batch,
            p.DoneBatch: self._done_batch,
            p.StreamItem: self._stream_item,
            p.StreamAck: self._stream_ack,
            p.CancelTask: self._cancel,
            p.Reply: self._reply,
            p.ObjectReply: self._reply,
            p.GetObject: self._get_object,
            p.FetchObject: lambda conn, msg, raw: transfer.serve_fetch_object(conn, msg),
            p.ObjectCopied: lambda conn, msg, raw: transfer.on_copied(conn, msg),
            p.UpdateRefs: self._update_refs,
            p.FreeObjects: self._free_objects,
            p.ListObjects: lambda conn, msg, raw: conn.send(
                p.Reply(msg.rid, value=host.objects.object_rows())
            ),
            p.ListTasks: lambda conn, msg, raw: conn.send(p.Reply(msg.rid, value=host.task_rows())),
            p.ReadMetrics: lambda conn, msg, raw: conn.send(
                p.Reply(msg.rid, value=host.metrics_snapshot())
            ),
            p.Unmapped: self._unmapped,
            p.Inspect: self._inspect,
            p.ClusterView: lambda conn, msg, raw: host.member_view.receive(
                conn, msg, host.set_view, host.view
            ),
            p.Shutdown: lambda conn, msg, raw: host.on_shutdown(msg.reason, msg.evicted),
            p.ActorsPlaced: lambda conn, msg, raw: host.creations.on_placed(msg),
        }
        if host.head is None:
            self.table[p.LogLines] = self._log_lines
        if executor is not None:  # a runtime_env process's task blocks, or runs again
            self.table[p.LendResources] = lambda conn, msg, raw: executor.pools.on_lend(msg)

    def dispatch(self, conn: Connection, msg: p.Message, raw: memoryview) -> None:
        """Hand ``msg`` to its handler; what no part of this worker handles goes to the head
        (on the head), or to the executor's control handler, else it is logged and dropped."""
        handler = self.table.get(type(msg))
        if handler is not None:
            handler(conn, msg, raw)
            return
        host = self.host
        if host.head is not None:
            host.head.on_message(conn, msg)
        elif host.executor is not None and isinstance(
            msg, p.CreateActor | p.CreateActors | p.KillActor | p.ReserveBundles | p.ReleaseBundles
        ):
            host.executor.on_control(conn, msg)
        else:
            log.warning("ignoring %s from %s", type(msg).__name__, conn.peer_id)

    # --- handlers ----------------------------------------------------------------------

    def _call_actor(self, conn: Connection, msg: p.CallActor, raw: memoryview) -> None:
        executor = self.host.executor  # not bound yet (a driver, or a node still starting)
        if executor is not None:
            executor.on_call_actor(conn, msg, raw)
        else:
            error = ser.system_error_value(ActorDiedError, "a driver hosts no actors")
            conn.send(p.TaskDone(msg.task_id, error=error))

    def _submit_task(self, conn: Connection, msg: p.SubmitTask, raw: memoryview) -> None:
        executor = self.host.executor
        if executor is not None:
            executor.on_submit_task(conn, msg, raw)
        else:
            error = ser.system_error_value(NodeDiedError, "a driver does not run tasks")
            conn.send(p.TaskDone(msg.task_id, error=error))

    # Batches (``wire.gather``): each message is handed on as if it had come alone, with its
    # own slice of the frame's raw buffers, in the order it was sent.

    def _call_batch(self, conn: Connection, msg: p.CallBatch, raw: memoryview) -> None:
        executor = self.host.executor
        if executor is None:
            self._each(conn, msg.calls, raw, _args_size, self._call_actor, until_closed=True)
            return
        # The calls of a batch go into their actors' mailboxes first; each lane that got
        # calls is then pumped once (one hand-off of the whole run to its thread, not one
        # per call), in the order the lanes first got one.
        pumps: list[tuple[HostedActor, Lane]] = []
        executor.pumps = pumps
        try:
            if raw.nbytes:
                handle = self.table[p.CallActor]
                self._each(conn, msg.calls, raw, _args_size, handle, until_closed=True)
            else:  # (most batches: what an actor's calls share looked up once)
                take_calls(executor, conn, msg.calls, pumps, self.table[p.CallActor])
        finally:
            executor.pumps = None
            for actor, lane in pumps:
                actor.pump(lane)

    def _submit_batch(self, conn: Connection, msg: p.SubmitBatch, raw: memoryview) -> None:
        self._each(conn, msg.tasks, raw, _args_size, self.table[p.SubmitTask], until_closed=True)

    def _done_batch(self, conn: Connection, msg: p.DoneBatch, raw: memoryview) -> None:
        self._each(conn, msg.done, raw, _returns_size, self.table[p.TaskDone], until_closed=False)

    @staticmethod
    def _each(
        conn: Connection,
        items: Sequence[Any],
        raw: memoryview,
        size: Callable[[Any], int],
        handle: Handler,
        *,
        until_closed: bool,
    ) -> None:
        """Hand each message of a batch to its handler as if it came alone (with its own slice
        of the raw buffers); calls and tasks stop when the connection closes midway."""
        if raw.nbytes:
            unbatch(items, raw, size, lambda m, r: handle(conn, m, r), conn)
            return
        for item in items:  # no message has raw buffers (the common case)
            handle(conn, item, NO_RAW)
            if until_closed and conn.closed:
                return

    def _get_object(self, conn: Connection, msg: p.GetObject, raw: memoryview) -> None:
        self.host.spawn(self.host.objects.transfer.serve_get_object(conn, msg))

    def _stream_item(self, conn: Connection, msg: p.StreamItem, raw: memoryview) -> None:
        executor = self.host.executor
        if (
            executor is not None
            and executor.pools.relayed
            and executor.pools.forward_item(msg, raw)
        ):
            return  # from a runtime_env's process: on to the task's submitter
        stream = self.host.streams.get(msg.task_id)
        value = msg.value
        if stream is not None:
            bufs: list[Any] = []
            if isinstance(value, p.Value) and value.bufs:
                bufs, _ = split_buffers(raw, value.bufs, 0)
            stream.conn = conn
            stream.on_item(msg.index, value, bufs)
        elif isinstance(value, p.Located):  # the stream was dropped: free its item
            oid = return_id(msg.task_id, msg.index)
            if value.node_id == conn.peer_id:
                conn.send(p.FreeObjects([oid]))
            else:  # relayed from a runtime_env's process: the item is in that one's store
                self.host.spawn(self.host.objects._free_remote(value, oid))

    def _stream_ack(self, conn: Connection, msg: p.StreamAck, raw: memoryview) -> None:
        if self.host.executor is not None:
            self.host.executor.on_stream_ack(msg)

    def _cancel(self, conn: Connection, msg: p.CancelTask, raw: memoryview) -> None:
        if self.host.executor is not None:
            self.host.executor.cancel(msg.task_id, force=msg.force, recursive=msg.recursive)

    def _reply(self, conn: Connection, msg: p.Reply | p.ObjectReply, raw: memoryview) -> None:
        fut = self.host.rpcs.get(msg.rid)
        if fut is not None and not fut.done():
            fut.set_result((msg, raw) if isinstance(msg, p.ObjectReply) else msg)

    def _update_refs(self, conn: Connection, msg: p.UpdateRefs, raw: memoryview) -> None:
        for oid, delta in msg.deltas:
            self.host.refs.apply_delta(oid, delta)

    def _free_objects(self, conn: Connection, msg: p.FreeObjects, raw: memoryview) -> None:
        for oid in msg.object_ids:
            self.host.objects.drop_stored(oid)

    def _unmapped(self, conn: Connection, msg: p.Unmapped, raw: memoryview) -> None:
        for oid in msg.object_ids:
            self.host.store.unmapped(oid)

    def _inspect(self, conn: Connection, msg: p.Inspect, raw: memoryview) -> None:
        try:
            value = answer(self.host, msg.what, msg.args)
        except Exception as exc:  # a bad request, or a part that cannot answer now
            conn.send(p.Reply(msg.rid, error=str(exc), error_type=type(exc).__name__))
            return
        conn.send(p.Reply(msg.rid, value=value))

    def _log_lines(self, conn: Connection, msg: p.LogLines, raw: memoryview) -> None:
        if self.host.head is not None:  # not bound yet: the head forwards them
            self.host.head.on_message(conn, msg)
        elif self.host.is_driver:
            print_lines(msg)


def _args_size(msg: p.CallActor | p.SubmitTask) -> int:
    bufs = msg.args.bufs
    return sum(bufs) if bufs else 0


def _returns_size(msg: p.TaskDone) -> int:
    return sum(map(buffers_size, msg.returns)) if msg.returns else 0


__all__ = ["Dispatch", "DispatchHost", "Handler"]
