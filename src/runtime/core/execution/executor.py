"""Running work on a node: tasks under the node's resource ledger, and hosted actors.

``async def`` functions and methods run on the node's loop; plain ``def`` ones run on
threads (one thread per actor unless ``max_concurrency`` > 1), so a blocking call never
stalls the loop. An actor runs the calls it receives in arrival order, which keeps every
caller's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import threading
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ..common.context import TaskContext, current_task
from ..common.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    InfeasibleError,
    PendingCallsLimitExceeded,
    RuntimeBaseError,
    SerializationError,
    TaskCancelledError,
)
from ..common.threads import LoopInbox, ThreadPool
from ..objects import serialization as ser
from ..objects.refs import ObjectRef, ReferenceTable, return_id
from ..scheduling.scheduler import LocalScheduler, fits
from ..wire import protocol as p
from ..wire.transport import Connection, split_buffers
from .runtime_env import EnvManager, Prepared

if TYPE_CHECKING:
    from ..control.head import Head


class ExecutionHost(Protocol):
    """What the executor and its hosted actors need of the node's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def inbox(self) -> LoopInbox: ...
    @property
    def refs(self) -> ReferenceTable: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def resources(self) -> dict[str, float]: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def env_packages(self) -> dict[str, ObjectRef[Any]]: ...
    @property
    def head(self) -> Head | None: ...
    @property
    def head_conn(self) -> Connection | None: ...
    @property
    def executor(self) -> Executor | None: ...
    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]: ...
    def reply(
        self, conn: Connection, rid: int, value: Any = None, error: BaseException | None = None
    ) -> None: ...
    def store_value(
        self, oid: bytes, value: p.Value, buffers: Sequence[Any], *, what: str | None = None
    ) -> p.Located: ...
    def put(self, value: Any, *, counted: bool = True) -> ObjectRef[Any]: ...
    async def get_async(self, ref: ObjectRef[Any]) -> Any: ...
    def cancel_task(self, task_id: bytes, *, force: bool, recursive: bool) -> bool: ...


log = logging.getLogger("runtime.executor")

INLINE_MAX = 100 * 1024
_MAX_TOMBSTONES = 10_000
#: Answers of finished calls kept to answer a resent call (same task id) without running it.
_MAX_ANSWERED = 4096
#: How often a task may be sent back to be placed elsewhere before it waits where it is.
_MAX_SPILLS = 3
#: Only answers this small are kept (larger ones are Located: small anyway).
_ANSWER_KEEP_BYTES = 16 * 1024


class StreamControl:
    """The producer's side of a streaming call: items sent, items the owner consumed."""

    __slots__ = ("acked", "cond", "event", "produced", "window")

    def __init__(self, window: int) -> None:
        self.window = max(window, 1)
        self.produced = 0
        self.acked = 0
        self.cond = threading.Condition()
        self.event: asyncio.Event | None = None

    def ack(self, consumed: int) -> None:  # loop
        with self.cond:
            self.acked = max(self.acked, consumed)
            self.cond.notify_all()
        if self.event is not None:
            self.event.set()

    def wake(self) -> None:  # loop: cancelled, or the owner went away
        with self.cond:
            self.cond.notify_all()
        if self.event is not None:
            self.event.set()


@dataclass(slots=True)
class Job:
    """One task or actor call received by this node."""

    conn: Connection
    task_id: bytes
    name: str
    args: p.Value
    buffers: list[Any]
    num_returns: int
    fn: Callable[..., Any] | None = None
    is_async: bool = False
    demand: dict[str, float] = field(default_factory=dict)
    call_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    ready: bool = True
    stream: StreamControl | None = None
    bundle: tuple[bytes, int] | None = None
    env: Prepared | None = None
    lane: _Lane | None = None
    attempt: int = 0
    spills: int = 0
    ctx: TaskContext | None = None
    atask: asyncio.Task[Any] | None = None
    cancelled: bool = False
    actor_id: bytes = b""  # the actor an actor call is for


def encode_returns(
    worker: ExecutionHost, task_id: bytes, result: Any, num_returns: int
) -> tuple[list[p.Value | p.Located], list[Any]]:
    """Serialize a task's result(s); large ones stay in this node's store (any thread)."""
    if num_returns == 1:
        values = [result]
    else:
        if not isinstance(result, tuple | list) or len(result) != num_returns:
            size = f" of length {len(result)}" if isinstance(result, tuple | list) else ""
            raise ValueError(
                f"the task declared num_returns={num_returns} but returned "
                f"{type(result).__name__}{size}"
            )
        values = list(result)
    out: list[p.Value | p.Located] = []
    buffers: list[Any] = []
    for i, v in enumerate(values):
        val, bufs = ser.serialize(v, copy=False)  # the store copies; inline ones are owned
        if val.refs:
            worker.refs.pin(val.refs)
        if ser.total_size(val) >= INLINE_MAX:
            out.append(worker.store_value(return_id(task_id, i), val, bufs))
        else:
            out.append(val)
            buffers.extend(ser.own_buffers(bufs))
    return out, buffers


