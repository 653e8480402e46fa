"""The controller: runs in the driver, drives one worker group after another until done.

One attempt: reserve a placement group with one bundle per rank (all or none), start a
rank actor in each bundle, let rank 0 choose the rendezvous port, start every rank's loop,
then long-poll the ranks for reports. A report index complete on every rank keeps rank 0's
metrics and persists the checkpoint once. A rank that raises or whose process dies tears the
whole group down (actors killed, group removed); the next attempt resumes from the latest
checkpoint, until ``max_failures`` is used up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
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

from ._backend import Backend, BackendConfig
from ._checkpoint import Checkpoint
from ._config import DataConfig, FailureConfig, ScalingConfig
from ._context import TrainContext
from ._errors import TrainingFailedError, WorkerGroupError
from ._ingest import make_shards
from ._result import Result
from ._storage import RunStorage
from ._worker import RankActor, RankStart

logger = logging.getLogger("runtime.train")

_POLL_S = 0.5
_SETUP_TIMEOUT_S = 120.0
_PLACE_LOG_S = 30.0
_GRACE_S = 10.0  # after a failure, how long the other ranks may finish reports already begun

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


class RankFailure(Exception):
    """A rank raised, or its actor, process or node died."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def rank_capacity(bundle: dict[str, float]) -> tuple[int, list[dict[str, float]]]:
    """How many ranks the cluster could ever hold: nodes whose resources fit one bundle.

    Each rank needs its own node process (``torch.distributed`` is per process), so a node
    holds at most one rank of a group.
    """
    alive = [n["Resources"] for n in runtime.nodes() if n.get("Alive") and not n.get("IsDriver")]
    fits = [r for r in alive if all(r.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())]
    return len(fits), alive


def check_fits(scaling: ScalingConfig) -> None:
    """WorkerGroupError now if the cluster can never hold the group."""
    bundle = scaling.bundle()
    capacity, alive = rank_capacity(bundle)
    if capacity < scaling.num_workers:
        raise WorkerGroupError(
            f"the worker group needs {scaling.num_workers} ranks of {bundle}, each in its own "
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

    def teardown(self) -> None:
        """Stop the loops, kill the rank actors, free the placement group; never raises."""
        refs = []
        for actor in self.actors:
            with contextlib.suppress(Exception):
                refs.append(actor.stop.remote())
        if refs:
            with contextlib.suppress(Exception):
                runtime.wait(refs, num_returns=len(refs), timeout=2.0)
        for actor in self.actors + self.helpers:
            with contextlib.suppress(Exception):
                runtime.kill(actor)
        with contextlib.suppress(Exception):
            remove_placement_group(self.pg)


def _place(scaling: ScalingConfig, hint: str = "") -> PlacementGroup:
    """A placed group of ``num_workers`` bundles; WorkerGroupError if it can never be."""
    check_fits(scaling)
    bundle = scaling.bundle()
    pg = placement_group([bundle] * scaling.num_workers, strategy=scaling.placement_strategy)
    started = last_log = time.monotonic()
    while True:
        try:
            if pg.wait(2.0):
                return pg
        except InfeasibleError as exc:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)
            raise WorkerGroupError(f"the worker group cannot be placed: {exc}") from exc
        try:
            check_fits(scaling)  # nodes may have died meanwhile
        except WorkerGroupError:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)
            raise
        if time.monotonic() - last_log > _PLACE_LOG_S:
            last_log = time.monotonic()
            logger.warning(
                "waiting %.0f s for resources for %d ranks of %s (other work holds them)%s",
                last_log - started,
                scaling.num_workers,
                bundle,
                hint,
            )


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

    def handle(self, rank: int, event: tuple[Any, ...]) -> tuple[str, Any] | None:
        """Record one event; for an error, (traceback text, the exception or None)."""
        kind = event[0]
        if kind == "report":
            _, index, metrics, staged, _t = event
            self.pending.setdefault(index, {})[rank] = (metrics, staged)
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


