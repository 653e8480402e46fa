"""Submitting tasks: the I/O shell of :class:`~.book.TaskBook`.

What happens to a task (tried again when its node dies or it raises a retriable error, placed
again when a busy node sends it back, cancelled, run again when a result it made is lost) is
decided by the state machine in :mod:`.book`, which does no I/O. :class:`TaskSubmitter` places
each task on a node (over the cluster view), sends it, feeds the book the events (answers,
lost nodes, cancels, lost objects) and does what it says.

:class:`TaskSubmitter` is a part the worker holds; it sees the worker through
:class:`SubmitterHost`. Every method runs on the worker's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any, Protocol

from ..common.exceptions import InfeasibleError, RuntimeBaseError
from ..objects import serialization as ser
from ..objects.refs import NO_BUFFERS, OwnedObject, ReferenceTable
from ..scheduling.labels import matches
from ..scheduling.scheduler import Placer, fits, pick_node, takes_work
from ..wire import protocol as p
from ..wire.gather import Gather
from ..wire.transport import Connection, split_buffers
from .actor_calls import ActorCaller
from .book import (
    CANCEL_ACTOR,
    CANCEL_NODE,
    DONE,
    FAILED,
    RESEND,
    RETRY,
    SPILL,
    STREAM_END,
    TaskBook,
)
from .capacity import wait_for_capacity, waits_for_capacity
from .pending import PendingTask, RetryPolicy
from .streaming import StreamState

log = logging.getLogger("runtime.worker")


class SubmitterHost(Protocol):
    """What the task submitter needs of the process's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def refs(self) -> ReferenceTable: ...
    @property
    def tasks(self) -> dict[bytes, PendingTask]: ...
    @property
    def streams(self) -> dict[bytes, StreamState]: ...
    @property
    def load(self) -> dict[str, int]: ...
    @property
    def conns(self) -> dict[str, Connection]: ...
    @property
    def group_nodes(self) -> dict[bytes, list[str]]: ...
    @property
    def view(self) -> dict[str, p.NodeInfo]: ...
    @property
    def view_changed(self) -> asyncio.Event: ...
    @property
    def caller(self) -> ActorCaller: ...
    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task[Any]: ...
    async def head_request(self, msg: Any) -> Any: ...
    async def connect_peer(self, peer_id: str, address: str | None = None) -> Connection: ...
    def resolve(self, oid: bytes, value: p.Value | p.Located, buffers: list[Any]) -> None: ...