def call_sync(
    worker: ExecutionHost, job: Job, ctx: TaskContext, label: str
) -> tuple[p.TaskDone, list[Any]]:
    """Run a plain function for ``job`` (on a thread) and serialize its answer."""
    token = current_task.set(ctx)
    ctx.thread_id = threading.get_ident()
    try:
        if job.cancelled:
            raise TaskCancelledError(f"{label} was cancelled before it started")
        args, kwargs = job.call_args or ser.deserialize_args(job.args, job.buffers)
        assert job.fn is not None
        with _env_applied(worker, job.env):
            result = job.fn(*args, **kwargs)
            if job.stream is not None:
                _stream_sync(worker, job, ctx, result, label)
                return p.TaskDone(job.task_id), []
        # Let mapped arguments go before the answer is sent: their holders then hear that
        # the mapping is gone (Unmapped, posted first) before the answer, and can reuse it.
        job.call_args = None
        del args, kwargs
        returns, bufs = encode_returns(worker, job.task_id, result, job.num_returns)
        del result
        return p.TaskDone(job.task_id, returns), bufs
    except BaseException as exc:  # every failure goes back to the caller
        return p.TaskDone(job.task_id, error=_error(exc, label)), []
    finally:
        ctx.thread_id = 0
        current_task.reset(token)


async def call_async(
    worker: ExecutionHost, job: Job, ctx: TaskContext, label: str
) -> tuple[p.TaskDone, list[Any]]:
    """Run a coroutine function for ``job`` (on the loop) and serialize its answer."""
    current_task.set(ctx)  # this coroutine runs in a task of its own, with its own context
    try:
        args, kwargs = job.call_args or ser.deserialize_args(job.args, job.buffers)
        assert job.fn is not None
        with _env_applied(worker, job.env):
            if job.stream is not None:
                await _stream_async(worker, job, job.fn(*args, **kwargs), label)
                return p.TaskDone(job.task_id), []
            result = await job.fn(*args, **kwargs)
        job.call_args = None  # as in call_sync: mapped arguments go before the answer
        del args, kwargs
        returns, bufs = encode_returns(worker, job.task_id, result, job.num_returns)
        del result
        return p.TaskDone(job.task_id, returns), bufs
    except asyncio.CancelledError:
        if job.cancelled:  # runtime.cancel, not the node shutting down
            err = TaskCancelledError(f"{label} was cancelled")
            return p.TaskDone(job.task_id, error=_error(err, label)), []
        raise
    except BaseException as exc:
        return p.TaskDone(job.task_id, error=_error(exc, label)), []


def _env_applied(
    worker: ExecutionHost, env: Prepared | None
) -> contextlib.AbstractContextManager[None]:
    executor = worker.executor
    if env is None or executor is None:
        return contextlib.nullcontext()
    return executor.envs.applied(env)


def _encode_item(
    worker: ExecutionHost, job: Job, index: int, item: Any
) -> tuple[p.StreamItem, list[Any]]:
    val, bufs = ser.serialize(item)
    if val.refs:
        worker.refs.pin(val.refs)
    if ser.total_size(val) >= INLINE_MAX:
        loc = worker.store_value(return_id(job.task_id, index), val, list(bufs))
        return p.StreamItem(job.task_id, index, loc), []
    return p.StreamItem(job.task_id, index, val), list(bufs)


def _stream_sync(worker: ExecutionHost, job: Job, ctx: TaskContext, gen: Any, label: str) -> None:
    """Send the items of a generator as they come, pausing while the owner lags (thread)."""
    if not inspect.isgenerator(gen):
        raise TypeError(
            f"{label} was called with num_returns='streaming' but returned "
            f"{type(gen).__name__}, not a generator (use `yield`)"
        )
    stream = job.stream
    assert stream is not None
    try:
        for item in gen:
            stream.produced += 1
            msg, bufs = _encode_item(worker, job, stream.produced, item)
            worker.inbox.post(job.conn.send, msg, bufs)
            with stream.cond:
                stream.cond.wait_for(
                    lambda: stream.produced - stream.acked < stream.window or ctx.cancelled
                )
            if ctx.cancelled:
                raise TaskCancelledError(f"{label} was cancelled")
    finally:
        gen.close()


async def _stream_async(worker: ExecutionHost, job: Job, agen: Any, label: str) -> None:
    """Send the items of an async generator as they come (loop)."""
    if not inspect.isasyncgen(agen):
        if inspect.iscoroutine(agen):
            agen.close()
        raise TypeError(
            f"{label} was called with num_returns='streaming' but is not an async generator "
            "(use `yield` in an `async def`)"
        )
    stream = job.stream
    assert stream is not None
    stream.event = asyncio.Event()
    try:
        async for item in agen:
            stream.produced += 1
            msg, bufs = _encode_item(worker, job, stream.produced, item)
            job.conn.send(msg, bufs)
            while stream.produced - stream.acked >= stream.window and not job.cancelled:
                stream.event.clear()
                await stream.event.wait()
            if job.cancelled:
                raise asyncio.CancelledError
    finally:
        await agen.aclose()


def _error(exc: BaseException, name: str) -> p.Value:
    if isinstance(exc, RuntimeBaseError):
        return ser.error_value(exc, name)
    tb = "".join(traceback.format_exception(exc))
    return ser.error_value(exc, name, tb=tb)


