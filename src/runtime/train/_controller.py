"""The controller: a coroutine in the driver that drives one worker group after another.

One attempt: reserve a placement group with one bundle per rank (all or none), start a
rank actor in each bundle, let rank 0 choose the rendezvous port, start every rank's loop,
then await the ranks' reports (one task per rank awaits its actor's long poll; nothing
blocks the loop). A report index complete on every rank keeps rank 0's metrics and
registers the checkpoint the ranks uploaded. A rank that raises or whose process dies tears
the whole group down (actors killed, group removed); the next attempt resumes from the
latest checkpoint, until ``max_failures`` is used up.

The watchdog: with ``FailureConfig(report_timeout_s)``, a rank quiet for that long is named
with its host, pid and Python stack, and so are the ranks it keeps waiting in a collective;
when a rank fails (a collective that timed out, say), the stacks of the others are taken
before the group is torn down, so the error names the rank that never joined the collective.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import runtime
from runtime.exceptions import InfeasibleError, RuntimeBaseError
from runtime.util import (
    PlacementGroup,
    PlacementGroupSchedulingStrategy,
    placement_group,
    remove_placement_group,
)

from . import _metrics
from ._backend import Backend, BackendConfig
from ._checkpoint import Checkpoint
from ._config import DataConfig, FailureConfig, ScalingConfig
from ._context import TrainContext
from ._errors import TrainingFailedError, WorkerGroupError
from ._ingest import make_shards
from ._preload import preload_modules
from ._result import Result
from ._storage import RunStorage
from ._watchdog import diagnose, in_collective
from ._worker import RankActor, RankStart

WORKER_ADDRS_ENV = "RUNTIME_TRAIN_WORKER_ADDRS"  # "host:port,..." of every rank, by rank

logger = logging.getLogger("runtime.train")

_POLL_S = 5.0  # a rank's long poll; events come back at once, this only bounds a quiet one
_SETUP_TIMEOUT_S = 120.0
_STACK_TIMEOUT_S = 5.0
_PLACE_LOG_S = 30.0
_GRACE_S = 10.0  # after a failure, how long the other ranks may finish reports already begun
#: How long an elastic group's probe for more room may wait to be placed (see _room_for).
_GROW_PROBE_S = 2.0

OnReport = Callable[[dict[str, Any], Checkpoint | None], None]


@dataclass
class RunSpec:
    """Everything one ``fit()`` needs, gathered by the trainer."""

    fn: Callable[..., Any]
    config: dict[str, Any] | None
    scaling: ScalingConfig
    backend_config: BackendConfig
    failure: FailureConfig
    storage: RunStorage
    name: str
    datasets: dict[str, Any]
    data_config: DataConfig
    resume_from: Checkpoint | None
    metadata: dict[str, Any] | None
    verbose: int
    on_report: OnReport | None = None
    in_tune: bool = False
    run_config: Any = None  # the trainer's RunConfig (stop criteria, callbacks, runtime_env)
    restoring: bool = False  # continue the run already in the folder (Trainer.restore)


class RankFailure(Exception):
    """A rank raised, or its actor, process or node died."""

    def __init__(self, message: str, cause: BaseException | None = None, rank: int = -1) -> None:
        super().__init__(message)
        self.cause = cause
        self.rank = rank


def rank_capacity(bundle: dict[str, float]) -> tuple[int, list[dict[str, float]]]:
    """How many ranks the cluster could ever hold, and the resources of each host.

    Each rank needs its own node process (``torch.distributed`` is per process), and the
    processes of a host share its resources: a host holds as many ranks as it has
    processes, and as its resources hold bundles.
    """
    hosts = _hosts()
    return sum(_ranks(rows, "Resources", bundle) for rows in hosts.values()), [
        rows[0]["Resources"] for rows in hosts.values()
    ]


def free_capacity(bundle: dict[str, float]) -> int:
    """How many ranks of ``bundle`` fit now, from what each host has free."""
    return sum(_ranks(rows, "Available", bundle) for rows in _hosts().values())


def _hosts() -> dict[str, list[dict[str, Any]]]:
    hosts: dict[str, list[dict[str, Any]]] = {}
    for n in runtime.nodes():
        if n.get("Alive") and not n.get("IsDriver"):
            hosts.setdefault(str(n.get("HostID") or n["NodeID"]), []).append(n)
    return hosts


def _ranks(rows: list[dict[str, Any]], key: str, bundle: dict[str, float]) -> int:
    have = rows[0].get(key, {})
    fit = len(rows)
    for name, amount in bundle.items():
        if amount > 0:
            fit = min(fit, int((have.get(name, 0.0) + 1e-9) // amount))
    return max(0, fit)


class _Resize(Exception):
    """Room for more ranks of an elastic group appeared: restart it larger, at ``size``."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


