"""An actor hosted on this node: its instance, its mailboxes (one per concurrency group),
and the order it runs calls in (arrival order per caller).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ..common.context import TaskContext, current_task
from ..common.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    PendingCallsLimitExceeded,
)
from ..common.metrics import CALLS_DONE, failed, observe_call
from ..common.strands import StrandPool
from ..common.threads import ThreadPool
from ..objects import serialization as ser
from ..wire import protocol as p
from ..wire.gather import send_answer
from ..wire.transport import Connection, split_buffers
from .async_runs import start as start_async_run
from .creating import start_thread_of
from .events import now_ns
from .runtime_env import EnvManager, Prepared
from .sync_runs import run_batch

if TYPE_CHECKING:
    pass


from .calls import (
    ALIVE,
    DEAD,
    NO_BUFS,
    STARTING,
    ActorExit,
    Answers,
    ExecutionHost,
    Job,
    Lane,
    StreamControl,
    call_async,
    call_sync,
    death_text,
    env_applied,
    is_async_fn,
    raiser,
    task_error,
)


class ActorSite(Protocol):
    """What a hosted actor needs of the node's executor (the executor is one)."""

    @property
    def worker(self) -> ExecutionHost: ...
    @property
    def classes(self) -> dict[bytes, type]: ...
    @property
    def jobs(self) -> dict[bytes, Job]: ...
    @property
    def envs(self) -> EnvManager: ...
    @property
    def answers(self) -> Answers: ...
    @property
    def strands(self) -> StrandPool: ...
    @property
    def pumps(self) -> list[tuple[HostedActor, Lane]] | None: ...
    def parse_args_now(self, job: Job) -> bool: ...
    async def resolve_args(self, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]: ...
    def actor_stopped(self, actor: HostedActor, reason: str) -> None: ...


log = logging.getLogger("runtime.executor")