class TaskSubmitter:
    """Places, sends, retries and cancels the tasks this process submits."""

    def __init__(self, host: SubmitterHost) -> None:
        self.host = host  # its view of the nodes is replaced as it changes: read it there
        self._spread_turn = 0
        # The host's tables and methods, bound once (the per-call path looks up nothing more).
        self.loop = host.loop
        self.refs = host.refs
        self.tasks = host.tasks
        self.streams = host.streams
        self.load = host.load
        self.placer = Placer()  # pick_node, with its per-view part kept
        self.conns = host.conns
        self.group_nodes = host.group_nodes
        self.caller = host.caller
        self.spawn = host.spawn
        self.head_request = host.head_request
        self.connect_peer = host.connect_peer
        self.resolve = host.resolve
        self.book = TaskBook(
            self.tasks, self.load, self.group_nodes, self.caller.actors, self.refs.owned
        )
        #: The tasks of one loop pass to one node go in one frame (``wire.gather``).
        self.gather = Gather(p.SubmitBatch)

    def node_lost(self, peer: str, again: set[bytes]) -> None:
        """Tasks and actor calls on ``peer`` (which died) are retried or fail; ``again``: the
        actor calls the actor caller sends again after a restart."""
        for task, err in self.book.node_lost(peer, again):
            if err is None:
                self._resubmit(task)
                continue
            for oid in task.object_ids:
                self.resolve(oid, err, [])
            if task.stream is not None:
                task.stream.on_done(err)

    def on_task_done(self, conn: Connection | None, msg: p.TaskDone, raw: memoryview) -> None:
        """A task or actor call this process submitted was answered (``conn``: by whom)."""
        returns = msg.returns
        if msg.error is None and len(returns) == 1:
            task = self.tasks.get(msg.task_id)
            if (
                task is not None
                and task.actor_id is not None
                and task.stream is None
                and len(oids := task.object_ids) == 1
                and type(value := returns[0]) is p.Value
                and not value.bufs
            ):  # an actor call's one small value (nearly every answer): inline
                self.book.call_done(msg.task_id, task.actor_id)
                value.bufs = NO_BUFFERS
                if not value.refs:
                    value.refs = NO_BUFFERS
                self.resolve(oids[0], value, NO_BUFFERS)
                return
        answer = self.book.answered(msg.task_id, msg.error)
        if answer is None:
            return
        step, task = answer
        if step == DONE:
            returns = msg.returns
            oids = task.object_ids
            if (
                len(returns) == 1 == len(oids)
                and type(value := returns[0]) is p.Value
                and not value.bufs
            ):
                # One small value (most calls): kept until freed, without empty lists of its own.
                value.bufs = NO_BUFFERS
                if not value.refs:
                    value.refs = NO_BUFFERS
                self.resolve(oids[0], value, NO_BUFFERS)
                return
            offset = 0
            for oid, value in zip(oids, returns, strict=False):
                if isinstance(value, p.Value) and value.bufs:
                    bufs, offset = split_buffers(raw, value.bufs, offset)
                    self.resolve(oid, value, bufs)
                else:
                    if isinstance(value, p.Value):  # kept until freed: no empty lists of its own
                        value.bufs = value.bufs or NO_BUFFERS
                        value.refs = value.refs or NO_BUFFERS
                    self.resolve(oid, value, NO_BUFFERS)
                    if isinstance(value, p.Located):
                        self.book.keeps_lineage(task, oid)
        elif step == FAILED:
            assert msg.error is not None
            for oid in task.object_ids:
                self.resolve(oid, msg.error, [])
        elif step == RETRY:
            self._resubmit(task)
        elif step == STREAM_END:
            assert task.stream is not None
            task.stream.on_done(msg.error)
        elif step == SPILL:
            self._spill(task)
        elif step == RESEND:
            assert task.actor_id is not None
            self.caller.resend_elsewhere(self.caller.actors[task.actor_id])

    def reconstruct(self, entry: OwnedObject) -> bool:
        """Run the task that made a lost object again (lineage); False when it cannot."""
        task = self.book.object_lost(entry)
        if task is None:
            return False
        self._resubmit(task)
        return True

    # --- tasks -------------------------------------------------------------------------------

    def submit_task(
        self,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
        object_ids: Sequence[bytes],
        policy: RetryPolicy | None = None,
        *,
        stream: StreamState | None = None,
    ) -> None:
        """Send a task to the best node (loop). ``fn_blob`` pickles the function if needed."""
        if stream is not None:
            self.streams[msg.task_id] = stream
        task = self.book.submitted(msg, buffers, fn_blob, object_ids, policy, stream)
        self._place_task(task, msg, buffers, fn_blob)

    def send_to_node(self, node_id: str, msg: Any) -> None:
        """Send ``msg`` to a peer if connected (loop); dropped otherwise."""
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            conn.send(msg)

    def cancel_task(self, task_id: bytes, *, force: bool, recursive: bool) -> bool:
        """runtime.cancel (loop): the caller gets TaskCancelledError at once; the node running
        the call stops it (a queued call never runs). False when it already finished."""
        cancel = self.book.cancel(task_id)
        if cancel is None:
            return False
        where, task = cancel
        self.gather.flush()  # a call or task held for this pass goes before its cancel
        self.caller.gather.flush()
        conn: Any = None
        if where == CANCEL_ACTOR:
            assert task.actor_id is not None
            conn = self.caller.actors[task.actor_id].conn
        elif where == CANCEL_NODE:
            conn = self.conns.get(task.node_id)
            if conn is None or conn.closed:  # the task itself waits for this connection
                self.spawn(
                    self._cancel_later(task.node_id, p.CancelTask(task_id, force, recursive))
                )
        if conn is not None and not conn.closed:
            conn.send(p.CancelTask(task_id, force, recursive))
        err = self.book.cancelled_error(task)
        self.on_task_done(None, p.TaskDone(task_id, error=err), memoryview(b""))
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
                node_id = self.placer.pick(self.host.view, msg.resources, self.load)
        except RuntimeBaseError as exc:
            if waits_for_capacity(exc, msg) or self._pinned_to_unseen(msg):
                # No node of its shape now (or the node it is pinned to is not in this
                # process's view yet: views go out once per burst of joins): wait, bounded.
                self.book.waiting(task, msg.task_id)
                place = partial(self._place_task, task, msg, buffers, fn_blob)
                fail = partial(self._unplaceable, task, msg)
                self.spawn(wait_for_capacity(self.host, task, msg, exc, place=place, fail=fail))
                return
            self._unplaceable(task, msg, exc)
            return
        self.book.placed(task, msg.task_id, node_id)
        conn = self.conns.get(node_id)
        if conn is not None and not conn.closed:
            self._send_task(conn, msg, buffers, fn_blob)
        else:
            self.spawn(self._send_task_later(node_id, msg, buffers, fn_blob))

    def _pinned_to_unseen(self, msg: p.SubmitTask) -> bool:
        strategy = msg.strategy
        return (
            strategy is not None
            and strategy[0] == "node"
            and msg.bundle is None
            and msg.attempt == 0  # a retry's node was seen, and died
            and str(strategy[1]) not in self.host.view
        )

    def _pick_by_strategy(self, msg: p.SubmitTask) -> str:
        strategy = msg.strategy
        view: Iterable[p.NodeInfo] = self.host.view.values()
        if strategy[0] == "labels":  # a label selector (scheduling.labels), DEFAULT or SPREAD
            if not strategy[2]:
                return pick_node(view, msg.resources, self.load, labels=strategy[1])
            view = [n for n in view if matches(n.labels, strategy[1])]
            if not view:
                return pick_node(view, msg.resources, self.load, labels=strategy[1])  # raises
        elif strategy[0] == "node":
            node_id, soft = str(strategy[1]), bool(strategy[2])
            info = self.host.view.get(node_id)
            if info is not None and takes_work(info) and fits(msg.resources, info.resources):
                return node_id
            if not soft:
                raise InfeasibleError(
                    f"task {msg.fn_name} must run on node {node_id} (NodeAffinity, soft=False), "
                    "which is not alive or can never hold its resources"
                )
            return pick_node(self.host.view.values(), msg.resources, self.load)
        # SPREAD: round robin over the nodes that can hold it, least loaded first.
        self._spread_turn += 1
        feasible = [n.node_id for n in view if takes_work(n) and fits(msg.resources, n.resources)]
        if not feasible:
            return pick_node(view, msg.resources, self.load)  # raises
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

    def _unplaceable(self, task: PendingTask, msg: p.SubmitTask, exc: RuntimeBaseError) -> None:
        self.book.unplaceable(task, msg.task_id)
        err = ser.error_value(exc)
        for oid in task.object_ids:
            self.resolve(oid, err, [])

    def _spill(self, task: PendingTask) -> None:
        """A node sent the task back (its room was held by actors): place it again, a little
        later, once this process's view of the nodes has caught up."""
        retry = task.retry
        assert retry is not None
        if retry.msg.args.refs:
            self.refs.pin(retry.msg.args.refs)  # the node released its pins with the task
        self.loop.call_later(
            0.02 * retry.msg.spills, self._place_task, task, retry.msg, retry.buffers, retry.fn_blob
        )

    def _resubmit(self, task: PendingTask) -> None:
        """Place ``task`` again: the book spent one of its tries on a new attempt (loop)."""
        retry = task.retry
        assert retry is not None and retry.failures
        log.info("retrying task %s: %s", task.name, retry.failures[-1])
        if retry.msg.args.refs:
            self.refs.pin(retry.msg.args.refs)  # the last try released its pins, or died with them
        self._place_task(task, retry.msg, retry.buffers, retry.fn_blob)

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
        self.gather.send(conn, msg, buffers)

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
            lost = self.book.unreachable(msg.task_id, node_id, str(exc))
            if lost is not None:
                step, what = lost
                if step == RETRY:
                    self._resubmit(what)
                else:
                    self.on_task_done(None, p.TaskDone(msg.task_id, error=what), memoryview(b""))
            return
        self._send_task(conn, msg, buffers, fn_blob)


__all__ = ["SubmitterHost", "TaskSubmitter"]