def check_fits(scaling: ScalingConfig) -> None:
    """WorkerGroupError now if the cluster can never hold the group."""
    bundle = scaling.bundle()
    capacity, alive = rank_capacity(bundle)
    if capacity < scaling.min_workers:
        raise WorkerGroupError(
            f"the worker group needs {scaling.min_workers} ranks of {bundle}, each in its own "
            f"node process, but only {capacity} of the cluster's {len(alive)} nodes can hold "
            f"one (cluster resources: {runtime.cluster_resources()}). Lower num_workers or "
            "resources_per_worker, or add nodes."
        )


@dataclass
class _Group:
    pg: PlacementGroup
    actors: list[Any] = field(default_factory=list)
    where: list[dict[str, Any]] = field(default_factory=list)
    helpers: list[Any] = field(default_factory=list)  # actors that live as long as the group

    def describe(self, rank: int) -> str:
        if rank < len(self.where):
            w = self.where[rank]
            return f"rank {rank} (node {w['node_id'][:12]}, pid {w['pid']})"
        return f"rank {rank}"

    def host(self, rank: int) -> str:
        return str(self.where[rank]["host"]) if rank < len(self.where) else "?"

    async def teardown(self) -> None:
        """Stop the loops, kill the rank actors, free the placement group; never raises."""
        refs = []
        for actor in self.actors:
            with contextlib.suppress(Exception):
                refs.append(actor.stop.remote())
        if refs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_gather(refs), 2.0)
        for actor in self.actors + self.helpers:
            with contextlib.suppress(Exception):
                runtime.kill(actor)
        with contextlib.suppress(Exception):
            remove_placement_group(self.pg)


async def _gather(refs: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*refs))


#: How long an elastic group sized above its minimum waits to be placed before it starts at
#: its minimum instead.
_ELASTIC_PATIENCE_S = 5.0


async def _place(
    scaling: ScalingConfig, hint: str = "", patience: float | None = None
) -> PlacementGroup | None:
    """A placed group of ``num_workers`` bundles; WorkerGroupError if it can never be;
    None if it is not placed within ``patience`` seconds (when given), or, with a patience,
    if the cluster cannot hold it now (an elastic group sized above its minimum by a view
    that changed since: a node lost, or one restarted and not yet back, seen here in CI)."""
    try:
        await asyncio.to_thread(check_fits, scaling)
    except WorkerGroupError:
        if patience is None:
            raise
        return None
    bundle = scaling.bundle()
    pg = placement_group([bundle] * scaling.min_workers, strategy=scaling.placement_strategy)
    ready = asyncio.ensure_future(_await(pg.ready()))
    started = last_log = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({ready}, timeout=2.0)
            if done:
                try:
                    ready.result()
                except InfeasibleError as exc:
                    raise WorkerGroupError(f"the worker group cannot be placed: {exc}") from exc
                return pg
            if patience is not None and time.monotonic() - started > patience:
                ready.cancel()
                with contextlib.suppress(Exception):
                    remove_placement_group(pg)
                return None
            await asyncio.to_thread(check_fits, scaling)  # nodes may have died meanwhile
            if time.monotonic() - last_log > _PLACE_LOG_S:
                last_log = time.monotonic()
                logger.warning(
                    "waiting %.0f s for resources for %d ranks of %s (other work holds them)%s",
                    last_log - started,
                    scaling.min_workers,
                    bundle,
                    hint,
                )
    except BaseException:
        ready.cancel()
        with contextlib.suppress(Exception):
            remove_placement_group(pg)
        raise


async def _await(ref: Any) -> Any:
    return await ref