class HostedActor:
    """One actor instance on this node with its mailboxes (one per concurrency group)."""

    # 100,000 of them on a node: no __dict__ each (~1 KB, and one more object to collect).
    __slots__ = (
        "_reason",
        "bundle",
        "cls",
        "cls_name",
        "ctx",
        "death",
        "env",
        "executor",
        "exiting",
        "instance",
        "is_async",
        "lane",
        "lanes",
        "method_kinds",
        "pool",
        "restarting",
        "spec",
        "state",
        "worker",
    )

    def __init__(self, executor: ActorSite, spec: p.ActorSpec, cls: type | None) -> None:
        self._reason = "it was stopped"
        self.executor = executor
        self.worker = executor.worker
        self.spec = spec
        self.cls = cls
        self.instance: Any = None
        self.state = STARTING
        self.death: p.Value | None = None
        self.restarting = False
        self.is_async = spec.is_async
        # A strand on the node's pool unless it asked for threads of its own: an explicit
        # max_concurrency (1 included: thread affinity), or concurrency groups.
        own = (
            spec.own_thread
            or spec.concurrency_groups
            or (spec.max_concurrency > 1 and not spec.is_async)
        )
        strand = None if own else executor.strands.strand()
        self.lane = Lane(spec.class_name, spec.max_concurrency, spec.is_async, strand)
        #: Concurrency groups: each has its own mailbox and limit (threads for sync methods).
        self.lanes: dict[str, Lane] = {
            group: Lane(f"{spec.class_name}-{group}", limit, spec.is_async)
            for group, limit in spec.concurrency_groups.items()
        }
        self.pool = self.lane.pool
        self.method_kinds: dict[str, bool] = {}
        self.bundle: tuple[bytes, int] | None = None
        self.env: Prepared | None = None
        self.cls_name = spec.class_name
        #: A method raised SystemExit (set on the actor's thread): the calls after it in the
        #: same run of sync calls do not start; the loop then ends the actor (_exit).
        self.exiting = False
        self.ctx = TaskContext(
            b"",
            f"{spec.class_name}.__init__",
            spec.actor_id,
            spec.name,
            actor_class=spec.class_name,
        )

    def start(self) -> None:
        self.ctx.bundle = self.bundle
        if self.spec.args.refs or self.spec.runtime_env:
            self.worker.spawn(self._resolve_then_construct())
        else:
            self._submit_construct(None)

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
                call_args = await self.executor.resolve_args(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._constructed(None, task_error(exc, f"{self.spec.class_name}.__init__"))
            return
        self._submit_construct(call_args)

    def _submit_construct(self, call_args: tuple[tuple[Any, ...], dict[str, Any]] | None) -> None:
        fn = partial(self._construct, call_args)
        if isinstance(self.pool, ThreadPool):  # its own thread: started off the loop
            start_thread_of(self.pool, fn)
        else:
            self.pool.submit(fn)

    def _construct(self, call_args: tuple[tuple[Any, ...], dict[str, Any]] | None) -> None:
        token = current_task.set(self.ctx)
        try:
            with env_applied(self.worker, self.env):
                if self.cls is None:
                    self.cls = ser.loads_function(self.spec.cls_blob)
                    self.executor.classes[self.spec.cls_id] = self.cls
                args, kwargs = call_args or ser.deserialize_args(self.spec.args, [])
                cls = self.cls
                if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
                    # Ray's async actors may have `async def __init__`: make the instance
                    # here, await its constructor on the loop before any call runs.
                    new = cls.__new__
                    instance = new(cls) if new is object.__new__ else new(cls, *args, **kwargs)
                    init = instance.__init__(*args, **kwargs)
                    self.worker.inbox.post(self.worker.spawn, self._construct_async(instance, init))
                    return
                instance = cls(*args, **kwargs)
            error = None
        except BaseException as exc:
            instance, error = None, task_error(exc, f"{self.spec.class_name}.__init__")
        finally:
            current_task.reset(token)
        self.worker.inbox.post(self._constructed, instance, error)

    async def _construct_async(self, instance: Any, init: Any) -> None:
        """Await an ``async def __init__`` (loop), then take calls."""
        current_task.set(self.ctx)  # this coroutine runs in a task of its own
        error = None
        try:
            with env_applied(self.worker, self.env):
                await init
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            instance, error = None, task_error(exc, f"{self.spec.class_name}.__init__")
        self._constructed(instance, error)

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
        self.worker.inbox.catch_up()  # the bookkeeping of calls answered already goes first
        executor = self.executor
        if executor.answers.duplicate(conn, msg.task_id):
            return
        if self.state == DEAD:
            conn.send(p.TaskDone(msg.task_id, error=self._death_value()))
            return
        limit = self.spec.max_pending_calls
        lane = self._lane_for(msg.method) if self.lanes else self.lane
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
        bufs: list[Any] = NO_BUFS  # (read only: one shared empty list, not one a call)
        if msg.args.bufs:
            try:
                bufs, _ = split_buffers(raw, msg.args.bufs, 0)
            except Exception as exc:
                conn.send(p.TaskDone(msg.task_id, error=task_error(exc, msg.method)))
                return
        job = Job(conn, msg.task_id, msg.method, msg.args, bufs, msg.num_returns)
        if msg.num_returns == p.STREAMING:
            job.stream = StreamControl(msg.stream_window)
        executor.jobs[msg.task_id] = job
        job.actor_id = msg.actor_id
        job.blocked = msg.blocked
        job.lane = lane
        lane.mailbox.append(job)
        if msg.args.refs and not executor.parse_args_now(job):
            job.ready = False
            self.worker.spawn(self._resolve(job))
        elif len(lane.mailbox) == 1:
            pumps = executor.pumps
            if pumps is None:
                self._pump(lane)
            else:  # a batch of calls: the lane is pumped once, at its end (Dispatch)
                pumps.append((self, lane))

    def _lane_for(self, method: str) -> Lane:
        if not self.lanes or self.cls is None:
            return self.lane
        group = getattr(getattr(self.cls, method, None), "__runtime_concurrency_group__", None)
        return self.lanes.get(group, self.lane) if group else self.lane

    def all_lanes(self) -> list[Lane]:
        return [self.lane, *self.lanes.values()]

    async def _resolve(self, job: Job) -> None:
        try:
            job.call_args = await self.executor.resolve_args(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            job.fn = raiser(exc)
        job.ready = True
        self._pump(job.lane)

    def pump(self, lane: Lane) -> None:
        """Start what ``lane`` can start now (the end of a batch of calls: Dispatch)."""
        self._pump(lane)

    def _bind(self, job: Job, memo: list[Any]) -> None:
        """Give ``job`` its method. ``memo`` holds the name, function and kind looked up last:
        a run of calls of one method looks it up once."""
        if job.name == memo[0]:
            job.fn, job.is_async = memo[1], memo[2]
            return
        try:
            job.fn, job.is_async = memo[1], memo[2] = self._method(job.name)
            memo[0] = job.name
        except AttributeError as exc:
            job.fn, memo[0] = raiser(exc), ""

    def _pump(self, lane: Lane | None = None) -> None:
        if lane is None:  # every lane (the actor became alive)
            for each in self.all_lanes():
                self._pump(each)
            return
        mailbox = lane.mailbox
        memo: list[Any] = ["", raiser, False]  # the method looked up last (_bind)
        while mailbox and self.state == ALIVE:
            job = mailbox[0]
            if not job.ready:
                return
            if job.fn is None:
                self._bind(job, memo)
            if job.is_async:
                # An async call starts after the sync calls before it have finished.
                if lane.running_async >= lane.max_async or lane.running_sync:
                    return
                # The ready async calls up to the lane's limit: one task starts them in
                # order (execution.async_runs); stop() cancels the one a call waits in.
                run = deque((mailbox.popleft(),))
                while mailbox and lane.running_async + len(run) < lane.max_async:
                    nxt = mailbox[0]
                    if not nxt.ready:
                        break
                    if nxt.fn is None:
                        self._bind(nxt, memo)
                    if not nxt.is_async:
                        break
                    run.append(mailbox.popleft())
                lane.running_async += len(run)
                lane.async_starting += len(run)
                if len(run) == 1:  # a lone call (a blocked caller's): a task of its own
                    job.atask = self.worker.loop.create_task(self.run_async(job))
                else:
                    start_async_run(self, lane, run)
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
                        self._bind(nxt, memo)
                        if nxt.is_async:
                            break
                    batch.append(mailbox.popleft())
                lane.running_sync += len(batch)
                lane.pool.submit(partial(self._run_sync_batch, batch))

    def _run_sync_batch(self, batch: list[Job]) -> None:
        if len(batch) == 1:
            self._run_sync(batch[0])
        else:
            run_batch(self, batch)  # answers handed back to the loop in bulk (sync_runs)

    def _method(self, name: str) -> tuple[Callable[..., Any], bool]:
        fn = getattr(self.instance, name)
        kind = self.method_kinds.get(name)
        if kind is None:
            kind = self.method_kinds[name] = is_async_fn(fn)
        return fn, kind

    def _run_sync(self, job: Job) -> None:
        done, bufs = self.call_one(job)
        inbox = self.worker.inbox  # (an answer out already: its bookkeeping wakes nobody)
        (inbox.post_later if job.answered else inbox.post)(self.sync_done, job, done, bufs)

    def call_one(self, job: Job) -> tuple[p.TaskDone | None, list[Any]]:
        """Run one sync call on this thread: its answer (None: it did not run, an earlier
        call ended the actor) for ``sync_done`` on the loop."""
        if self.exiting:
            return None, []
        job.env = self.env
        # (positional: a third cheaper than by keyword; demand, lent, cancelled as defaults)
        ctx = job.ctx = TaskContext(
            job.task_id, job.name, self.spec.actor_id, self.spec.name, {}, self.cls_name,
            False, False, self.bundle,
        )  # fmt: skip
        done, bufs = call_sync(self.worker, job, ctx, f"{self.cls_name}.{job.name}")
        if job.exit is not None:
            self.exiting = True
        return done, bufs

    def sync_done(self, job: Job, done: p.TaskDone | None, bufs: list[Any]) -> None:
        """Finish a sync call (loop): ``done`` None, it did not run."""
        lane = job.lane or self.lane
        lane.running_sync -= 1
        if done is None:  # did not run: the actor ended (or restarts: then it is resent)
            done = p.TaskDone(job.task_id, error=self._death_value())
        elif job.exit is not None:
            done = self._exit(job, done)
        self._finish(job, done, bufs)
        if lane.mailbox and not lane.running_sync:
            self._pump(lane)

    def not_started(self, job: Job) -> bool:
        """A call of an async run about to start finds the actor dead (loop): answered as a
        queued call is (``stop``), it does not run."""
        if self.state != DEAD:
            return False
        lane = job.lane or self.lane
        lane.running_async -= 1
        lane.async_starting -= 1
        self.executor.jobs.pop(job.task_id, None)
        job.conn.send(p.TaskDone(job.task_id, error=self._death_value()))
        return True

    async def run_async(self, job: Job) -> None:
        job.env = self.env
        ctx = job.ctx = TaskContext(
            job.task_id,
            job.name,
            self.spec.actor_id,
            self.spec.name,
            {},
            self.cls_name,
            False,
            False,
            self.bundle,
        )  # (positional: as in call_one)
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
        if job.exit is not None:
            job.atask = None  # this task ends by itself; stop() cancels the others
            done = self._exit(job, done)
        self._finish(job, done, bufs)
        if lane.mailbox and not lane.in_run:  # (a run pumps once, at its end: async_runs)
            self._pump(lane)

    def _exit(self, job: Job, done: p.TaskDone) -> p.TaskDone:
        """A method raised SystemExit; returns the answer of that call (loop).

        ``exit_actor()`` (ActorExit), or ``sys.exit()`` with ``max_restarts=0``: the actor
        ends for good, as in Ray; that call and every later one fail with ActorDiedError.
        ``sys.exit()`` when it may restart: as in Ray when its process exits, the head
        restarts it (then stops this instance); calls not run yet go to the next instance,
        and so does this one if ``max_task_retries`` allows.
        """
        if self.state == DEAD:
            return done
        name, spec = self.spec.class_name, self.spec
        if isinstance(job.exit, ActorExit) or spec.max_restarts == 0:
            how = "exit_actor()" if isinstance(job.exit, ActorExit) else "sys.exit()"
            self.death = ser.system_error_value(
                ActorDiedError,
                f"actor {name} exited: its method {job.name} called {how} (the actor is "
                "not restarted)",
            )
            self.stop(f"the actor exited in {name}.{job.name} ({how})")
            return done
        self.state = STARTING  # no call starts here any more; the head's restart stops it
        self.restarting = True
        self.death = ser.system_error_value(
            ActorUnavailableError, f"actor {name} is restarting (sys.exit() in {job.name})"
        )
        msg = p.KillActor(0, spec.actor_id, no_restart=False, reason=f"sys.exit() in {job.name}")
        worker = self.worker
        if worker.head is not None:
            worker.spawn(worker.head.handle_local(msg))
        elif (conn := worker.head_conn) is not None:
            conn.send(msg)  # its Reply (rid 0) is dropped
        if spec.max_task_retries != 0:
            return p.TaskDone(job.task_id, error=self.death)  # the caller sends it again
        return p.TaskDone(
            job.task_id,
            error=ser.system_error_value(
                ActorDiedError,
                f"actor {name} exited: {job.name} called sys.exit(); it restarts "
                "(max_task_retries=0: this call is not retried)",
            ),
        )

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
        if done.error is None:
            CALLS_DONE[0] += 1
        else:
            failed("actor_call", job.name, job.task_id, done.error)
        observe_call((now_ns() - job.received_ns) / 1e9)
        self.executor.answers.remember(done, bufs)
        if not job.answered:  # (the thread that ran it answered: calls.answer_now)
            send_answer(job.conn, done, bufs)  # gathered per loop pass (wire.gather)
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)

    def _death_value(self, *, may_have_run: bool = False) -> p.Value:
        if self.death is not None:
            return self.death
        suffix = "; the call may have run" if may_have_run else ""
        return ser.system_error_value(
            ActorDiedError, f"actor {self.spec.class_name} is dead: {self._reason}{suffix}"
        )

    def kill(self, reason: str, restarting: bool) -> None:
        """Stop it (runtime.kill, or the head); ``restarting``: it comes back elsewhere, so
        calls that did not start are answered "not here" (ActorUnavailableError) and their
        callers send them again."""
        if restarting:
            self.restarting = True
            self.death = ser.system_error_value(
                ActorUnavailableError, f"actor {self.spec.class_name} is restarting"
            )
        elif self.restarting:  # it asked for a restart (sys.exit()) and has none left
            self.restarting = False
            self.death = ser.system_error_value(
                ActorDiedError,
                f"actor {self.spec.class_name} exited (sys.exit()) with no restarts left",
            )
        self.stop(reason)

    def stop(self, reason: str) -> None:
        if self.state == DEAD:
            return
        self.state = DEAD
        self._reason = reason
        lanes = self.all_lanes()
        actor_id = self.spec.actor_id
        for job in list(self.executor.jobs.values()):  # running async calls stop now
            if job.lane in lanes and job.atask is not None and not job.atask.done():
                job.atask.cancel()
            if job.actor_id == actor_id:  # a sync one still running is answered by the loop,
                job.blocked = False  # with the death (_finish), not from its thread
        for lane in lanes:
            mailbox, lane.mailbox = lane.mailbox, deque()
            for job in mailbox:
                self.executor.jobs.pop(job.task_id, None)
                job.conn.send(p.TaskDone(job.task_id, error=self._death_value()))
            lane.pool.shutdown()
        self.executor.actor_stopped(self, reason if self.death is None else death_text(self.death))


__all__ = ["ALIVE", "DEAD", "STARTING", "ActorSite", "HostedActor"]
