"""One call on a node: the job record, running it (sync on a thread or async on the loop),
encoding its returns and streaming its items, and the errors a call ends with.

Shared by the executor (tasks) and hosted actors (actor calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..common.context import TaskContext, current_task
from ..common.exceptions import (
    NoRoomError,
    TaskCancelledError,
)
from ..common.strands import Runner
from ..common.threads import LoopInbox, ThreadPool
from ..objects import serialization as ser
from ..objects.refs import ObjectRef, ReferenceTable, return_id
from ..wire import protocol as p
from ..wire.direct import send_direct
from ..wire.transport import Connection
from .events import now_ns, record
from .returns import INLINE_MAX, encode_returns, task_error
from .runtime_env import EnvManager, Prepared

if TYPE_CHECKING:
    from ..control.head import Head


class ActorExit(SystemExit):
    """What ``runtime.actor.exit_actor()`` raises: the actor's intended exit (no restart).

    A plain ``sys.exit()`` in an actor method ends the actor as its process ending would in
    Ray: it restarts if ``max_restarts`` allows."""


class EnvSource(Protocol):
    """Where the runtime environments of a node are prepared (its executor)."""

    @property
    def envs(self) -> EnvManager: ...


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
    def closing(self) -> bool: ...
    @property
    def host_ledger(self) -> str | None: ...
    @property
    def slot(self) -> float: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def env_packages(self) -> dict[str, ObjectRef[Any]]: ...
    @property
    def head(self) -> Head | None: ...
    @property
    def head_conn(self) -> Connection | None: ...
    @property
    def executor(self) -> EnvSource | None: ...
    @property
    def token(self) -> bytes: ...
    @property
    def host(self) -> str: ...
    @property
    def head_address(self) -> str | None: ...
    @property
    def labels(self) -> dict[str, str]: ...
    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]: ...
    async def connect_address(self, address: str, peer_id: str | None = None) -> Connection: ...
    async def request(self, conn: Connection, msg: Any, buffers: Sequence[Any] = ()) -> Any: ...
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

#: The arguments of a call with none, as the caller encodes them (``((), {})``).
NO_ARGS: bytes = ser.serialize_args((), {})[0].data
#: The raw buffers of a call with none (shared: only ever read, never appended to).
NO_BUFS: list[Any] = []
#: What a call with no runtime environment runs in (reentrant, shared).
_NO_ENV = contextlib.nullcontext()
MAX_TOMBSTONES = 10_000
#: A hosted actor's states.
STARTING, ALIVE, DEAD = "STARTING", "ALIVE", "DEAD"
#: Answers of finished calls kept to answer a resent call (same task id) without running it.
MAX_ANSWERED = 4096
#: How often a task may be sent back to be placed elsewhere before it waits where it is.
MAX_SPILLS = 3
#: Only answers this small are kept (larger ones are Located: small anyway).
ANSWER_KEEP_BYTES = 16 * 1024


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
    #: The placement group its children with no strategy of their own go to (Ray's
    #: ``placement_group_capture_child_tasks``), or None.
    capture: bytes | None = None
    env: Prepared | None = None
    lane: Lane | None = None
    attempt: int = 0
    spills: int = 0
    ctx: TaskContext | None = None
    atask: asyncio.Task[Any] | None = None
    cancelled: bool = False
    actor_id: bytes = b""  # the actor an actor call is for
    #: The SystemExit the call raised (``sys.exit()``, or ActorExit from
    #: ``actor.exit_actor()``): in an actor method it ends the actor (HostedActor._exit).
    exit: SystemExit | None = None
    #: When it arrived and when its ref arguments were fetched (monotonic ns; the timeline).
    received_ns: int = field(default_factory=now_ns)
    fetched_ns: int = 0
    #: Its caller blocks on it (``CallActor.blocked``); its answer went out from the thread
    #: that ran it (``answer_now``): not sent again.
    blocked: bool = False
    answered: bool = False

    def mark_fetched(self) -> None:
        """Its ref arguments are here: the end of its "fetch" span on the timeline."""
        self.fetched_ns = now_ns()


class Answers:
    """The answers of recent calls, by (task id, attempt): the idempotency of calls.

    Kept in two generations of at most ``MAX_ANSWERED`` each: when the newer one is full it
    becomes the older one and the older one is dropped, so each answer is kept for at least
    the ``MAX_ANSWERED`` answers after it, and at most twice that are kept (an ``OrderedDict``
    trimmed one answer at a time cost ~2 us a call in place, most of it the trim). A key is
    the task id for a first attempt (no tuple made per call), ``(task id, attempt)`` for a
    retry."""

    __slots__ = ("jobs", "newer", "older")

    def __init__(self, jobs: dict[bytes, Job]) -> None:
        #: The node's calls received and not answered yet (shared with the executor).
        self.jobs = jobs
        #: Small answers of recent calls (see duplicate()).
        self.newer: dict[bytes | tuple[bytes, int], p.TaskDone] = {}
        self.older: dict[bytes | tuple[bytes, int], p.TaskDone] = {}

    def duplicate(self, conn: Connection, task_id: bytes, attempt: int = 0) -> bool:
        """(task id, attempt) is the idempotency key of a call: a call sent again (its answer
        was lost with a connection) is not run twice; it gets the first run's answer. A retry
        that is meant to run again carries the next attempt number."""
        job = self.jobs.get(task_id)
        if job is not None and job.attempt == attempt:
            return True  # still running: its answer goes out when it finishes
        key = (task_id, attempt) if attempt else task_id
        answer = self.newer.get(key)
        if answer is None:
            answer = self.older.get(key)
            if answer is None:
                return False
        conn.send(answer)
        return True

    def get(self, task_id: bytes, attempt: int = 0) -> p.TaskDone | None:
        """The answer kept for (task id, attempt), if any."""
        key = (task_id, attempt) if attempt else task_id
        return self.newer.get(key) or self.older.get(key)

    def __len__(self) -> int:
        return len(self.newer) + len(self.older)

    def remember(self, done: p.TaskDone, bufs: list[Any], attempt: int = 0) -> None:
        """Keep a small answer of a call that ran (a value, or the user's error)."""
        if bufs:
            return
        if done.error is not None:
            if not ser.is_application_error(done.error):
                return  # "did not run / may have run" answers must not stick
        elif _returns_size(done.returns) > ANSWER_KEEP_BYTES:
            return
        newer = self.newer
        newer[(done.task_id, attempt) if attempt else done.task_id] = done
        if len(newer) >= MAX_ANSWERED:
            self.older, self.newer = newer, {}


def _returns_size(returns: list[p.Value | p.Located]) -> int:
    if len(returns) == 1:  # most calls (no generator made per call)
        value = returns[0]
        return len(value.data) + sum(value.bufs) if isinstance(value, p.Value) else 0
    return sum(ser.total_size(v) for v in returns if isinstance(v, p.Value))


def call_sync(
    worker: ExecutionHost, job: Job, ctx: TaskContext, label: str
) -> tuple[p.TaskDone, list[Any]]:
    """Run a plain function for ``job`` (on a thread) and serialize its answer; an actor
    call's answer goes out from this thread when it can (``answer_now``)."""
    done, bufs = _call_sync(worker, job, ctx, label)
    if job.blocked:  # (pipelined calls keep the loop's gathered answers)
        answer_now(worker, job, done, bufs)
    return done, bufs


def answer_now(worker: ExecutionHost, job: Job, done: p.TaskDone, bufs: list[Any]) -> None:
    """The callee's direct path: seal and write an actor call's answer from the thread that
    ran it, instead of handing it to the loop first (a thread wake-up, the GIL handed over
    twice) when its caller blocks on it (``CallActor.blocked``: pipelined calls keep the
    loop's gathered answers), nothing posted to the loop waits to go before it (an
    ``Unmapped`` of its arguments, an earlier call's answer) and the connection has nothing
    queued (:func:`runtime.core.wire.direct.send_direct`). The loop still does the call's
    bookkeeping; ``job.answered`` tells it the answer is out. Not for a call that ends the
    actor (``job.exit``: the loop answers it) nor a stream (its items go through the loop)."""
    if job.stream is None and job.exit is None and worker.inbox.quiet():
        job.answered = send_direct(job.conn, done, bufs)


def _call_sync(
    worker: ExecutionHost, job: Job, ctx: TaskContext, label: str
) -> tuple[p.TaskDone, list[Any]]:
    token = current_task.set(ctx)
    ctx.thread_id = tid = threading.get_ident()
    started, failed = now_ns(), False
    try:
        if job.cancelled:
            raise TaskCancelledError(f"{label} was cancelled before it started")
        args, kwargs = _call_args(job)
        assert job.fn is not None
        if job.env is None and job.stream is None:  # most calls: no context manager entered
            result = job.fn(*args, **kwargs)
        else:
            with _NO_ENV if job.env is None else env_applied(worker, job.env):
                result = job.fn(*args, **kwargs)
                if job.stream is not None:
                    stream_sync(worker, job, ctx, result, label)
                    return p.TaskDone(job.task_id), []
        # Let mapped arguments go before the answer is sent: their holders then hear that
        # the mapping is gone (Unmapped, posted first) before the answer, and can reuse it.
        job.call_args = None
        del args, kwargs
        returns, bufs = encode_returns(worker, job.task_id, result, job.num_returns)
        del result
        return p.TaskDone(job.task_id, returns), bufs
    except BaseException as exc:  # every failure goes back to the caller
        job.exit = exc if isinstance(exc, SystemExit) else None
        failed = True
        return p.TaskDone(job.task_id, error=task_error(exc, label)), []
    finally:
        ctx.thread_id = 0
        current_task.reset(token)
        record((job.received_ns, job.fetched_ns, started, now_ns(), label, tid, False, failed,
                job.task_id))  # fmt: skip


def _call_args(job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if job.call_args is not None:
        return job.call_args
    value = job.args
    if value.data == NO_ARGS and value.kind == ser.KIND_MSGPACK:  # most calls: a()
        return (), {}
    return ser.deserialize_args(value, job.buffers)


async def call_async(
    worker: ExecutionHost, job: Job, ctx: TaskContext, label: str
) -> tuple[p.TaskDone, list[Any]]:
    """Run a coroutine function for ``job`` (on the loop) and serialize its answer."""
    current_task.set(ctx)  # this coroutine runs in a task of its own, with its own context
    started, failed = now_ns(), False
    try:
        if job.cancelled:  # (while it waited in a run of calls: execution.async_runs)
            raise TaskCancelledError(f"{label} was cancelled before it started")
        args, kwargs = _call_args(job)
        assert job.fn is not None
        with _NO_ENV if job.env is None else env_applied(worker, job.env):
            if job.stream is not None:
                await stream_async(worker, job, job.fn(*args, **kwargs), label)
                return p.TaskDone(job.task_id), []
            result = await job.fn(*args, **kwargs)
        job.call_args = None  # as in call_sync: mapped arguments go before the answer
        del args, kwargs
        returns, bufs = encode_returns(worker, job.task_id, result, job.num_returns)
        del result
        return p.TaskDone(job.task_id, returns), bufs
    except asyncio.CancelledError:
        failed = True
        if job.cancelled:  # runtime.cancel, not the node shutting down
            err = TaskCancelledError(f"{label} was cancelled")
            return p.TaskDone(job.task_id, error=task_error(err, label)), []
        raise
    except BaseException as exc:
        job.exit = exc if isinstance(exc, SystemExit) else None
        failed = True
        return p.TaskDone(job.task_id, error=task_error(exc, label)), []
    finally:
        record((job.received_ns, job.fetched_ns, started, now_ns(), label,
                threading.get_ident(), True, failed, job.task_id))  # fmt: skip


def env_applied(
    worker: ExecutionHost, env: Prepared | None
) -> contextlib.AbstractContextManager[None]:
    executor = worker.executor
    if env is None or executor is None:
        return contextlib.nullcontext()
    return executor.envs.applied(env)


def _encode_item(
    worker: ExecutionHost, job: Job, index: int, item: Any
) -> tuple[p.StreamItem, list[Any]]:
    val, bufs = ser.serialize(item, copy=False)  # the store copies; inline ones are owned
    if val.refs:
        worker.refs.pin(val.refs)
    if ser.total_size(val) >= INLINE_MAX:
        loc = worker.store_value(return_id(job.task_id, index), val, list(bufs))
        return p.StreamItem(job.task_id, index, loc), []
    return p.StreamItem(job.task_id, index, val), ser.own_buffers(bufs)


def stream_sync(worker: ExecutionHost, job: Job, ctx: TaskContext, gen: Any, label: str) -> None:
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


async def stream_async(worker: ExecutionHost, job: Job, agen: Any, label: str) -> None:
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


class Lane:
    """A mailbox with its own concurrency: an actor's default one, or a concurrency group's."""

    __slots__ = (
        "async_starting",
        "in_run",
        "mailbox",
        "max_async",
        "pool",
        "running_async",
        "running_sync",
    )

    def __init__(self, name: str, limit: int, is_async: bool, pool: Runner | None = None) -> None:
        self.max_async = limit
        #: Its threads: a pool of its own, or a strand on the node's pool (one at a time).
        self.pool: Runner = pool or ThreadPool(f"actor-{name}", 1 if is_async else limit)
        self.mailbox: deque[Job] = deque()
        self.running_async = 0
        self.running_sync = 0
        self.async_starting = 0
        #: A run of its async calls is starting one (execution.async_runs): a call that ends
        #: then does not pump the lane; the run does, once, at its end.
        self.in_run = False


def death_text(value: p.Value) -> str:
    try:
        return str(ser.error_from_value(value))
    except Exception:
        return "the actor's constructor raised"


def is_async_fn(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def spilled(name: str) -> p.Value:
    return ser.system_error_value(NoRoomError, f"{name}: no room on this node; place it again")


def group_gone(name: str) -> p.Value:
    return ser.system_error_value(
        TaskCancelledError, f"{name} did not run: its placement group was removed"
    )


def cancelled_before_run(name: str) -> p.Value:
    return ser.system_error_value(TaskCancelledError, f"{name} was cancelled before it ran")


def raiser(exc: BaseException) -> Callable[..., Any]:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return raise_it


__all__ = [
    "ALIVE",
    "ANSWER_KEEP_BYTES",
    "DEAD",
    "INLINE_MAX",
    "MAX_ANSWERED",
    "MAX_SPILLS",
    "MAX_TOMBSTONES",
    "NO_BUFS",
    "STARTING",
    "ActorExit",
    "Answers",
    "EnvSource",
    "ExecutionHost",
    "Job",
    "Lane",
    "NoRoomError",
    "StreamControl",
    "answer_now",
    "call_async",
    "call_sync",
    "cancelled_before_run",
    "death_text",
    "encode_returns",
    "env_applied",
    "group_gone",
    "is_async_fn",
    "raiser",
    "spilled",
    "stream_async",
    "stream_sync",
    "task_error",
]