async def _room_for(scaling: ScalingConfig, more: int) -> bool:
    """True if ``more`` bundles can be placed now besides the running group's.

    The cluster's resource view lags placements by a heartbeat or more under load: right
    after a group is placed, it can still show the group's own CPUs as free, and growing on
    that would tear the group down for a larger one that waits for resources nothing frees.
    Placing the extra bundles (then freeing them at once) asks the nodes themselves.
    """
    pg = placement_group([scaling.bundle()] * more, strategy=scaling.placement_strategy)
    try:
        await asyncio.wait_for(_await(pg.ready()), _GROW_PROBE_S)
        return True
    except (TimeoutError, InfeasibleError, RuntimeBaseError):
        return False
    finally:
        with contextlib.suppress(Exception):
            remove_placement_group(pg)


def _contexts(spec: RunSpec, where: list[dict[str, Any]]) -> list[TrainContext]:
    hosts: list[str] = []
    for w in where:
        if w["host"] not in hosts:
            hosts.append(w["host"])
    seen: dict[str, int] = {}
    out = []
    for rank, w in enumerate(where):
        local = seen.get(w["host"], 0)
        seen[w["host"]] = local + 1
        out.append(
            TrainContext(
                world_rank=rank,
                world_size=len(where),
                local_rank=local,
                local_world_size=sum(1 for x in where if x["host"] == w["host"]),
                node_rank=hosts.index(w["host"]),
                node_id=w["node_id"],
                experiment_name=spec.name,
                storage_path=spec.storage.path,
                use_gpu=spec.scaling.use_gpu,
                metadata=spec.metadata,
            )
        )
    return out


def _gpu_ids(spec: RunSpec, ctx: TrainContext, where: dict[str, Any]) -> list[str] | None:
    per_rank = int(spec.scaling.bundle().get("GPU", 0))
    if not spec.scaling.use_gpu or per_rank < 1:
        return None
    granted = [str(i) for i in where.get("gpu_ids") or []]
    if len(granted) >= per_rank:  # what the runtime granted this rank's actor
        return granted[:per_rank]
    visible = where.get("cuda_visible_devices")
    pool = visible.split(",") if visible else [str(i) for i in range(64)]
    return pool[ctx.local_rank * per_rank : (ctx.local_rank + 1) * per_rank]


