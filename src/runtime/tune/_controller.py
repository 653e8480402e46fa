"""The experiment controller: a coroutine in the driver that runs trials on actors.

It asks the searcher for configs, lets the scheduler pick which trial runs next, starts
trials while the cluster has room (accounting every trial's resources against
``runtime.cluster_resources()``, so nothing is oversubscribed), and drives each running
trial with one coroutine that awaits its actor's results and applies the stop criteria,
the scheduler's decision, the searcher's feedback, checkpoint retention and callbacks.
Actors are reused across trials with the same resource request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

import runtime
from runtime.exceptions import RuntimeBaseError
from runtime.util import (
    PlacementGroupSchedulingStrategy,
    placement_group,
    remove_placement_group,
)

from ._basic_variant import BasicVariantGenerator
from ._callback import Callback
from ._config import CheckpointConfig, FailureConfig
from ._errors import TuneError
from ._metrics import TuneMetrics
from ._resources import PlacementGroupFactory
from ._scheduler import TrialScheduler
from ._searcher import Searcher
from ._stopper import Stopper
from ._storage import SEARCHER_FILE, CheckpointKeeper, save_state, write_error
from ._trial import Status, Trial, flat_result
from ._trial_actor import RemoteTrialActor

_STATE_INTERVAL_S = 1.0
_EPS = 1e-9

Outcome = tuple[str, Any, Any]


class _Actor:
    """A trial actor handle (and its placement group) with what the controller knows of it."""

    def __init__(self, handle: Any, request: PlacementGroupFactory, pg: Any = None):
        self.handle = handle
        self.request = request
        self.resources = request.required_resources
        self.pg = pg
        self.placed = pg is None
        self.has_trainable = False


class Controller:
    """Runs one experiment to the end (see the module docstring)."""

    def __init__(
        self,
        *,
        trainable: Any,
        trainable_name: str,
        param_space: dict[str, Any],
        searcher: Searcher,
        scheduler: TrialScheduler,
        stopper: Stopper | None,
        num_samples: int,
        max_concurrent: int | None,
        resources: PlacementGroupFactory,
        experiment_path: str,
        callbacks: list[Callback],
        checkpoint_config: CheckpointConfig,
        failure_config: FailureConfig,
        metric: str | None,
        mode: str | None,
        time_budget_s: float | None,
        trials: list[Trial],
        trial_prefix: str,
        is_class: bool,
        reuse_actors: bool = True,
        trial_dirname_creator: Callable[[Trial], str] | None = None,
    ):
        self.trainable_name = trainable_name
        self.param_space = param_space
        self.searcher = searcher
        self.scheduler = scheduler
        self.stopper = stopper
        self.num_samples = num_samples
        self.max_concurrent = max_concurrent
        self.request = resources
        self.resources = resources.required_resources
        self.experiment_path = experiment_path
        self.callbacks = callbacks
        self.checkpoint_config = checkpoint_config
        self.failure_config = failure_config
        self.metric = metric
        self.mode = mode
        self.time_budget_s = time_budget_s
        self.trials: list[Trial] = trials
        self.trial_prefix = trial_prefix
        self.is_class = is_class
        self.reuse_actors = reuse_actors
        self.trial_dirname_creator = trial_dirname_creator
        self.keeper = CheckpointKeeper(checkpoint_config)
        self.search_finished = False
        self._basic = isinstance(searcher, BasicVariantGenerator) or isinstance(
            getattr(searcher, "searcher", None), BasicVariantGenerator
        )
        self._num_suggested = len(trials)
        self._blob = cloudpickle.dumps(trainable)
        self._blob_key = uuid.uuid4().hex
        self._idle: list[_Actor] = []
        self._running: dict[str, _Actor] = {}
        #: Trials whose actors fail_fast killed: their end is a stop, not a failure.
        self._interrupted: set[str] = set()
        self._used: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._iteration = 0
        self._stop_all = False
        self._fatal: BaseException | None = None
        self._last_state = 0.0
        self._forced: Trial | None = None
        self._deadline = None if time_budget_s is None else time.monotonic() + float(time_budget_s)

    # ------------------------------------------------------------- what schedulers see

    def get_trials(self) -> list[Trial]:
        return self.trials

    def stop_trial(self, trial: Trial) -> None:
        """End a trial that is not running (schedulers call this for paused trials)."""
        if trial.status in (Status.PENDING, Status.PAUSED):
            trial.status = Status.TERMINATED
            self._complete(trial)

    # ------------------------------------------------------------------- the main loop

    async def run(self) -> None:
        """Run until every trial finished, the searcher is done, or a stop-all."""
        self._total = runtime.cluster_resources()
        self._metrics = TuneMetrics(os.path.basename(self.experiment_path))
        for cb in self.callbacks:
            cb.setup(stop=self.stopper, num_samples=self.num_samples)
        try:
            async with asyncio.TaskGroup() as tg:
                try:
                    await self._loop(tg)
                except Exception as exc:  # raised after the running trials wound down
                    self._fatal = exc
                    self._stop_all = True
                for trial in list(self.trials):  # a stop-all ends what still runs
                    if trial.trial_id in self._running:
                        trial.stop_requested = True
        finally:
            for actor in self._idle:
                self._kill(actor)
            self._idle.clear()
            self._metrics.update(self.trials)
            self._save_state(force=True)
            for cb in self.callbacks:
                try:
                    cb.on_experiment_end(trials=self.trials)
                except Exception:
                    traceback.print_exc()
        if self._fatal is not None:
            raise self._fatal

    async def _loop(self, tg: asyncio.TaskGroup) -> None:
        idle_rounds = 0
        while not self._stop_all:
            self._wake.clear()
            self._fill(tg)
            if not self._running:
                if self._stalled():
                    return
                idle_rounds += 1
                if idle_rounds > 3:  # nothing started in rounds where nothing ran
                    raise TuneError(
                        f"no trial can start: {len(self.trials)} trials, cluster "
                        f"{self._total}, in use by idle trial actors {self._used}"
                    )
                continue
            idle_rounds = 0
            await self._wait()
            self._metrics.update(self.trials)
            self._save_state(force=False)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._stop_all = True

    async def _wait(self) -> None:
        if self._deadline is None:
            await self._wake.wait()
            return
        remaining = max(0.0, self._deadline - time.monotonic())
        try:
            async with asyncio.timeout(remaining):
                await self._wake.wait()
        except TimeoutError:
            self._stop_all = True
            for trial in self.trials:
                if trial.trial_id in self._running:
                    trial.stop_requested = True

    def _stalled(self) -> bool:
        """Nothing runs. True when the experiment is over; raises when it cannot go on."""
        waiting = [t for t in self.trials if t.status in (Status.PENDING, Status.PAUSED)]
        if not waiting and self.search_finished:
            return True
        if not waiting and not self.search_finished:
            if self._add_trial() is None and not self.search_finished:
                raise TuneError(
                    f"the searcher {type(self.searcher).__name__} suggests no config while no "
                    "trial runs; it would wait forever (is a ConcurrencyLimiter counting "
                    "trials that never started?)"
                )
            return False
        # Trials wait, nothing runs, and the scheduler chose none of them: run them in order.
        trial = waiting[0]
        if not self._feasible(trial.resources):
            self._total = runtime.cluster_resources()
            if not self._feasible(trial.resources):
                raise TuneError(
                    f"trial {trial.trial_id} needs {trial.resources}, more than the cluster "
                    f"has ({self._total})"
                )
        self._forced = trial
        return False

    # --------------------------------------------------------------- starting trials

    def _fits(self, demand: dict[str, float]) -> bool:
        return all(
            self._used.get(k, 0.0) + v <= self._total.get(k, 0.0) + _EPS
            for k, v in demand.items()
            if v > 0
        )

    def _feasible(self, demand: dict[str, float]) -> bool:
        """Whether ``demand`` fits the cluster at all (idle actors can be let go)."""
        return all(v <= self._total.get(k, 0.0) + _EPS for k, v in demand.items() if v > 0)

    def _take(self, demand: dict[str, float], sign: float) -> None:
        for k, v in demand.items():
            self._used[k] = self._used.get(k, 0.0) + sign * v

    def _fill(self, tg: asyncio.TaskGroup) -> None:
        while not self._stop_all:
            if self.max_concurrent is not None and len(self._running) >= self.max_concurrent:
                return
            if not any(t.status == Status.PENDING for t in self.trials):
                self._add_trial()
            if not self._can_acquire(self.resources):
                return  # ask the scheduler only when its choice can start now
            forced, self._forced = self._forced, None
            trial = forced or self.scheduler.choose_trial_to_run(self)
            if trial is None:
                return
            if trial.status not in (Status.PENDING, Status.PAUSED):
                return  # a scheduler that offers a running or finished trial: nothing to start
            if trial.stop_requested:
                self.stop_trial(trial)  # its status changes, so the loop moves on
                continue
            actor = self._acquire(trial.resources)
            if actor is None:
                return
            self._running[trial.trial_id] = actor
            trial.status = Status.RUNNING
            trial.start_count += 1
            tg.create_task(self._drive(trial, actor))

    def _can_acquire(self, demand: dict[str, float]) -> bool:
        if any(actor.request == self.request for actor in self._idle):
            return True
        free = dict(self._used)
        for actor in self._idle:
            for k, v in actor.resources.items():
                free[k] = free.get(k, 0.0) - v
        return all(
            free.get(k, 0.0) + v <= self._total.get(k, 0.0) + _EPS
            for k, v in demand.items()
            if v > 0
        )

    def _acquire(self, demand: dict[str, float]) -> _Actor | None:
        for i, actor in enumerate(self._idle):
            if actor.request == self.request:
                return self._idle.pop(i)
        while not self._fits(demand) and self._idle:
            self._kill(self._idle.pop(0))  # idle actors of another shape hold resources
        if not self._fits(demand):
            return None
        self._take(demand, +1)
        head = self.request.head_bundle
        custom = {k: v for k, v in head.items() if k not in ("CPU", "GPU")}
        options: dict[str, Any] = {
            "num_cpus": head.get("CPU", 0.0),
            "num_gpus": head.get("GPU", 0.0),
            "resources": custom or None,
        }
        pg = None
        if self.request.uses_placement_group:
            # Several bundles: reserve them together; the trial's actor runs in bundle 0.
            pg = placement_group(self.request.bundles, strategy=self.request.strategy)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, 0)
        handle = RemoteTrialActor.options(**options).remote()  # type: ignore[attr-defined]
        return _Actor(handle, self.request, pg)

    def _release(self, actor: _Actor, reusable: bool) -> None:
        if reusable and self.reuse_actors and not self._stop_all:
            self._idle.append(actor)
        else:
            self._kill(actor)

    def _kill(self, actor: _Actor) -> None:
        self._take(actor.resources, -1)
        with contextlib.suppress(RuntimeBaseError):  # already gone
            runtime.kill(actor.handle)
        if actor.pg is not None:
            with contextlib.suppress(RuntimeBaseError):
                remove_placement_group(actor.pg)

    def _add_trial(self) -> Trial | None:
        """Ask the searcher for one more trial; None when it has none (now or ever)."""
        if self.search_finished:
            return None
        if not self._basic and self.num_samples != -1 and self._num_suggested >= self.num_samples:
            self.search_finished = True
            return None
        index = len(self.trials)
        trial_id = f"{self.trial_prefix}_{index:05d}"
        config = self.searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            self.search_finished = True
            return None
        if config is None:
            return None
        if not isinstance(config, dict):
            raise TuneError(f"{type(self.searcher).__name__}.suggest returned {config!r}")
        self._num_suggested += 1
        trial = Trial(trial_id, config, resources=dict(self.resources))
        if self.request.uses_placement_group:
            trial.bundles = self.request.to_state()
        name = (
            self.trial_dirname_creator(trial)
            if self.trial_dirname_creator is not None
            else f"{self.trainable_name}_{trial_id}"
        )
        trial.path = os.path.join(self.experiment_path, name)
        trial.experiment_tag = str(index)
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    # ---------------------------------------------------------------- driving a trial

    async def _drive(self, trial: Trial, actor: _Actor) -> None:
        """Run ``trial`` on ``actor`` until it stops, pauses or fails."""
        alive = True
        try:
            info = {
                "trial_id": trial.trial_id,
                "trial_name": trial.trial_name,
                "trial_dir": trial.path,
                "experiment_name": os.path.basename(self.experiment_path),
                "resources": trial.resources,
                "placement_group": actor.pg,
            }
            if not actor.placed:
                await actor.pg.ready()  # raises InfeasibleError if it can never be placed
                actor.placed = True
            restore = trial.restore_path
            trial.restore_path = None
            trial.stop_requested = False
            os.makedirs(trial.path, exist_ok=True)
            self._callback("on_trial_start", trial=trial)
            freq = self.checkpoint_config.checkpoint_frequency
            spec = {
                "key": self._blob_key,
                "info": info,
                "config": trial.config,
                "restore_path": restore,
                "checkpoint_frequency": freq,
            }
            blob = None if actor.has_trainable else self._blob
            outcome: Outcome = await actor.handle.start.remote(spec, blob)
            if outcome[0] == "missing":
                outcome = await actor.handle.start.remote(spec, self._blob)
            actor.has_trainable = True
            while True:
                kind, payload, checkpoint = outcome
                if kind == "error":
                    await self._stop_actor(actor)
                    self._failed(trial, payload)
                    return
                if kind == "done":
                    if payload:
                        self._on_result(trial, payload, None)
                    trial.last_result["done"] = True
                    await self._end(trial, actor)
                    return
                decision = self._on_result(trial, payload, checkpoint)
                if trial.stop_requested or self._stop_all:
                    decision = TrialScheduler.STOP
                if decision == TrialScheduler.STOP:
                    await self._end(trial, actor)
                    return
                if decision == TrialScheduler.PAUSE:
                    await self._pause(trial, actor)
                    return
                if trial.save_requested and self.is_class:
                    trial.save_requested = False
                    path = await actor.handle.save.remote()
                    if path:
                        self._on_checkpoint(trial, path, trial.last_result)
                outcome = await actor.handle.train.remote()
        except asyncio.CancelledError:
            alive = False  # the run was interrupted (Ctrl-C): do not leave the actor behind
            raise
        except RuntimeBaseError as exc:
            alive = False
            if trial.trial_id in self._interrupted:  # fail_fast stopped it: not a failure
                trial.status = Status.TERMINATED
                self._complete(trial)
                return
            # The actor or its node died (or a call could not be made): not the trainable.
            self._total = runtime.cluster_resources()  # a node may have gone with it
            self._failed(trial, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in a scheduler, searcher or callback: end the run
            alive = False
            self._fatal = exc
            self._stop_all = True
            trial.status = Status.ERROR
            trial.error = "".join(traceback.format_exception(exc))
        finally:
            self._running.pop(trial.trial_id, None)
            if not alive:
                self._kill(actor)
            self._wake.set()

    async def _stop_actor(self, actor: _Actor) -> None:
        reusable = await actor.handle.stop.remote()
        self._release(actor, bool(reusable))

    async def _end(self, trial: Trial, actor: _Actor) -> None:
        if self.is_class and self.checkpoint_config.checkpoint_at_end:
            path = await actor.handle.save.remote()
            if path:
                self._on_checkpoint(trial, path, trial.last_result)
        await self._stop_actor(actor)
        trial.status = Status.TERMINATED
        self._complete(trial)

    async def _pause(self, trial: Trial, actor: _Actor) -> None:
        if trial.restore_path is None:  # a plain pause (not a PBT exploit): save state
            path = await actor.handle.save.remote() if self.is_class else None
            if path:
                self._on_checkpoint(trial, path, trial.last_result)
            trial.restore_path = trial.checkpoint
        await self._stop_actor(actor)
        trial.status = Status.PAUSED

    def _on_result(self, trial: Trial, result: dict[str, Any], checkpoint: str | None) -> str:
        """Record one result; the decision of the stoppers and the scheduler."""
        self._iteration += 1
        trial.last_result = result
        flat = flat_result(result)  # nested metrics by "outer/inner" name, as in Ray
        trial.update_analysis(flat)
        if checkpoint is not None:
            self._on_checkpoint(trial, checkpoint, flat)
        self._callback("on_trial_result", trial=trial, result=result)
        self.searcher.on_trial_result(trial.trial_id, flat)
        decision = self.scheduler.on_trial_result(self, trial, flat)
        if result.get("done"):
            decision = TrialScheduler.STOP
        if self.stopper is not None:
            if self.stopper(trial.trial_id, flat):
                decision = TrialScheduler.STOP
            if self.stopper.stop_all():
                self._stop_all = True
                decision = TrialScheduler.STOP
        return decision

    def _on_checkpoint(self, trial: Trial, path: str, result: dict[str, Any]) -> None:
        self.keeper.add(trial, path, result)
        self._callback("on_checkpoint", trial=trial, checkpoint=path)

    def _complete(self, trial: Trial) -> None:
        result = flat_result(trial.last_result) if trial.last_result else None
        self.searcher.on_trial_complete(trial.trial_id, result=result, error=False)
        self.scheduler.on_trial_complete(self, trial, result or {})
        self._callback("on_trial_complete", trial=trial)
        self._save_state(force=False)

    def _failed(self, trial: Trial, error: str) -> None:
        """A failure: retry from the last checkpoint, or mark the trial ERROR."""
        trial.num_failures += 1
        write_error(
            trial,
            f"Failure # {trial.num_failures} (iteration "
            f"{trial.last_result.get('training_iteration', 0)}):\n{error}",
        )
        limit = self.failure_config.max_failures
        if (limit == -1 or trial.num_failures <= limit) and not self._stop_all:
            trial.status = Status.PENDING
            trial.restore_path = trial.checkpoint
            return
        trial.status = Status.ERROR
        trial.error = error
        self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result, error=True)
        self.scheduler.on_trial_error(self, trial)
        self._callback("on_trial_error", trial=trial)
        self._save_state(force=True)
        if self.failure_config.fail_fast:
            self._stop_all = True
            # As Ray: the other running trials stop now, not at their next report.
            for other_id, actor in list(self._running.items()):
                if other_id != trial.trial_id:
                    self._interrupted.add(other_id)
                    with contextlib.suppress(RuntimeBaseError):
                        runtime.kill(actor.handle)
            if self.failure_config.fail_fast == "raise":
                self._fatal = TuneError(f"trial {trial.trial_id} failed:\n{error}")

    def _callback(self, hook: str, **kwargs: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(iteration=self._iteration, trials=self.trials, **kwargs)

    # ------------------------------------------------------------------------ state

    def _save_state(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_state < _STATE_INTERVAL_S:
            return
        self._last_state = now
        # A searcher that cannot be saved is simply started afresh on resume.
        with contextlib.suppress(Exception):
            self.searcher.save(os.path.join(self.experiment_path, SEARCHER_FILE))
        save_state(
            self.experiment_path,
            self.trials,
            {"trial_prefix": self.trial_prefix, "search_finished": self.search_finished},
        )