class Controller:
    """Runs a :class:`RunSpec` to a :class:`Result`."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.history: list[dict[str, Any]] = []
        self.next_index = 1
        self.checkpoint: Checkpoint | None = spec.resume_from

    def run(self) -> Result:
        spec = self.spec
        failures = 0
        error: BaseException | None = None
        while True:
            try:
                self._attempt()
                break
            except WorkerGroupError as exc:
                if failures == 0:
                    raise  # nothing ran yet: the caller's input cannot work
                error = TrainingFailedError(
                    f"the worker group could not be restarted after {failures} failure(s): {exc}"
                )
                error.__cause__ = exc
                break
            except RankFailure as exc:
                failures += 1
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
                spec.storage.clear_staging()
        latest = spec.storage.latest() or self.checkpoint
        return Result(
            metrics=dict(self.history[-1]) if self.history else {},
            checkpoint=latest,
            path=spec.storage.path,
            error=error,
            metrics_history=list(self.history),
            best_checkpoints=[(c, m) for _, c, m in spec.storage.kept],
        )

    def _start(self, group: _Group) -> None:
        spec = self.spec
        n = spec.scaling.num_workers
        bundle = spec.scaling.bundle()
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}
        remote_cls = runtime.remote(RankActor)
        preload = ["runtime.data"] if spec.datasets else []
        for rank in range(n):
            strategy = PlacementGroupSchedulingStrategy(group.pg, rank)
            group.actors.append(
                remote_cls.options(
                    num_cpus=bundle.get("CPU", 0.0),
                    num_gpus=bundle.get("GPU", 0.0),
                    resources=custom or None,
                    scheduling_strategy=strategy,
                    max_concurrency=4,
                ).remote()
            )
        try:
            group.where = runtime.get(
                [a.setup.remote({}, preload) for a in group.actors], timeout=_SETUP_TIMEOUT_S
            )
        except RuntimeBaseError as exc:
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
            port = runtime.get(group.actors[0].free_port.remote(), timeout=_SETUP_TIMEOUT_S)
        except RuntimeBaseError as exc:
            raise RankFailure(f"rank 0 did not answer: {exc}", exc) from exc
        backend: Backend = spec.backend_config.make_backend()
        shards, helpers = make_shards(
            spec.datasets, spec.data_config.split, spec.data_config.equal, n
        )
        group.helpers.extend(helpers)
        ckpt = self.checkpoint.path if self.checkpoint else None
        starts = []
        for rank, actor in enumerate(group.actors):
            env = spec.backend_config.rank_env(
                contexts[rank], _gpu_ids(spec, contexts[rank], group.where[rank])
            )
            job = RankStart(
                fn=spec.fn,
                config=spec.config,
                context=contexts[rank],
                backend=backend,
                rendezvous=("127.0.0.1", port),
                env=env,
                checkpoint_path=ckpt,
                shards=shards[rank],
                first_index=self.next_index,
                staging_root=spec.storage.staging,
            )
            starts.append(actor.start.remote(job))
        try:
            runtime.get(starts, timeout=_SETUP_TIMEOUT_S)
        except RuntimeBaseError as exc:
            raise RankFailure(f"a rank did not start its loop: {exc}", exc) from exc

    def _attempt(self) -> None:
        spec = self.spec
        n = spec.scaling.num_workers
        hint = ""
        if spec.in_tune:
            hint = (
                "; inside a Tune trial, give the trial itself no CPU so the ranks can have "
                "them: Tuner(trainer, ...).with_resources({'cpu': 0})"
            )
        group = _Group(_place(spec.scaling, hint))
        try:
            self._start(group)
            self._monitor(group, n)
        finally:
            group.teardown()

    def _monitor(self, group: _Group, n: int) -> None:
        timeout = self.spec.failure.report_timeout_s
        st = _MonitorState(n)
        outstanding = {a.poll.remote(_POLL_S): rank for rank, a in enumerate(group.actors)}
        failure: RankFailure | None = None
        failure_rank, grace_until = -1, 0.0
        while len(st.finished) < n:
            if failure is not None and (
                time.monotonic() > grace_until or st.caught_up(failure_rank, n)
            ):
                break
            ready, _ = runtime.wait(list(outstanding), num_returns=1, timeout=_POLL_S * 2)
            for ref in ready:
                rank = outstanding.pop(ref)
                try:
                    events = runtime.get(ref)
                except RuntimeBaseError as exc:
                    st.finished.add(rank)
                    if failure is None:
                        failure = RankFailure(f"{group.describe(rank)} died: {exc}", exc)
                        failure_rank, grace_until = rank, time.monotonic() + _GRACE_S
                    continue
                for event in events:
                    error = st.handle(rank, event)
                    if error is not None and failure is None:
                        failure = RankFailure(f"{group.describe(rank)} raised:\n{error[0]}")
                        failure.cause = error[1]
                        failure_rank, grace_until = rank, time.monotonic() + _GRACE_S
                    self.next_index = max(self.next_index, st.last_index[rank] + 1)
                if failure is None:
                    self._complete(st.pending, st.finished, n)
                if rank not in st.finished:
                    outstanding[group.actors[rank].poll.remote(_POLL_S)] = rank
            if timeout is not None and failure is None:
                self._warn_quiet(group, st, timeout)
        if failure is not None:
            # Reports every rank made before the failure still count (their checkpoint is
            # the one the next group resumes from); the others are dropped.
            target = st.last_index[failure_rank]
            made = {i: got for i, got in st.pending.items() if i <= target}
            self._complete(made, st.finished | {failure_rank}, n)
            raise failure
        self._complete(st.pending, st.finished, n, final=True)

    def _warn_quiet(self, group: _Group, st: _MonitorState, timeout: float) -> None:
        now = time.monotonic()
        for rank in range(st.n):
            quiet = now - st.last_seen[rank]
            if rank not in st.finished and quiet > timeout and now - st.warned[rank] > timeout:
                st.warned[rank] = now
                logger.warning(
                    "%s on host %s has not reported for %.1f s (report_timeout_s=%g); "
                    "it may be hung",
                    group.describe(rank),
                    group.where[rank]["host"] if group.where else "?",
                    quiet,
                    timeout,
                )

    def _complete(
        self,
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
            metrics = got[min(got)][0]
            staged = [s for r in sorted(got) if (s := got[r][1]) is not None]
            checkpoint = None
            if staged:
                checkpoint = self.spec.storage.persist(index, staged, metrics)
                self.checkpoint = checkpoint
            self.history.append(metrics)
            self.spec.storage.log(metrics)
            if self.spec.verbose:
                shown = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items())
                suffix = f" [checkpoint {os.path.basename(checkpoint.path)}]" if checkpoint else ""
                print(f"[train {self.spec.name}] report {len(self.history)}: {shown}{suffix}")
            if self.spec.on_report is not None:
                self.spec.on_report(metrics, checkpoint)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