class Executor:
    """Runs tasks and hosts actors for one node."""

    def __init__(self, worker: ExecutionHost) -> None:
        self.worker = worker
        self.sched = LocalScheduler(worker.resources)
        self.functions: dict[bytes, tuple[Callable[..., Any], bool]] = {}
        self.classes: dict[bytes, type] = {}
        self.pool = ThreadPool("runtime-task", 64)
        self.waiting: dict[bytes, Job] = {}
        #: Every task and actor call received and not answered yet (for cancel and acks).
        self.jobs: dict[bytes, Job] = {}
        #: Small answers of recent calls, by (task id, attempt) (see duplicate()).
        self.answered: OrderedDict[tuple[bytes, int], p.TaskDone] = OrderedDict()
        self.envs = EnvManager(worker)
        #: Placement group bundles reserved here: a ledger each, carved out of ``sched``.
        self.bundles: dict[tuple[bytes, int], LocalScheduler] = {}
        self.actors: dict[bytes, HostedActor] = {}
        #: Why recently dead actors died, so late calls get the real cause (bounded).
        self.tombstones: OrderedDict[bytes, p.Value] = OrderedDict()
        self._report_armed = False

    def close(self) -> None:
        self.pool.shutdown()
        for actor in list(self.actors.values()):
            actor.stop("the node is shutting down")

    # --- tasks ---------------------------------------------------------------------------

    def duplicate(self, conn: Connection, task_id: bytes, attempt: int = 0) -> bool:
        """(task id, attempt) is the idempotency key of a call: a call sent again (its answer
        was lost with a connection) is not run twice; it gets the first run's answer. A retry
        that is meant to run again carries the next attempt number."""
        job = self.jobs.get(task_id)
        if job is not None and job.attempt == attempt:
            return True  # still running: its answer goes out when it finishes
        answer = self.answered.get((task_id, attempt))
        if answer is None:
            return False
        conn.send(answer)
        return True

    def remember(self, done: p.TaskDone, bufs: list[Any], attempt: int = 0) -> None:
        """Keep a small answer of a call that ran (a value, or the user's error)."""
        if bufs:
            return
        if done.error is not None:
            if not ser.is_application_error(done.error):
                return  # "did not run / may have run" answers must not stick
        elif sum(ser.total_size(v) for v in done.returns if isinstance(v, p.Value)) > (
            _ANSWER_KEEP_BYTES
        ):
            return
        self.answered[(done.task_id, attempt)] = done
        if len(self.answered) > _MAX_ANSWERED:
            self.answered.popitem(last=False)

    def on_submit_task(self, conn: Connection, msg: p.SubmitTask, raw: memoryview) -> None:
        if self.duplicate(conn, msg.task_id, msg.attempt):
            return
        try:
            # With a runtime_env the function may live in a module it ships: load it later.
            fn, is_async = (None, False) if msg.runtime_env else self._function(msg)
            bufs, _ = split_buffers(raw, msg.args.bufs, 0)
        except Exception as exc:
            conn.send(p.TaskDone(msg.task_id, error=_error(exc, msg.fn_name)))
            return
        job = Job(
            conn,
            msg.task_id,
            msg.fn_name,
            msg.args,
            bufs,
            msg.num_returns,
            fn,
            is_async,
            dict(msg.resources),
        )
        job.attempt = msg.attempt
        job.spills = msg.spills
        if msg.num_returns == p.STREAMING:
            job.stream = StreamControl(msg.stream_window)
        if msg.bundle is not None:
            job.bundle = (bytes(msg.bundle[0]), int(msg.bundle[1]))
        self.jobs[msg.task_id] = job
        if msg.runtime_env or (msg.args.refs and not self.parse_args_now(job)):
            job.ready = False
            self.worker.spawn(self._resolve_then_queue(job, msg))
        else:
            self._queue(job)

    def _function(self, msg: p.SubmitTask) -> tuple[Callable[..., Any], bool]:
        entry = self.functions.get(msg.fn_id)
        if entry is None:
            if msg.fn_blob is None:
                raise RuntimeBaseError(f"node does not know function {msg.fn_name}")
            fn = ser.loads_function(msg.fn_blob)
            entry = self.functions[msg.fn_id] = (fn, _is_async_fn(fn))
        return entry

    async def _resolve_then_queue(self, job: Job, msg: p.SubmitTask) -> None:
        try:
            if msg.runtime_env:
                job.env = await self.envs.prepare(msg.runtime_env)
                with self.envs.applied(job.env):
                    job.fn, job.is_async = self._function(msg)
            if job.args.refs:
                job.call_args = await self._resolve_args(job)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._done_unqueued(job, _error(exc, job.name))
            return
        job.ready = True
        self._queue(job)

    def parse_args_now(self, job: Job) -> bool:
        """For a call whose arguments hold refs: deserialize them now; True when none is a
        top-level ref to fetch first (refs nested in containers, such as the one in an
        actor handle, stay refs), so the call is ready at once like one without refs.
        False: some must be fetched (``_resolve_args`` does), or deserializing failed
        (the asynchronous path reports it)."""
        try:
            args, kwargs = ser.deserialize_args(job.args, job.buffers)
        except Exception:
            return False
        job.call_args = (args, kwargs)
        return not (
            any(isinstance(a, ObjectRef) for a in args)
            or any(isinstance(v, ObjectRef) for v in kwargs.values())
        )

    async def _resolve_args(self, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = job.call_args or ser.deserialize_args(job.args, job.buffers)
        if any(isinstance(a, ObjectRef) for a in args) or any(
            isinstance(v, ObjectRef) for v in kwargs.values()
        ):
            get = self.worker.get_async
            args = tuple([await get(a) if isinstance(a, ObjectRef) else a for a in args])
            kwargs = {
                k: (await get(v) if isinstance(v, ObjectRef) else v) for k, v in kwargs.items()
            }
        return args, kwargs

    def _queue(self, job: Job) -> None:
        if job.cancelled:
            self._done_unqueued(job, _cancelled(job.name))
            return
        try:
            ledger = self.sched
            if job.bundle is not None:
                job.bundle = self._pick_bundle(job.bundle, job.demand)
                ledger = self.bundles[job.bundle]
            granted = ledger.request(job.task_id, job.demand)
            if (
                not granted
                and job.bundle is None
                and job.spills < _MAX_SPILLS
                and not fits(job.demand, self._unreserved())
            ):
                # Actors or bundles hold what it needs here, maybe for good: send it back
                # to its submitter to place elsewhere (its view of this node was stale).
                self.sched.cancel(job.task_id)
                self._done_unqueued(job, _spilled(job.name))
                return
        except InfeasibleError as exc:
            self._done_unqueued(job, _error(exc, job.name))
            return
        if granted:
            self._report()
            self._start(job)
        else:
            self.waiting[job.task_id] = job

    def _start(self, job: Job) -> None:
        ctx = job.ctx = TaskContext(job.task_id, job.name, demand=job.demand, bundle=job.bundle)
        if job.is_async:
            job.atask = self.worker.spawn(self._run_async(job, ctx))
        else:
            self.pool.submit(partial(self._run_sync, job, ctx))

    def _run_sync(self, job: Job, ctx: TaskContext) -> None:
        """On a pool thread: run, serialize, hand the answer to the loop."""
        done, bufs = call_sync(self.worker, job, ctx, job.name)
        self.worker.inbox.post(self._finish, job, ctx, done, bufs)

    async def _run_async(self, job: Job, ctx: TaskContext) -> None:
        done, bufs = await call_async(self.worker, job, ctx, job.name)
        self._finish(job, ctx, done, bufs)

    def task_rows(self) -> list[dict[str, Any]]:
        """The tasks and actor calls this node has (``runtime list tasks``): running,
        queued for resources or the actor, or waiting for their ref arguments."""
        rows = []
        for task_id, job in list(self.jobs.items()):
            if job.ctx is not None:
                state = "RUNNING"
            elif not job.ready:
                state = "PENDING_ARGS"
            else:
                state = "QUEUED"
            rows.append(
                {
                    "task_id": task_id.hex(),
                    "name": job.name,
                    "state": state,
                    "actor_id": job.actor_id.hex(),
                    "attempt": job.attempt,
                }
            )
        return rows

    def _finish(self, job: Job, ctx: TaskContext, done: p.TaskDone, bufs: list[Any]) -> None:
        self.jobs.pop(job.task_id, None)
        self.remember(done, bufs, job.attempt)
        job.conn.send(done, bufs)
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)
        if not ctx.lent:
            self._release(job.demand, job.bundle)

    def _done_unqueued(self, job: Job, error: p.Value) -> None:
        self.jobs.pop(job.task_id, None)
        job.conn.send(p.TaskDone(job.task_id, error=error))
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)

    def _ledger(self, bundle: tuple[bytes, int] | None) -> LocalScheduler | None:
        return self.sched if bundle is None else self.bundles.get(bundle)

    def _release(self, demand: dict[str, float], bundle: tuple[bytes, int] | None = None) -> None:
        ledger = self._ledger(bundle)
        if not demand or ledger is None:  # a removed bundle gave its resources back already
            return
        for key in ledger.release(demand):
            job = self.waiting.pop(key)  # type: ignore[call-overload]
            self._start(job)
        self._report()

    def lend(self, ctx: TaskContext) -> None:
        """The task blocks in get(): let others use its resources meanwhile (loop)."""
        if ctx.demand and not ctx.lent:
            ctx.lent = True
            self._release(ctx.demand, ctx.bundle)

    def take_back(self, ctx: TaskContext) -> None:
        ledger = self._ledger(ctx.bundle)
        if ctx.lent and ledger is not None:
            ctx.lent = False
            ledger.reacquire(ctx.demand)
            self._report()

    # --- placement group bundles ---------------------------------------------------------------

    def _pick_bundle(
        self, bundle: tuple[bytes, int], demand: dict[str, float]
    ) -> tuple[bytes, int]:
        """The bundle a task or actor runs in: the one asked for, or (index -1) one of the
        group's bundles here, preferring one with room now."""
        pg_id, index = bundle
        if index >= 0:
            if bundle not in self.bundles:
                raise InfeasibleError(
                    f"bundle {index} of placement group {pg_id.hex()} is not on this node "
                    "(the group was removed, or placed again elsewhere)"
                )
            return bundle
        mine = [key for key in self.bundles if key[0] == pg_id]
        if not mine:
            raise InfeasibleError(
                f"placement group {pg_id.hex()} has no bundle on this node (removed?)"
            )
        for key in mine:
            if fits(demand, self.bundles[key].available):
                return key
        for key in mine:
            if self.bundles[key].feasible(demand):
                return key
        return mine[0]

    def on_bundles(self, msg: p.ReserveBundles | p.ReleaseBundles) -> None:
        """Reserve (all or none) or release placement group bundles here (loop)."""
        if isinstance(msg, p.ReserveBundles):
            total: dict[str, float] = {}
            for index, res in msg.bundles:
                if (msg.pg_id, index) in self.bundles:
                    continue  # a retried request
                for name, amount in res.items():
                    total[name] = total.get(name, 0.0) + amount
            if not self.sched.try_take(total):
                raise NoRoomError("no room on this node for the bundles now")
            for index, res in msg.bundles:
                self.bundles.setdefault((msg.pg_id, index), LocalScheduler(res))
            self._report()
            return
        keys = [
            key
            for key in self.bundles
            if key[0] == msg.pg_id and (not msg.indices or key[1] in msg.indices)
        ]
        # The bundles' resources go back first: whatever fails below must not leak them.
        for key in keys:
            ledger = self.bundles.pop(key)
            for name, amount in ledger.total.items():
                self.sched.available[name] = min(
                    self.sched.total.get(name, 0.0), self.sched.available.get(name, 0.0) + amount
                )
        for actor in list(self.actors.values()):
            if actor.bundle in keys:
                try:
                    actor.stop("its placement group was removed")
                except Exception:
                    log.exception("stopping an actor of a removed placement group failed")
        for key in keys:
            for task_id, job in list(self.waiting.items()):
                if job.bundle == key:
                    del self.waiting[task_id]
                    self._done_unqueued(job, _group_gone(job.name))
            for job in list(self.jobs.values()):
                if job.bundle == key and job.ctx is not None:
                    try:
                        self.cancel(job.task_id, force=False, recursive=True)
                    except Exception:
                        log.exception("cancelling a task of a removed placement group failed")
        for granted in self.sched._grant():
            self._start(self.waiting.pop(granted))  # type: ignore[call-overload]
        self._report()

    def _report(self) -> None:
        if not self._report_armed:
            self._report_armed = True
            self.worker.loop.call_later(0.005, self._send_report)

    def _send_report(self) -> None:
        self._report_armed = False
        worker = self.worker
        msg = p.ReportResources(worker.peer_id, dict(self.sched.available), self._reserved())
        if worker.head is not None:
            worker.head.on_report(msg)
        else:
            conn = worker.head_conn
            if conn is not None:
                conn.send(msg)

    def _reserved(self) -> dict[str, float]:
        """What actors and placement group bundles hold here (for long, unlike tasks)."""
        reserved: dict[str, float] = {}
        for actor in self.actors.values():
            if actor.bundle is None:
                for name, amount in actor.spec.resources.items():
                    reserved[name] = reserved.get(name, 0.0) + amount
        for ledger in self.bundles.values():
            for name, amount in ledger.total.items():
                reserved[name] = reserved.get(name, 0.0) + amount
        return reserved

    def _unreserved(self) -> dict[str, float]:
        reserved = self._reserved()
        return {k: v - reserved.get(k, 0.0) for k, v in self.sched.total.items()}

    def peer_lost(self, peer: str) -> None:
        """Drop queued work from a caller that went away; stop its streams."""
        for key, job in list(self.waiting.items()):
            if job.conn.peer_id == peer:
                ledger = self._ledger(job.bundle)
                if ledger is not None:
                    ledger.cancel(key)
                del self.waiting[key]
                self.jobs.pop(key, None)
        for job in list(self.jobs.values()):
            if job.conn.peer_id == peer and job.stream is not None:
                self.cancel(job.task_id, force=False, recursive=True)

    # --- streams and cancellation ------------------------------------------------------------

    def on_stream_ack(self, msg: p.StreamAck) -> None:
        job = self.jobs.get(msg.task_id)
        if job is not None and job.stream is not None:
            job.stream.ack(msg.consumed)

    def cancel(self, task_id: bytes, *, force: bool, recursive: bool) -> None:
        """runtime.cancel reached this node (loop): the call never runs, or is interrupted."""
        job = self.jobs.get(task_id)
        if job is None or job.cancelled:
            return
        job.cancelled = True
        if task_id in self.waiting:  # queued for resources: it never runs
            del self.waiting[task_id]
            ledger = self._ledger(job.bundle)
            if ledger is not None:
                ledger.cancel(task_id)
            self._done_unqueued(job, _cancelled(job.name))
            return
        lane = job.lane
        if lane is not None and job in lane.mailbox:  # an actor call not started yet
            lane.mailbox.remove(job)
            self._done_unqueued(job, _cancelled(job.name))
            for actor in self.actors.values():
                if lane in actor.all_lanes():
                    actor._pump(lane)
            return
        ctx = job.ctx
        if ctx is not None:
            ctx.cancelled = True
            if recursive:
                for child in ctx.children:
                    self.worker.cancel_task(child, force=force, recursive=True)
        if job.stream is not None:
            job.stream.wake()
        if job.atask is not None:
            job.atask.cancel()
        elif force and ctx is not None and ctx.thread_id:
            # Raise TaskCancelledError in the task's thread at its next bytecode (a call
            # into C code finishes first).
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ctx.thread_id), ctypes.py_object(TaskCancelledError)
            )

    # --- actors ------------------------------------------------------------------------------

    def on_control(self, conn: Connection, msg: p.Message) -> None:
        match msg:
            case p.CreateActor(rid=rid, spec=spec):
                try:
                    self.create_actor(spec)
                    self.worker.reply(conn, rid, True)
                except Exception as exc:
                    self.worker.reply(conn, rid, error=exc)
            case p.KillActor(rid=rid, actor_id=actor_id, no_restart=no_restart):
                self.kill_actor(
                    actor_id, "the actor was killed with runtime.kill", restarting=not no_restart
                )
                self.worker.reply(conn, rid, True)
            case p.ReserveBundles(rid=rid) | p.ReleaseBundles(rid=rid):
                try:
                    self.on_bundles(msg)
                    self.worker.reply(conn, rid, True)
                except Exception as exc:
                    self.worker.reply(conn, rid, error=exc)

    def create_actor(self, spec: p.ActorSpec) -> None:
        """Reserve the actor's resources here and start its constructor (loop)."""
        if spec.actor_id in self.actors:
            return
        bundle = None
        strategy = spec.strategy
        cls = self.classes.get(spec.cls_id)
        if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "pg":
            bundle = self._pick_bundle((bytes(strategy[1]), int(strategy[2])), spec.resources)
        ledger = self.sched if bundle is None else self.bundles[bundle]
        if not ledger.try_take(spec.resources):
            raise NoRoomError("no room on this node now")
        self._report()
        if cls is None and spec.concurrency_groups and not spec.runtime_env:
            # Calls are sorted into their groups' mailboxes by the class's methods. Otherwise
            # the class loads on the actor's thread (its imports may take seconds: not here,
            # on the loop), or once its runtime_env is ready.
            cls = self.classes[spec.cls_id] = ser.loads_function(spec.cls_blob)
        actor = HostedActor(self, spec, cls)
        actor.bundle = bundle
        self.actors[spec.actor_id] = actor
        actor.start()

    def kill_actor(self, actor_id: bytes, reason: str, restarting: bool = False) -> None:
        """Stop an actor here; ``restarting``: it comes back elsewhere, so calls that did not
        start are answered "not here" (ActorUnavailableError) and their callers send again."""
        actor = self.actors.get(actor_id)
        if actor is not None:
            if restarting:
                actor.restarting = True
                actor.death = ser.system_error_value(
                    ActorUnavailableError, f"actor {actor.spec.class_name} is restarting"
                )
            actor.stop(reason)

    def actor_stopped(self, actor: HostedActor, reason: str) -> None:
        if self.actors.pop(actor.spec.actor_id, None) is None:
            return
        death = actor._death_value()
        self.tombstones[actor.spec.actor_id] = death
        if len(self.tombstones) > _MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)
        self._release(dict(actor.spec.resources), actor.bundle)
        msg = p.ActorGone(actor.spec.actor_id, reason, death)
        worker = self.worker
        if worker.head is not None:
            worker.head.on_message(None, msg)
        elif (conn := worker.head_conn) is not None:
            conn.send(msg)

    def on_call_actor(self, conn: Connection, msg: p.CallActor, raw: memoryview) -> None:
        actor = self.actors.get(msg.actor_id)
        if actor is None:
            death = self.tombstones.get(msg.actor_id)
            conn.send(
                p.TaskDone(
                    msg.task_id,
                    error=death
                    or ser.system_error_value(
                        ActorDiedError, f"actor {msg.actor_id.hex()} is not alive on this node"
                    ),
                )
            )
            return
        actor.on_call(conn, msg, raw)