class _MonitorState:
    """What the controller knows about the ranks' reports during one attempt."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pending: dict[int, dict[int, tuple[dict[str, Any], str | None]]] = {}
        self.finished: set[int] = set()
        now = time.monotonic()
        self.last_seen = dict.fromkeys(range(n), now)
        self.warned = dict.fromkeys(range(n), now)
        self.last_index = dict.fromkeys(range(n), 0)
        self.uploaded: set[str] = set()  # checkpoint folders the ranks wrote this attempt

    def handle(self, rank: int, event: tuple[Any, ...]) -> tuple[str, Any] | None:
        """Record one event; for an error, (traceback text, the exception or None)."""
        kind = event[0]
        if kind == "report":
            _, index, metrics, dirname, _t = event
            self.pending.setdefault(index, {})[rank] = (metrics, dirname)
            if dirname is not None:
                self.uploaded.add(dirname)
            self.last_index[rank] = index
            self.last_seen[rank] = time.monotonic()
        elif kind in ("done", "stopped"):
            self.finished.add(rank)
        elif kind == "error":
            self.finished.add(rank)
            _, _, text, blob = event
            cause = None
            if blob is not None:
                with contextlib.suppress(Exception):
                    cause = pickle.loads(blob)
            return text, cause
        return None

    def caught_up(self, failed: int, n: int) -> bool:
        """Every other rank has made the reports the failed rank made (or is gone)."""
        target = self.last_index[failed]
        return all(
            r == failed or r in self.finished or self.last_index[r] >= target for r in range(n)
        )


class TrainRunContext:
    """What a ``RunConfig`` callback learns about the run (Ray Train's ``TrainRunContext``)."""

    def __init__(self, name: str, run_config: Any, storage_path: str) -> None:
        self.name = name
        self.run_config = run_config
        self.storage_path = storage_path

    def get_run_config(self) -> Any:
        return self.run_config

    def __repr__(self) -> str:
        return f"TrainRunContext(name={self.name!r}, storage_path={self.storage_path!r})"


class Controller:
    """Runs a :class:`RunSpec` to a :class:`Result`."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.history: list[dict[str, Any]] = []
        self.next_index = 1
        if spec.restoring:
            self.history, self.next_index = spec.storage.load_previous()
        self.checkpoint: Checkpoint | None = spec.resume_from
        self.resume_dir: str | None = None  # a folder of this run to resume from, if any
        self.stopping = False  # the stop criteria were met
        # this attempt's scaling: an elastic group's size is chosen per attempt
        self.scaling = spec.scaling
        self.attempt_checkpoints = 0
        self.grow_to = 0  # the size an elastic group restarts at after _Resize (0: measure)
        rc = spec.run_config
        self.callbacks = list(getattr(rc, "callbacks", None) or [])
        self.run_context = TrainRunContext(spec.name, rc, spec.storage.path)

    def run(self) -> Result:
        """Run to the end from synchronous code (in a thread of its own if this thread
        already runs an event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async())
        box: list[Any] = []
        ctx = contextvars.copy_context()  # Tune's reporter hook is a context variable

        def target() -> None:
            try:
                box.append(ctx.run(asyncio.run, self.run_async()))
            except BaseException as exc:
                box.append(exc)

        thread = threading.Thread(target=target, name="train-controller")
        thread.start()
        thread.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        result: Result = box[0]
        return result

    async def run_async(self) -> Result:
        spec = self.spec
        failures = 0
        error: BaseException | None = None
        while True:
            try:
                await self._attempt()
                break
            except WorkerGroupError as exc:
                if failures == 0:
                    raise  # nothing ran yet: the caller's input cannot work
                error = TrainingFailedError(
                    f"the worker group could not be restarted after {failures} failure(s): {exc}"
                )
                error.__cause__ = exc
                break
            except _Resize as exc:
                logger.warning("resizing the worker group from %s: %s", self.checkpoint, exc)
                self.grow_to = exc.size
                continue
            except RankFailure as exc:
                failures += 1
                self._callbacks_after_exception(exc)
                limit = spec.failure.max_failures
                if limit != -1 and failures > limit:
                    error = TrainingFailedError(
                        f"training failed {failures} time(s), more than max_failures={limit} "
                        f"allows; the last failure: {exc}"
                    )
                    error.__cause__ = exc.cause
                    break
                logger.warning(
                    "restarting the worker group (failure %d of %s) from %s: %s",
                    failures,
                    "unlimited" if limit == -1 else limit,
                    self.checkpoint.path if self.checkpoint else "the start (no checkpoint)",
                    str(exc).splitlines()[0],
                )
        latest = spec.storage.latest() or self.checkpoint
        await asyncio.to_thread(spec.storage.save_state, error)
        return Result(
            metrics=dict(self.history[-1]) if self.history else {},
            checkpoint=latest,
            path=spec.storage.path,
            error=error,
            metrics_history=list(self.history),
            best_checkpoints=[(c, m) for _, _, c, m in spec.storage.kept],
            filesystem=spec.storage.context.fs,
        )

    async def _start(self, group: _Group) -> None:
        spec = self.spec
        n = self.scaling.min_workers  # sized for this attempt
        bundle = spec.scaling.bundle()
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        remote_cls = runtime.remote(RankActor)
        preload = ["runtime.data"] if spec.datasets else []
        # forked from a warm process of the node that imported these (torch: once per node)
        warm = preload_modules(
            spec.fn, getattr(spec.backend_config, "preload_modules", ()), bool(spec.datasets)
        )
        runtime_env = getattr(spec.run_config, "worker_runtime_env", None)
        env_vars = dict((runtime_env or {}).get("env_vars") or {})
        for rank in range(n):
            strategy = PlacementGroupSchedulingStrategy(group.pg, rank)
            options: dict[str, Any] = {
                "num_cpus": bundle.get("CPU", 0.0),
                "num_gpus": bundle.get("GPU", 0.0),
                "resources": custom or None,
                "scheduling_strategy": strategy,
                "max_concurrency": 4,
                # a process of its own: a torn-down rank ends with it (no thread stuck in a
                # collective), and torch.distributed's process-global state is this rank's
                "dedicated_process": warm,
            }
            if runtime_env:
                options["runtime_env"] = runtime_env
            group.actors.append(remote_cls.options(**options).remote())
        try:
            group.where = await asyncio.wait_for(
                _gather([a.setup.remote(env_vars, preload) for a in group.actors]),
                _SETUP_TIMEOUT_S,
            )
        except (RuntimeBaseError, TimeoutError) as exc:
            raise RankFailure(f"the rank actors did not start: {exc}", exc) from exc
        pids = [(w["host"], w["pid"]) for w in group.where]
        if len(set(pids)) < n:
            raise WorkerGroupError(
                f"two ranks were placed in the same node process ({group.where}); each rank "
                "needs its own process. Use placement_strategy='STRICT_SPREAD' or whole-node "
                "resources_per_worker."
            )
        contexts = _contexts(spec, group.where)
        try:
            addr, port = await asyncio.wait_for(_await(group.actors[0].free_port.remote()), 60.0)
        except (RuntimeBaseError, TimeoutError) as exc:
            raise RankFailure(f"rank 0 did not answer: {exc}", exc) from exc
        if getattr(spec.backend_config, "needs_worker_ports", False):
            # frameworks that connect every rank to every other (LightGBM) need them all
            try:
                ports = await asyncio.wait_for(
                    _gather([a.free_port.remote() for a in group.actors]), 60.0
                )
            except (RuntimeBaseError, TimeoutError) as exc:
                raise RankFailure(f"a rank did not answer: {exc}", exc) from exc
            env_vars = {**env_vars, WORKER_ADDRS_ENV: ",".join(f"{a}:{p}" for a, p in ports)}
        backend: Backend = spec.backend_config.make_backend()
        shards, helpers = make_shards(
            spec.datasets, spec.data_config.split, spec.data_config.equal, n
        )
        group.helpers.extend(helpers)
        resume = self._resume_dir()
        starts = []
        for rank, actor in enumerate(group.actors):
            env = {
                # As Ray does: a rank's OpenMP threads are its CPUs (torch, and Lightning, which
                # otherwise sets torch to every core of the host for each rank)
                "OMP_NUM_THREADS": str(max(1, int(bundle.get("CPU", 1.0)))),
                **env_vars,
                **spec.backend_config.rank_env(
                    contexts[rank], _gpu_ids(spec, contexts[rank], group.where[rank])
                ),
            }
            job = RankStart(
                fn=spec.fn,
                config=spec.config,
                context=contexts[rank],
                backend=backend,
                rendezvous=(addr, port),
                env=env,
                checkpoint_dir=resume,
                shards=shards[rank],
                first_index=self.next_index,
                storage=spec.storage.context,
            )
            starts.append(actor.start.remote(job))
        try:
            await asyncio.wait_for(_gather(starts), _SETUP_TIMEOUT_S)
        except (RuntimeBaseError, TimeoutError) as exc:
            raise RankFailure(f"a rank did not start its loop: {exc}", exc) from exc

    def _resume_dir(self) -> str | None:
        """The checkpoint the ranks start from, as a folder of the run.

        A checkpoint of this run is passed by its folder name; one from elsewhere
        (``resume_from_checkpoint``) by its absolute local path (joining an absolute path
        keeps it), or, on another filesystem, by its path on the run's filesystem.
        """
        ckpt = self.checkpoint
        if ckpt is None:
            return None
        for _, dirname, kept, _ in self.spec.storage.kept:
            if kept == ckpt:
                return dirname
        return os.path.abspath(ckpt.path) if self.spec.storage.context.local else ckpt.path

    async def _attempt(self) -> None:
        spec = self.spec
        self.scaling = spec.scaling
        n = spec.scaling.min_workers
        hint = ""
        if spec.in_tune:
            hint = (
                "; inside a Tune trial, give the trial itself no CPU so the ranks can have "
                "them: Tuner(trainer, ...).with_resources({'cpu': 0})"
            )
        if spec.scaling.elastic:
            # The size the group grows to was measured while it ran (its own ranks' resources,
            # released by the teardown just now, may not show as free yet); else what fits.
            fits = self.grow_to or await asyncio.to_thread(free_capacity, spec.scaling.bundle())
            self.grow_to = 0
            size = max(spec.scaling.min_workers, min(spec.scaling.max_workers, fits))
            self.scaling = spec.scaling.sized(size)
            n = size
        pg = None
        if spec.scaling.elastic and n > spec.scaling.min_workers:
            # The free capacity it was sized by may be a stale view (work placed just now):
            # a group that does not place soon starts at its minimum and grows later.
            pg = await _place(self.scaling, hint, patience=_ELASTIC_PATIENCE_S)
            if pg is None:
                logger.info("no room for %d ranks after all: starting with %d", n,
                            spec.scaling.min_workers)  # fmt: skip
                n = spec.scaling.min_workers
                self.scaling = spec.scaling.sized(n)
        if pg is None:
            pg = await _place(self.scaling, hint)
        assert pg is not None  # no patience given: placed, or an error raised
        group = _Group(pg)
        self.attempt_checkpoints = 0
        try:
            _metrics.workers(spec.name, n)
            await self._start(group)
            await self._monitor(group, n)
        finally:
            _metrics.workers(spec.name, 0)
            await group.teardown()

    async def _monitor(self, group: _Group, n: int) -> None:
        timeout = self.spec.failure.report_timeout_s
        st = _MonitorState(n)
        inbox: asyncio.Queue[tuple[int, list[Any] | BaseException]] = asyncio.Queue()
        pollers = [asyncio.ensure_future(self._poll(group, r, inbox)) for r in range(n)]
        failure: RankFailure | None = None
        failure_rank, grace_until = -1, 0.0
        tick = 1.0 if timeout is None else min(1.0, timeout / 2)
        try:
            while len(st.finished) < n:
                if failure is not None and (
                    time.monotonic() > grace_until or st.caught_up(failure_rank, n)
                ):
                    break
                try:
                    rank, got = await asyncio.wait_for(inbox.get(), tick)
                except TimeoutError:
                    if timeout is not None and failure is None:
                        await self._watchdog(group, st, timeout)
                    continue
                if isinstance(got, BaseException):
                    st.finished.add(rank)
                    if failure is None:
                        failure = RankFailure(f"{group.describe(rank)} died: {got}", got, rank)
                        failure_rank, grace_until = rank, time.monotonic() + _GRACE_S
                    continue
                for event in got:
                    error = st.handle(rank, event)
                    if error is not None and failure is None:
                        text = ""
                        if _collective_error(error[0]):
                            text = await self._explain_failure(group, st, rank)
                        failure = RankFailure(f"{group.describe(rank)} raised:\n{error[0]}{text}")
                        failure.cause, failure.rank = error[1], rank
                        failure_rank, grace_until = rank, time.monotonic() + _GRACE_S
                    self.next_index = max(self.next_index, st.last_index[rank] + 1)
                if failure is None:
                    before = self.attempt_checkpoints
                    await self._complete(group, st.pending, st.finished, n)
                    if self.attempt_checkpoints > before and len(st.finished) < n:
                        await self._maybe_grow(n)
                if timeout is not None and failure is None:
                    await self._watchdog(group, st, timeout)
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
        if failure is not None:
            # Reports every rank made before the failure still count (their checkpoint is
            # the one the next group resumes from); the others are dropped, with their files.
            target = st.last_index[failure_rank]
            made = {i: got for i, got in st.pending.items() if i <= target}
            await self._complete(group, made, st.finished | {failure_rank}, n)
            await asyncio.to_thread(self.spec.storage.discard, st.uploaded)
            raise failure
        await self._complete(group, st.pending, st.finished, n, final=True)

    async def _maybe_grow(self, n: int) -> None:
        """Right after a checkpoint of an elastic group below its maximum: if a rank more
        fits now, restart larger from that checkpoint (nothing done since is lost)."""
        scaling = self.spec.scaling
        if not scaling.elastic or n >= scaling.max_workers or self.stopping:
            return
        more = await asyncio.to_thread(free_capacity, scaling.bundle())
        more = min(more, scaling.max_workers - n)
        if more > 0 and await _room_for(scaling, more):
            raise _Resize(
                f"room for more ranks appeared (running {n} of at most {scaling.max_workers})",
                n + more,
            )

    async def _poll(
        self,
        group: _Group,
        rank: int,
        inbox: asyncio.Queue[tuple[int, list[Any] | BaseException]],
    ) -> None:
        """Await rank ``rank``'s events until it is done; a dead actor is an event too."""
        actor = group.actors[rank]
        while True:
            try:
                events = await actor.poll.remote(_POLL_S)
            except RuntimeBaseError as exc:
                await inbox.put((rank, exc))
                return
            if events:
                await inbox.put((rank, events))
            if any(e[0] in ("done", "stopped", "error") for e in events):
                return

    async def _stacks(self, group: _Group, ranks: list[int]) -> dict[int, str]:
        """The loop stacks of ``ranks`` now ("" where a rank did not answer)."""

        async def one(rank: int) -> str:
            try:
                stack: str = await asyncio.wait_for(
                    _await(group.actors[rank].stack.remote()), _STACK_TIMEOUT_S
                )
                return stack
            except (RuntimeBaseError, TimeoutError):
                return ""

        got = await asyncio.gather(*(one(r) for r in ranks))
        return dict(zip(ranks, got, strict=True))

    async def _explain_failure(self, group: _Group, st: _MonitorState, failed: int) -> str:
        """When a rank fails, what the others are doing: names a rank that is not in a
        collective while the others wait in one (the usual cause of a collective timeout)."""
        others = [r for r in range(st.n) if r != failed and r not in st.finished]
        if not others:
            return ""
        stacks = await self._stacks(group, others)
        culprits = [r for r, s in stacks.items() if s and not in_collective(s)]
        if not culprits:
            return ""
        lines = []
        for rank in culprits:
            lines.append(
                f"\n{group.describe(rank)} on host {group.host(rank)} was not in a collective "
                f"when {group.describe(failed)} failed; its stack:\n{stacks[rank]}"
            )
        return "".join(lines)

    async def _watchdog(self, group: _Group, st: _MonitorState, timeout: float) -> None:
        now = time.monotonic()
        quiet = [
            r
            for r in range(st.n)
            if r not in st.finished
            and now - st.last_seen[r] > timeout
            and now - st.warned[r] > timeout
        ]
        if not quiet:
            return
        for r in quiet:
            st.warned[r] = now
        live = [r for r in range(st.n) if r not in st.finished]
        stacks = await self._stacks(group, live)
        message = diagnose(
            quiet,
            stacks,
            {r: group.describe(r) for r in live},
            {r: group.host(r) for r in live},
            {r: now - st.last_seen[r] for r in live},
            timeout,
        )
        logger.warning("%s", message)

    async def _complete(
        self,
        group: _Group,
        pending: dict[int, dict[int, tuple[dict[str, Any], str | None]]],
        finished: set[int],
        n: int,
        final: bool = False,
    ) -> None:
        """Handle report indices every rank has reached (or finished before), in order."""
        for index in sorted(pending):
            got = pending[index]
            if not final and not all(r in got or r in finished for r in range(n)):
                return
            del pending[index]
            if self.stopping:
                continue  # reports made after the stop criteria were met
            metrics = got[min(got)][0]
            names = [d for r in sorted(got) if (d := got[r][1]) is not None]
            checkpoint = None
            storage = self.spec.storage
            if names:
                checkpoint = await asyncio.to_thread(storage.register, index, names[0], metrics)
                self.checkpoint = checkpoint
                self.attempt_checkpoints += 1
            self.history.append(metrics)
            _metrics.reported(self.spec.name)
            await asyncio.to_thread(storage.log, metrics)
            if self.spec.verbose:
                shown = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items())
                suffix = f" [checkpoint {os.path.basename(checkpoint.path)}]" if checkpoint else ""
                print(f"[train {self.spec.name}] report {len(self.history)}: {shown}{suffix}")
            if self.spec.on_report is not None:
                self.spec.on_report(metrics, checkpoint)
            for callback in self.callbacks:
                hook = getattr(callback, "after_report", None)
                if hook is not None:
                    per_rank = [got[r][0] for r in sorted(got)]
                    hook(run_context=self.run_context, metrics=per_rank, checkpoint=checkpoint)
            rc = self.spec.run_config
            if rc is not None and rc.should_stop(
                {**metrics, "training_iteration": len(self.history)}
            ):
                self.stopping = True
                for actor in group.actors:
                    with contextlib.suppress(Exception):
                        actor.stop.remote()

    def _callbacks_after_exception(self, exc: RankFailure) -> None:
        for callback in self.callbacks:
            hook = getattr(callback, "after_exception", None)
            if hook is not None:
                with contextlib.suppress(Exception):
                    errors = {exc.rank: exc.cause or exc}
                    hook(run_context=self.run_context, worker_exceptions=errors)


def _collective_error(traceback_text: str) -> bool:
    """Whether a rank's error came from a collective (so a peer's stack may explain it)."""
    lowered = traceback_text.lower()
    words = ("torch/distributed", "timed out", "timeout", "gloo", "nccl", "connection", "peer")
    return any(w in lowered for w in words)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
