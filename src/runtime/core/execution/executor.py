"""Running work on a node: tasks under the node's resource ledger, and hosted actors.

``async def`` functions and methods run on the node's loop; plain ``def`` ones run on threads
(an actor's on the node's shared strand pool, one call at a time, unless it asked for threads
of its own), so a blocking call never stalls the loop. An actor runs the calls it receives in
arrival order, which keeps every caller's order.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from ..common.context import TaskContext
from ..common.exceptions import (
    ActorDiedError,
    InfeasibleError,
    RuntimeBaseError,
    TaskCancelledError,
)
from ..common.metrics import TASKS_DONE, failed
from ..common.strands import StrandPool
from ..common.threads import ThreadPool
from ..objects import serialization as ser
from ..objects.refs import ObjectRef
from ..scheduling.host import HostLedger, HostScheduler, set_visible_devices
from ..scheduling.scheduler import LocalScheduler, pick_bundle
from ..wire import protocol as p
from ..wire.gather import send_task_answer
from ..wire.transport import Connection, split_buffers
from .calls import (
    MAX_SPILLS,
    MAX_TOMBSTONES,
    Answers,
    ExecutionHost,
    Job,
    Lane,
    NoRoomError,
    StreamControl,
    call_async,
    call_sync,
    cancelled_before_run,
    encode_returns,
    group_gone,
    is_async_fn,
    spilled,
    task_error,
)
from .chain import Run, drop_peer, joined, run_chain, start_run
from .creating import create_many
from .hosted import HostedActor
from .hostwait import HostWait
from .ledgers import answer_request, free_bundles, job_rows, report_message, reserve_bundles
from .pools import EnvPools
from .processes import ACTOR_GPUS_ENV, ChildProcesses
from .runtime_env import EnvManager

log = logging.getLogger("runtime.executor")


class Executor:
    """Runs tasks and hosts actors for one node."""

    def __init__(self, worker: ExecutionHost) -> None:
        self.worker = worker
        path = worker.host_ledger
        #: The host's resources, shared with the other node processes of this host.
        self.sched = HostScheduler(
            HostLedger(path) if path else HostLedger(None, worker.resources), worker.slot
        )
        #: Queued work that waits for the host is woken when another process gives back.
        self.hostwait = HostWait(worker.loop, self.sched, self._granted)
        #: GPU ids held by the actors and the bundles here.
        self.actor_gpus: dict[bytes, list[int]] = {}
        self.bundle_gpus: dict[tuple[bytes, int], list[int]] = {}
        self.functions: dict[bytes, tuple[Callable[..., Any], bool]] = {}
        self.classes: dict[bytes, type] = {}
        self.pool = ThreadPool("runtime-task", 64)
        #: The threads default sync actors share, one strand each (common.strands).
        self.strands = StrandPool()
        self.waiting: dict[bytes, Job] = {}
        self.run: Run | None = None  # the last run of tasks started on a pool thread
        #: Every task and actor call received and not answered yet (for cancel and acks).
        self.jobs: dict[bytes, Job] = {}
        self.answers = Answers(self.jobs)  # recent small answers (idempotency)
        #: While a CallBatch is handed in, the lanes to pump at its end (HostedActor.on_call).
        self.pumps: list[tuple[HostedActor, Lane]] | None = None
        self.envs = EnvManager(worker)
        #: Node processes started here for actors that must not share this one's fate.
        self.children = ChildProcesses(worker)
        #: Tasks with a runtime_env run in a process of their environment's.
        self.pools = EnvPools(
            worker,
            self.children,
            self.envs,
            self.jobs,
            release=self._release,
            ledger=self._ledger,
            report=self._report,
        )
        #: Placement group bundles reserved here: a ledger each, carved out of ``sched``.
        self.bundles: dict[tuple[bytes, int], LocalScheduler] = {}
        self.actors: dict[bytes, HostedActor] = {}
        #: Why recently dead actors died, so late calls get the real cause (bounded).
        self.tombstones: OrderedDict[bytes, p.Value] = OrderedDict()
        self._report_armed = False
        #: CreateActors: create_actor for each of its specs (execution.creating).
        self.create_actors = partial(create_many, self.create_actor)
        #: Request type -> what it does here (on_control answers each).
        self._control: dict[type, Callable[[Any], object]] = {
            p.CreateActor: lambda msg: self.create_actor(msg.spec),
            p.CreateActors: self.create_actors,
            p.KillActor: lambda msg: self.kill_actor(
                msg.actor_id,
                "the actor was killed with runtime.kill",
                restarting=not msg.no_restart,
            ),
            p.ReserveBundles: self.on_bundles,
            p.ReleaseBundles: self.on_bundles,
        }
        self._report()  # what the host has free now (its other processes may hold some)

    def close(self) -> None:
        self.children.close()
        self.hostwait.close()
        self.pool.shutdown()
        self.strands.close()
        self.sched.ledger.close()
        for actor in list(self.actors.values()):
            actor.stop("the node is shutting down")

    # --- tasks ---------------------------------------------------------------------------

    def on_submit_task(self, conn: Connection, msg: p.SubmitTask, raw: memoryview) -> None:
        if self.answers.duplicate(conn, msg.task_id, msg.attempt):
            return
        try:
            # With a runtime_env the function may live in a module it ships: load it later.
            fn, is_async = (None, False) if msg.runtime_env else self._function(msg)
            bufs, _ = split_buffers(raw, msg.args.bufs, 0)
        except Exception as exc:
            conn.send(p.TaskDone(msg.task_id, error=task_error(exc, msg.fn_name)))
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
        if self.pools.is_pool:  # the node that relayed it holds its resources: lent to us
            job.demand = {k: v for k, v in job.demand.items() if k != "GPU"}
            self.pools.lent_here(self.sched, job.demand, 1)
        if msg.num_returns == p.STREAMING:
            job.stream = StreamControl(msg.stream_window)
        if msg.bundle is not None and not self.pools.is_pool:  # a pool's parent holds it
            job.bundle = (bytes(msg.bundle[0]), int(msg.bundle[1]))
        if msg.capture and msg.bundle is not None:
            job.capture = bytes(msg.bundle[0])
        self.jobs[msg.task_id] = job
        if msg.runtime_env or (msg.args.refs and not self.parse_args_now(job)):
            job.ready = False
            self.worker.spawn(self._resolve_then_queue(job, msg))
        else:
            self._queue(job)

    def _function(self, msg: p.SubmitTask) -> tuple[Callable[..., Any], bool]:
        entry = self.functions.get(msg.fn_id)
        if entry is None:
            # Sent once per node: maybe with a task this node relayed to an env's process.
            blob = msg.fn_blob or self.pools.blobs.get(msg.fn_id)
            if blob is None:
                raise RuntimeBaseError(f"node does not know function {msg.fn_name}")
            fn = ser.loads_function(blob)
            entry = self.functions[msg.fn_id] = (fn, is_async_fn(fn))
            if self.pools.relays:  # a task of another environment may need it later
                self.pools.blobs[msg.fn_id] = blob
        return entry

    async def _resolve_then_queue(self, job: Job, msg: p.SubmitTask) -> None:
        if self.pools.wants(msg):  # runs in its environment's process: loads nothing here
            self.pools.keep(job, msg)
            job.ready = True
            self._queue(job)
            return
        try:
            if msg.runtime_env:
                job.env = await self.envs.prepare(msg.runtime_env)
                with self.envs.applied(job.env):
                    job.fn, job.is_async = self._function(msg)
            if job.args.refs:
                job.call_args = await self.resolve_args(job)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._done_unqueued(job, task_error(exc, job.name))
            return
        job.ready = True
        self._queue(job)

    def parse_args_now(self, job: Job) -> bool:
        """For a call whose arguments hold refs: deserialize them now; True when none is a
        top-level ref to fetch first (refs nested in containers, such as the one in an
        actor handle, stay refs), so the call is ready at once like one without refs.
        False: some must be fetched (``resolve_args`` does), or deserializing failed
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

    async def resolve_args(self, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = job.call_args or ser.deserialize_args(job.args, job.buffers)
        if any(isinstance(a, ObjectRef) for a in args) or any(
            isinstance(v, ObjectRef) for v in kwargs.values()
        ):
            get = self.worker.get_async
            args = tuple([await get(a) if isinstance(a, ObjectRef) else a for a in args])
            kwargs = {
                k: (await get(v) if isinstance(v, ObjectRef) else v) for k, v in kwargs.items()
            }
        job.mark_fetched()
        return args, kwargs

    def _queue(self, job: Job) -> None:
        if job.cancelled:
            self._done_unqueued(job, cancelled_before_run(job.name))
            return
        try:
            ledger: LocalScheduler | HostScheduler = self.sched
            if job.bundle is not None:
                job.bundle = pick_bundle(self.bundles, job.bundle, job.demand)
                ledger = self.bundles[job.bundle]
            granted = ledger.request(job.task_id, job.demand)
            if (
                not granted
                and job.bundle is None
                and job.spills < MAX_SPILLS
                and self.sched.never_here(job.demand)
            ):
                # Actors or bundles hold what it needs here, maybe for good: send it back
                # to its submitter to place elsewhere (its view of this node was stale).
                self.sched.cancel(job.task_id)
                self._done_unqueued(job, spilled(job.name))
                return
        except InfeasibleError as exc:
            self._done_unqueued(job, task_error(exc, job.name))
            return
        if granted:
            self._report()
            self._start(job)
        elif not joined(self, job):  # (joined: it runs after the run under way, chain.py)
            self.waiting[job.task_id] = job
            if job.bundle is None:
                self.hostwait.arm()

    def _granted(self, keys: list[Any]) -> None:
        for key in keys:
            self._start(self.waiting.pop(key))
        self._report()

    def _start(self, job: Job) -> None:
        if self.pools.to_relay and self.pools.starts(job):
            return
        ctx = job.ctx = TaskContext(job.task_id, job.name, demand=job.demand, bundle=job.bundle)
        ctx.capture = job.capture
        if job.demand.get("GPU"):
            ctx.gpu_ids = (
                self.sched.gpus.pop(job.task_id, [])
                if job.bundle is None
                else self.bundle_gpus.get(job.bundle, [])
            )
            set_visible_devices(ctx.gpu_ids)
        if job.is_async:
            job.atask = self.worker.spawn(self._run_async(job, ctx))
        elif run := start_run(self, job):  # the tasks behind it run on its thread (chain)
            self.pool.submit(partial(run_chain, self, job, ctx, run))
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
        """The tasks and actor calls this node has (``runtime list tasks``)."""
        return job_rows(self.jobs)

    def _finish(
        self, job: Job, ctx: TaskContext, done: p.TaskDone, bufs: list[Any], keep: bool = False
    ) -> None:
        """The task's answer (loop); ``keep``: its resources pass to the next of its chain."""
        self.jobs.pop(job.task_id, None)
        if done.error is None:
            TASKS_DONE[0] += 1
        else:
            failed("task", job.name, job.task_id, done.error)
        self.answers.remember(done, bufs, job.attempt)
        send_task_answer(job.conn, done, bufs, bool(self.jobs))  # may wait (wire.gather)
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)
        if not ctx.lent and not keep:
            self._release(job.demand, job.bundle, ctx.gpu_ids if job.bundle is None else None)
        if (
            ctx.gpu_ids
            and not self.actor_gpus
            and not any(j.ctx and j.ctx.gpu_ids for j in self.jobs.values())
        ):
            set_visible_devices(None)  # no GPU holder left here: as the node started
        if self.pools.is_pool and not job.actor_id:
            self.pools.lent_here(self.sched, job.demand, -1)

    def _done_unqueued(self, job: Job, error: p.Value) -> None:
        self.jobs.pop(job.task_id, None)
        if self.pools.is_pool and not job.actor_id:
            self.pools.lent_here(self.sched, job.demand, -1)
        job.conn.send(p.TaskDone(job.task_id, error=error))
        if job.args.refs:
            self.worker.refs.unpin(job.args.refs)

    def _ledger(self, bundle: tuple[bytes, int] | None) -> LocalScheduler | HostScheduler | None:
        return self.sched if bundle is None else self.bundles.get(bundle)

    def _release(
        self,
        demand: dict[str, float],
        bundle: tuple[bytes, int] | None = None,
        gpu_ids: list[int] | None = None,
        *,
        long: bool = False,
        lend: bool = False,
    ) -> None:
        ledger = self._ledger(bundle)
        if not demand or ledger is None:  # a removed bundle gave its resources back already
            return
        if lend:
            granted = ledger.borrow(demand)
        else:
            granted = ledger.release(demand, gpu_ids, long and bundle is None)
        for key in granted:
            job = self.waiting.pop(key)  # type: ignore[call-overload]
            self._start(job)
        self._report()
        if self.sched.queue:  # what is left may now wait for the host, not this process
            self.hostwait.arm()

    def lend(self, ctx: TaskContext) -> None:
        """The task blocks in get(): let others use its resources meanwhile (loop)."""
        if ctx.demand and not ctx.lent:
            ctx.lent = True
            self._release(ctx.demand, ctx.bundle, lend=True)
            if self.pools.is_pool:
                self.pools.lend(ctx.task_id, True)

    def take_back(self, ctx: TaskContext) -> None:
        ledger = self._ledger(ctx.bundle)
        if ctx.lent and ledger is not None:
            ctx.lent = False
            ledger.reacquire(ctx.demand)
            self._report()
            if self.pools.is_pool:
                self.pools.lend(ctx.task_id, False)

    # --- placement group bundles ---------------------------------------------------------------

    def on_bundles(self, msg: p.ReserveBundles | p.ReleaseBundles) -> None:
        """Reserve (all or none) or release placement group bundles here (loop)."""
        if isinstance(msg, p.ReserveBundles):
            reserve_bundles(self.sched, self.bundles, self.bundle_gpus, msg)
            self._report()
            return
        # The bundles' resources go back first: whatever fails below must not leak them.
        keys, freed = free_bundles(self.sched, self.bundles, self.bundle_gpus, msg)
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
                    self._done_unqueued(job, group_gone(job.name))
            for job in list(self.jobs.values()):
                if job.bundle == key and job.ctx is not None:
                    try:
                        self.cancel(job.task_id, force=False, recursive=True)
                    except Exception:
                        log.exception("cancelling a task of a removed placement group failed")
        for granted in freed:
            self._start(self.waiting.pop(granted))  # type: ignore[call-overload]
        self._report()

    def _report(self) -> None:
        if not self._report_armed:
            self._report_armed = True
            self.worker.loop.call_later(0.005, self._send_report)

    def _send_report(self) -> None:
        self._report_armed = False
        worker = self.worker
        msg = report_message(worker.peer_id, self.sched)
        if msg is None:  # the ledger is closed: the node is going
            return
        if worker.head is not None:
            worker.head.on_report(msg)
        elif (conn := worker.head_conn) is not None:
            conn.send(msg)
        elif not worker.closing:  # not joined yet: the host's state is told once it is
            self._report_armed = True
            worker.loop.call_later(0.05, self._send_report)

    def peer_lost(self, peer: str) -> None:
        """Drop queued work from a caller that went away; stop its streams. (A node process
        of this host that died gives back what it held.)"""
        if self.sched.ledger.sweep():
            self._report()
            self.hostwait.arm()
        for key, job in list(self.waiting.items()):
            if job.conn.peer_id == peer:
                ledger = self._ledger(job.bundle)
                if ledger is not None:
                    ledger.cancel(key)
                del self.waiting[key]
                self.jobs.pop(key, None)
        for job in drop_peer(self.run, peer) if self.run is not None else ():
            self.jobs.pop(job.task_id, None)
        for job in list(self.jobs.values()):
            if job.conn.peer_id == peer and job.stream is not None:
                self.cancel(job.task_id, force=False, recursive=True)

    # --- streams and cancellation ------------------------------------------------------------

    def on_stream_ack(self, msg: p.StreamAck) -> None:
        if self.pools.relayed and self.pools.forward_ack(msg):
            return  # its stream runs in a runtime_env's process
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
            self.pools.to_relay.pop(task_id, None)
            ledger = self._ledger(job.bundle)
            if ledger is not None:
                ledger.cancel(task_id)
            self._done_unqueued(job, cancelled_before_run(job.name))
            return
        lane = job.lane
        if lane is not None and job in lane.mailbox:  # an actor call not started yet
            lane.mailbox.remove(job)
            self._done_unqueued(job, cancelled_before_run(job.name))
            for actor in self.actors.values():
                if lane in actor.all_lanes():
                    actor._pump(lane)
            return
        if self.pools.relayed and self.pools.cancel(task_id, force, recursive):
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
        """The head's requests to this node (create or kill an actor, reserve or release
        bundles), answered with a Reply: True, or the error it raised."""
        run = self._control.get(type(msg))
        if run is not None:
            answer_request(self.worker, conn, msg, run)

    def create_actor(self, spec: p.ActorSpec) -> Any:
        """Reserve the actor's resources here and start its constructor (loop); or start a
        dedicated process for it (a coroutine answering where: [node id, address])."""
        if spec.actor_id in self.actors:
            return None
        bundle = None
        strategy = spec.strategy
        cls = self.classes.get(spec.cls_id)
        # In the process started for it alone, its parent holds its resources (GPU ids too).
        if self.children.serves_actor(spec.actor_id):
            if spec.resources.get("GPU"):
                n = int(os.environ.get(ACTOR_GPUS_ENV, "0"))
                self.actor_gpus[spec.actor_id] = list(range(n))
        else:
            if isinstance(strategy, list) and len(strategy) == 3 and strategy[0] == "pg":
                bundle = pick_bundle(
                    self.bundles, (bytes(strategy[1]), int(strategy[2])), spec.resources
                )
            ledger = self.sched if bundle is None else self.bundles[bundle]
            if not ledger.try_take(spec.resources, long=True):
                raise NoRoomError("no room on this node now")
            self._report()
            if spec.dedicated or spec.runtime_env:  # a process of its own (its env's own)
                ids = ledger.last_gpus if bundle is None else self.bundle_gpus.get(bundle, [])
                release = partial(self._release, gpu_ids=None if bundle else ids, long=True)
                return self.children.host_actor(spec, bundle, release, self.envs, ids)
            if spec.resources.get("GPU"):
                ids = ledger.last_gpus if bundle is None else self.bundle_gpus.get(bundle, [])
                self.actor_gpus[spec.actor_id] = ids
                set_visible_devices(ids)
        if cls is None and spec.concurrency_groups and not spec.runtime_env:
            # Calls are sorted into their groups' mailboxes by the class's methods; otherwise
            # it loads on the actor's thread (imports may take seconds) or once its env is ready.
            cls = self.classes[spec.cls_id] = ser.loads_function(spec.cls_blob)
        actor = HostedActor(self, spec, cls)
        actor.bundle = bundle
        self.actors[spec.actor_id] = actor
        actor.start()
        return None

    def kill_actor(self, actor_id: bytes, reason: str, restarting: bool = False) -> None:
        """Stop an actor here; ``restarting``: it comes back elsewhere, so calls that did not
        start are answered "not here" (ActorUnavailableError) and their callers send again."""
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.kill(reason, restarting)

    def actor_stopped(self, actor: HostedActor, reason: str) -> None:
        if self.actors.pop(actor.spec.actor_id, None) is None:
            return
        death = actor._death_value()
        self.tombstones[actor.spec.actor_id] = death
        if len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)
        gpu_ids = self.actor_gpus.pop(actor.spec.actor_id, None)
        if not self.children.serves_actor(actor.spec.actor_id):  # else its parent holds them
            gpus = gpu_ids if actor.bundle is None else None
            self._release(dict(actor.spec.resources), actor.bundle, gpus, long=True)
        msg = p.ActorGone(actor.spec.actor_id, reason, death)
        worker = self.worker
        if worker.head is not None:
            worker.head.on_message(None, msg)
        elif (conn := worker.head_conn) is not None:
            conn.send(msg)
        self.children.after_actor_stopped(len(self.actors))

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


__all__ = ["Executor", "HostedActor", "encode_returns"]