class NoRoomError(RuntimeBaseError):
    """A node has no room for an actor right now (the head tries again later)."""


STARTING, ALIVE, DEAD = "STARTING", "ALIVE", "DEAD"


class _Lane:
    """A mailbox with its own concurrency: an actor's default one, or a concurrency group's."""

    __slots__ = ("async_starting", "mailbox", "max_async", "pool", "running_async", "running_sync")

    def __init__(self, name: str, limit: int, is_async: bool) -> None:
        self.max_async = limit
        self.pool = ThreadPool(f"actor-{name}", 1 if is_async else limit)
        self.mailbox: deque[Job] = deque()
        self.running_async = 0
        self.running_sync = 0
        self.async_starting = 0


class HostedActor:
    """One actor instance on this node with its mailboxes (one per concurrency group)."""

    def __init__(self, executor: Executor, spec: p.ActorSpec, cls: type | None) -> None:
        self.executor = executor
        self.worker = executor.worker
        self.spec = spec
        self.cls = cls
        self.instance: Any = None
        self.state = STARTING
        self.death: p.Value | None = None
        self.restarting = False
        self.is_async = spec.is_async
        self.lane = _Lane(spec.class_name, spec.max_concurrency, spec.is_async)
        #: Concurrency groups: each has its own mailbox and limit (threads for sync methods).
        self.lanes: dict[str, _Lane] = {
            group: _Lane(f"{spec.class_name}-{group}", limit, spec.is_async)
            for group, limit in spec.concurrency_groups.items()
        }
        self.pool = self.lane.pool
        self.method_kinds: dict[str, bool] = {}
        self.bundle: tuple[bytes, int] | None = None
        self.env: Prepared | None = None
        self.cls_name = spec.class_name
        self.ctx = TaskContext(
            b"",
            f"{spec.class_name}.__init__",
            spec.actor_id,
            spec.name,
            actor_class=spec.class_name,
        )

    def start(self) -> None:
        if self.spec.args.refs or self.spec.runtime_env:
            self.worker.spawn(self._resolve_then_construct())
        else:
            self.pool.submit(partial(self._construct, None))

    async def _resolve_then_construct(self) -> None:
        job = Job(None, b"", "__init__", self.spec.args, [], 1)  # type: ignore[arg-type]
        call_args = None
        try:
            if self.spec.runtime_env:
                envs = self.executor.envs
                self.env = await envs.prepare(self.spec.runtime_env)
                if self.cls is None:
                    with envs.applied(self.env):
                        self.cls = ser.loads_function(self.spec.cls_blob)
            if self.spec.args.refs:
                call_args = await self.executor._resolve_args(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._constructed(None, _error(exc, f"{self.spec.class_name}.__init__"))
            return
        self.pool.submit(partial(self._construct, call_args))

    def _construct(self, call_args: tuple[tuple[Any, ...], dict[str, Any]] | None) -> None:
        token = current_task.set(self.ctx)
        try:
            with _env_applied(self.worker, self.env):
                if self.cls is None:
                    self.cls = ser.loads_function(self.spec.cls_blob)
                    self.executor.classes[self.spec.cls_id] = self.cls
                args, kwargs = call_args or ser.deserialize_args(self.spec.args, [])
                instance = self.cls(*args, **kwargs)
            error = None
        except BaseException as exc:
            instance, error = None, _error(exc, f"{self.spec.class_name}.__init__")
        finally:
            current_task.reset(token)
        self.worker.inbox.post(self._constructed, instance, error)

    def _constructed(self, instance: Any, error: p.Value | None) -> None:
        if self.state == DEAD:
            return
        if error is not None:
            self.death = error
            self.stop("the actor's constructor raised")
            return
        self.instance = instance
        self.state = ALIVE
        self._pump()

    def on_call(self, conn: Connection, msg: p.CallActor, raw: memoryview) -> None:
        if self.executor.duplicate(conn, msg.task_id):
            return
        if self.state == DEAD:
            conn.send(p.TaskDone(msg.task_id, error=self._death_value()))
            return
        limit = self.spec.max_pending_calls
        lane = self._lane_for(msg.method)
        if limit >= 0 and len(lane.mailbox) >= limit:
            conn.send(
                p.TaskDone(
                    msg.task_id,
                    error=ser.system_error_value(
                        PendingCallsLimitExceeded,
                        f"actor {self.spec.class_name} has {len(lane.mailbox)} calls waiting "
                        f"(max_pending_calls={limit})",
                    ),
                )
            )
            return
        try:
            bufs, _ = split_buffers(raw, msg.args.bufs, 0)
        except Exception as exc:
            conn.send(p.TaskDone(msg.task_id, error=_error(exc, msg.method)))
            return
        job = Job(conn, msg.task_id, msg.method, msg.args, bufs, msg.num_returns)
        if msg.num_returns == p.STREAMING:
            job.stream = StreamControl(msg.stream_window)
        self.executor.jobs[msg.task_id] = job
        job.actor_id = self.spec.actor_id
        job.lane = lane
        lane.mailbox.append(job)
        if msg.args.refs and not self.executor.parse_args_now(job):
            job.ready = False
            self.worker.spawn(self._resolve(job))
        elif len(lane.mailbox) == 1:
            self._pump(lane)

    def _lane_for(self, method: str) -> _Lane:
        if not self.lanes or self.cls is None:
            return self.lane
        group = getattr(getattr(self.cls, method, None), "__runtime_concurrency_group__", None)
        return self.lanes.get(group, self.lane) if group else self.lane

    def all_lanes(self) -> list[_Lane]:
        return [self.lane, *self.lanes.values()]

    async def _resolve(self, job: Job) -> None:
        try:
            job.call_args = await self.executor._resolve_args(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            job.fn = _raiser(exc)
        job.ready = True
        self._pump(job.lane)

    def _pump(self, lane: _Lane | None = None) -> None:
        if lane is None:  # every lane (the actor became alive)
            for each in self.all_lanes():
                self._pump(each)
            return
        mailbox = lane.mailbox
        while mailbox and self.state == ALIVE:
            job = mailbox[0]
            if not job.ready:
                return
            if job.fn is None:
                try:
                    job.fn, job.is_async = self._method(job.name)
                except AttributeError as exc:
                    job.fn = _raiser(exc)
            if job.is_async:
                # An async call starts after the sync calls before it have finished.
                if lane.running_async >= lane.max_async or lane.running_sync:
                    return
                mailbox.popleft()
                lane.running_async += 1
                lane.async_starting += 1
                job.atask = self.worker.spawn(self._run_async(job))
            else:
                # A sync call starts once the async calls before it have started.
                if lane.async_starting:
                    return
                mailbox.popleft()
                if lane.pool.size > 1:
                    lane.running_sync += 1
                    lane.pool.submit(partial(self._run_sync, job))
                    continue
                # One thread: hand it the whole run of ready sync calls at once.
                batch = [job]
                while mailbox and mailbox[0].ready and not mailbox[0].is_async:
                    nxt = mailbox[0]
                    if nxt.fn is None:
                        try:
                            nxt.fn, nxt.is_async = self._method(nxt.name)
                        except AttributeError as exc:
                            nxt.fn = _raiser(exc)
                        if nxt.is_async:
                            break
                    batch.append(mailbox.popleft())
                lane.running_sync += len(batch)
                lane.pool.submit(partial(self._run_sync_batch, batch))

    def _run_sync_batch(self, batch: list[Job]) -> None:
        for job in batch:
            self._run_sync(job)

    def _method(self, name: str) -> tuple[Callable[..., Any], bool]:
        fn = getattr(self.instance, name)
        kind = self.method_kinds.get(name)
        if kind is None:
            kind = self.method_kinds[name] = _is_async_fn(fn)
        return fn, kind

    def _run_sync(self, job: Job) -> None:
        job.env = self.env
        ctx = job.ctx = TaskContext(
            job.task_id, job.name, self.spec.actor_id, self.spec.name, actor_class=self.cls_name
        )
        done, bufs = call_sync(self.worker, job, ctx, f"{self.spec.class_name}.{job.name}")
        self.worker.inbox.post(self._sync_done, job, done, bufs)

    def _sync_done(self, job: Job, done: p.TaskDone, bufs: list[Any]) -> None:
        lane = job.lane or self.lane
        lane.running_sync -= 1
        self._finish(job, done, bufs)
        if lane.mailbox and not lane.running_sync:
            self._pump(lane)

    async def _run_async(self, job: Job) -> None:
        job.env = self.env
        ctx = job.ctx = TaskContext(
            job.task_id, job.name, self.spec.actor_id, self.spec.name, actor_class=self.cls_name
        )
        lane = job.lane or self.lane
        lane.async_starting -= 1
        if not lane.async_starting and lane.mailbox:
            # Runs once this call reaches its first await, so it has started first.
            self.worker.loop.call_soon(self._pump, lane)
        try:
            done, bufs = await call_async(
                self.worker, job, ctx, f"{self.spec.class_name}.{job.name}"
            )
        except asyncio.CancelledError:
            if self.state != DEAD:
                raise
            done, bufs = p.TaskDone(job.task_id), []  # _finish answers with the death
        lane.running_async -= 1
        self._finish(job, done, bufs)
        if lane.mailbox:
            self._pump(lane)

    def _finish(self, job: Job, done: p.TaskDone, bufs: list[Any]) -> None:
        if self.state == DEAD:
            death = self._death_value(may_have_run=True)
            if self.restarting:  # this call was running: it may have run, so no resend
                death = ser.system_error_value(
                    ActorDiedError,
                    f"actor {self.spec.class_name} was killed for a restart while running "
                    f"{job.name}; the call may have run",
                )
            done, bufs = p.TaskDone(job.task_id, error=death), []
        self.executor.jobs.pop(job.task_id, None)
        self.executor.remember(done, bufs)
        job.conn.send(done, bufs)
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)

    def _death_value(self, *, may_have_run: bool = False) -> p.Value:
        if self.death is not None:
            return self.death
        suffix = "; the call may have run" if may_have_run else ""
        return ser.system_error_value(
            ActorDiedError, f"actor {self.spec.class_name} is dead: {self._reason}{suffix}"
        )

    _reason = "it was stopped"

    def stop(self, reason: str) -> None:
        if self.state == DEAD:
            return
        self.state = DEAD
        self._reason = reason
        lanes = self.all_lanes()
        for job in list(self.executor.jobs.values()):  # running async calls stop now
            if job.lane in lanes and job.atask is not None and not job.atask.done():
                job.atask.cancel()
        for lane in lanes:
            mailbox, lane.mailbox = lane.mailbox, deque()
            for job in mailbox:
                self.executor.jobs.pop(job.task_id, None)
                job.conn.send(p.TaskDone(job.task_id, error=self._death_value()))
            lane.pool.shutdown()
        self.executor.actor_stopped(self, reason if self.death is None else _death_text(self.death))


def _death_text(value: p.Value) -> str:
    try:
        return str(ser.error_from_value(value))
    except Exception:
        return "the actor's constructor raised"


def _is_async_fn(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def _spilled(name: str) -> p.Value:
    return ser.system_error_value(NoRoomError, f"{name}: no room on this node; place it again")


def _group_gone(name: str) -> p.Value:
    return ser.system_error_value(
        TaskCancelledError, f"{name} did not run: its placement group was removed"
    )


def _cancelled(name: str) -> p.Value:
    return ser.system_error_value(TaskCancelledError, f"{name} was cancelled before it ran")


def _raiser(exc: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raise_it


__all__ = [
    "Executor",
    "HostedActor",
    "SerializationError",
    "TaskContext",
    "current_task",
    "encode_returns",
]
