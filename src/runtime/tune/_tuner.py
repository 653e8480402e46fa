"""The user entry points: :class:`Tuner` (``fit``/``restore``) and :func:`run`.

Everything is checked here, before any trial starts; then one :class:`Controller` runs the
experiment in the calling thread with ``asyncio.run`` (ObjectRefs are awaitable on any
loop), or in a helper thread when this thread already runs an event loop.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

import runtime
from runtime.libs import trainable as libs_trainable

from ._basic_variant import BasicVariantGenerator
from ._callback import Callback, CSVLoggerCallback, JsonLoggerCallback, default_loggers
from ._config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, check_mode
from ._controller import Controller
from ._errors import TuneError
from ._progress import ProgressReporter
from ._resources import PlacementGroupFactory, resource_request
from ._result import ResultGrid
from ._scheduler import FIFOScheduler, TrialScheduler
from ._search_space import has_unresolved, is_grid, leaves, validate
from ._searcher import Searcher
from ._stopper import make_stopper
from ._storage import (
    SEARCHER_FILE,
    TUNER_FILE,
    default_storage_path,
    experiment_name,
    load_state,
    write_atomic,
)
from ._trial import Status, Trial
from ._wrappers import attached_resources


def _resolve_trainable(trainable: Any) -> tuple[Any, str, bool]:
    """(the trainable to run, its name, whether it is a class); TypeError if unusable."""
    if isinstance(trainable, str):
        trainable = libs_trainable.resolve_trainable(trainable)
    as_trainable = getattr(trainable, "as_trainable", None)
    if callable(as_trainable) and not (inspect.isclass(trainable) and hasattr(trainable, "step")):
        trainable = as_trainable()
    if inspect.isclass(trainable):
        if not callable(getattr(trainable, "step", None)):
            raise TypeError(
                f"trainable class {trainable.__name__} has no step() method; subclass "
                "tune.Trainable and define setup/step (or pass a function)"
            )
        return trainable, trainable.__name__, True
    if not callable(trainable):
        raise TypeError(
            f"trainable must be a function(config), a tune.Trainable subclass, a registered "
            f"name or a trainable factory (with as_trainable()), got {type(trainable).__name__}"
        )
    name = getattr(trainable, "__name__", type(trainable).__name__)
    return trainable, name if name != "<lambda>" else "lambda", False


def _check_fits(request: PlacementGroupFactory) -> None:
    """Each bundle must fit on one node (all of them on one for STRICT_PACK), and the sum
    in the cluster: otherwise no trial could ever start."""
    largest: dict[str, float] = {}
    for node in runtime.nodes():
        if node.get("Alive") and not node.get("IsDriver"):
            for k, v in node.get("Resources", {}).items():
                largest[k] = max(largest.get(k, 0.0), v)
    bundles = list(request.bundles)
    if request.strategy == "STRICT_PACK":
        bundles = [request.required_resources]
    for i, bundle in enumerate(bundles):
        for name, amount in bundle.items():
            if amount > largest.get(name, 0.0) + 1e-9:
                what = "resources_per_trial" if len(bundles) == 1 else f"bundle {i}"
                raise ValueError(
                    f"{what} asks for {amount:g} {name}, but no node has that much (the "
                    f"largest node has {largest.get(name, 0.0):g}; cluster total "
                    f"{runtime.cluster_resources()}). A bundle is placed on one node: split "
                    "the request into bundles with tune.PlacementGroupFactory"
                )
    total = runtime.cluster_resources()
    for name, amount in request.required_resources.items():
        if amount > total.get(name, 0.0) + 1e-9:
            raise ValueError(
                f"a trial asks for {amount:g} {name} in all, more than the cluster has "
                f"({total.get(name, 0.0):g})"
            )


def _needs_metric(plugin: Any, what: str, metric: str | None, mode: str | None) -> None:
    if getattr(plugin, "needs_metric", False):
        if (getattr(plugin, "metric", None) or metric) is None:
            raise ValueError(
                f"{type(plugin).__name__} ({what}) needs a metric: pass metric= to "
                "tune.run/TuneConfig or to the " + what
            )
        if (getattr(plugin, "mode", None) or mode) is None:
            raise ValueError(
                f"{type(plugin).__name__} ({what}) needs a mode ('min' or 'max'): pass mode= "
                "to tune.run/TuneConfig or to the " + what
            )


def _as_tune_run_config(rc: Any) -> Any:
    """Tune's RunConfig for ``rc``: itself, or the same settings from Train's RunConfig
    (``ray.air.RunConfig`` / ``ray.train.RunConfig``, which Ray's Tuner also takes)."""
    if isinstance(rc, RunConfig) or not all(hasattr(rc, a) for a in ("name", "storage_path")):
        return rc  # anything else is refused by the type check in Tuner
    cc, fc = getattr(rc, "checkpoint_config", None), getattr(rc, "failure_config", None)
    return RunConfig(
        name=rc.name,
        storage_path=rc.storage_path,
        stop=getattr(rc, "stop", None),
        callbacks=list(getattr(rc, "callbacks", None) or []) or None,
        checkpoint_config=CheckpointConfig(
            num_to_keep=getattr(cc, "num_to_keep", None),
            checkpoint_score_attribute=getattr(cc, "checkpoint_score_attribute", None),
            checkpoint_score_order=getattr(cc, "checkpoint_score_order", "max"),
        ),
        failure_config=FailureConfig(max_failures=getattr(fc, "max_failures", 0)),
        verbose=getattr(rc, "verbose", 1),
    )


class Tuner:
    """Tune a trainable over a search space.

    Example::

        def objective(config):
            for step in range(10):
                tune.report({"loss": (config["x"] - 3) ** 2})

        tuner = tune.Tuner(objective, param_space={"x": tune.uniform(0, 10)},
                           tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=8))
        best = tuner.fit().get_best_result()
    """

    def __init__(
        self,
        trainable: Any,
        *,
        param_space: dict[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        _resources: Any = None,
        _resume: bool | str = False,
        _points_to_evaluate: list[dict[str, Any]] | None = None,
        _restored: dict[str, Any] | None = None,
    ):
        if _resources is None:
            _resources = attached_resources(trainable)
        self._trainable, self._name, self._is_class = _resolve_trainable(trainable)
        self.param_space = dict(param_space or {})
        self.tune_config = tune_config or TuneConfig()
        self.run_config = _as_tune_run_config(run_config) if run_config else RunConfig()
        if not isinstance(self.tune_config, TuneConfig):
            raise TypeError("tune_config must be a tune.TuneConfig")
        if not isinstance(self.run_config, RunConfig):
            raise TypeError("run_config must be a tune.RunConfig")
        validate(self.param_space)
        self._resources = resource_request(_resources)
        self._resume = _resume
        self._points = _points_to_evaluate
        self._restored = _restored
        self._results: ResultGrid | None = None

    def with_resources(self, resources: dict[str, float] | PlacementGroupFactory) -> Tuner:
        self._resources = resource_request(resources)
        return self

    @classmethod
    def restore(
        cls,
        path: str,
        trainable: Any,
        *,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict[str, Any] | None = None,
    ) -> Tuner:
        """A Tuner that continues the experiment in ``path`` (after its driver died):
        finished trials are kept, unfinished ones run again from their last checkpoint."""
        file = os.path.join(path, TUNER_FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"{path!r} holds no Tune experiment (no {TUNER_FILE})")
        with open(file, "rb") as f:
            saved = cloudpickle.load(f)
        run_config: RunConfig = saved["run_config"]
        run_config.storage_path = os.path.dirname(os.path.abspath(path))
        run_config.name = os.path.basename(os.path.abspath(path))
        return cls(
            trainable,
            param_space=param_space if param_space is not None else saved["param_space"],
            tune_config=saved["tune_config"],
            run_config=run_config,
            _resources=saved["resources"],
            _resume=True,
            _restored={
                "resume_unfinished": resume_unfinished,
                "resume_errored": resume_errored,
                "restart_errored": restart_errored,
            },
        )

    @classmethod
    def can_restore(cls, path: str) -> bool:
        return os.path.exists(os.path.join(path, TUNER_FILE))

    def fit(self) -> ResultGrid:
        """Run every trial; the results (trials that failed are in ``errors``)."""
        results = self._results = self._run()
        return results

    def get_results(self) -> ResultGrid:
        """The results of this experiment without running it: those of the last ``fit``,
        or, for a Tuner from :meth:`restore`, what its experiment folder holds.

        Raises:
            RuntimeError: the experiment has not run (no ``fit`` and nothing on disk).
        """
        if self._results is not None:
            return self._results
        rc = self.run_config
        if rc.name:
            storage = os.path.abspath(os.path.expanduser(rc.storage_path or default_storage_path()))
            path = os.path.join(storage, rc.name)
            state = load_state(path)
            if state is not None:
                trials = [Trial.from_state(entry) for entry in state["trials"]]
                return ResultGrid(trials, path, self.tune_config.metric, self.tune_config.mode)
        raise RuntimeError("no results yet: call fit() first (or Tuner.restore an experiment)")

    def _build(self) -> tuple[Controller, str]:
        tc, rc = self.tune_config, self.run_config
        metric, mode = tc.metric, tc.mode
        check_mode(mode)
        if not runtime.is_initialized():
            runtime.init()
        searcher = tc.search_alg
        if searcher is None:
            searcher = BasicVariantGenerator(points_to_evaluate=self._points)
        elif self._points:
            raise ValueError("points_to_evaluate goes to the searcher when search_alg is given")
        if not isinstance(searcher, Searcher):
            raise TypeError(f"search_alg must be a tune Searcher, got {type(searcher).__name__}")
        scheduler = tc.scheduler if tc.scheduler is not None else FIFOScheduler()
        if not isinstance(scheduler, TrialScheduler):
            raise TypeError(
                f"scheduler must be a tune TrialScheduler, got {type(scheduler).__name__}"
            )
        _needs_metric(searcher, "searcher", metric, mode)
        _needs_metric(scheduler, "scheduler", metric, mode)
        basic = isinstance(searcher, BasicVariantGenerator) or isinstance(
            getattr(searcher, "searcher", None), BasicVariantGenerator
        )
        if not basic and any(is_grid(v) for _, v in leaves(self.param_space)):
            raise ValueError(
                f"{type(searcher).__name__} cannot run grid_search; use the default "
                "BasicVariantGenerator for grids"
            )
        stopper = make_stopper(rc.stop)
        _check_fits(self._resources)

        storage = os.path.abspath(os.path.expanduser(rc.storage_path or default_storage_path()))
        name = rc.name or experiment_name(self._name)
        path = os.path.join(storage, name)
        os.makedirs(path, exist_ok=True)
        state = load_state(path) if self._resume else None
        if self._resume is True and state is None and self._restored is not None:
            raise FileNotFoundError(f"no experiment state to resume in {path!r}")

        trials: list[Trial] = []
        prefix = uuid.uuid4().hex[:5]
        restored_searcher = False
        if state is not None:
            prefix = state.get("trial_prefix", prefix)
            opts = self._restored or {}
            for entry in state["trials"]:
                trial = Trial.from_state(entry)
                if trial.status in (Status.RUNNING, Status.PAUSED, Status.PENDING):
                    if opts.get("resume_unfinished", True):
                        trial.status = Status.PENDING
                        trial.restore_path = trial.checkpoint
                    else:
                        trial.status = Status.TERMINATED
                elif trial.status == Status.ERROR and (
                    opts.get("resume_errored") or opts.get("restart_errored")
                ):
                    trial.status = Status.PENDING
                    trial.error = None
                    trial.num_failures = 0
                    if opts.get("restart_errored"):
                        trial.checkpoint = None
                        trial.checkpoints = []
                    trial.restore_path = trial.checkpoint
                trials.append(trial)
            searcher_file = os.path.join(path, SEARCHER_FILE)
            if os.path.exists(searcher_file):
                try:
                    searcher.restore(searcher_file)
                    restored_searcher = True
                except Exception:
                    restored_searcher = False
        if not searcher.set_search_properties(
            metric, mode, copy.deepcopy(self.param_space), num_samples=tc.num_samples
        ):
            raise ValueError(
                f"{type(searcher).__name__} already has a search space; leave param_space "
                "empty (or give the space to only one of them)"
            )
        if (
            not basic
            and not has_unresolved(self.param_space)
            and getattr(searcher, "_space", True) is None
        ):
            raise ValueError(f"{type(searcher).__name__} has no search space to search")
        scheduler.set_search_properties(metric, mode)
        if not restored_searcher and state is not None and basic:
            # A searcher we could not restore must not suggest the trials it already made.
            for _ in trials:
                searcher.suggest("__skip__")
                searcher.on_trial_complete("__skip__")
        if not os.path.exists(os.path.join(path, TUNER_FILE)) or self._resume:
            self._save_tuner(path)

        callbacks: list[Callback] = list(rc.callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be tune.Callback objects, got {cb!r}")
        have = {type(cb) for cb in callbacks}
        for logger in default_loggers():
            if type(logger) not in have and not (
                isinstance(logger, JsonLoggerCallback | CSVLoggerCallback)
                and os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS") == "1"
            ):
                callbacks.append(logger)
        reporter = rc.progress_reporter
        if reporter is not None and not isinstance(reporter, ProgressReporter):
            raise TypeError(
                f"progress_reporter must be a tune.ProgressReporter (such as CLIReporter), "
                f"got {type(reporter).__name__}"
            )
        if reporter is not None:
            if reporter.metric is None:
                reporter.metric = metric
            if hasattr(reporter, "set_search_properties"):
                reporter.set_search_properties(metric, mode)
            callbacks.append(reporter)
        elif rc.verbose:
            callbacks.append(ProgressReporter(metric=metric))
        controller = Controller(
            trainable=self._trainable,
            trainable_name=self._name,
            param_space=self.param_space,
            searcher=searcher,
            scheduler=scheduler,
            stopper=stopper,
            num_samples=tc.num_samples,
            max_concurrent=tc.max_concurrent_trials,
            resources=self._resources,
            experiment_path=path,
            callbacks=callbacks,
            checkpoint_config=rc.checkpoint_config or CheckpointConfig(),
            failure_config=rc.failure_config or FailureConfig(),
            metric=metric,
            mode=mode,
            time_budget_s=tc.time_budget_s,
            trials=trials,
            trial_prefix=prefix,
            is_class=self._is_class,
            reuse_actors=tc.reuse_actors,
            trial_dirname_creator=tc.trial_dirname_creator,
        )
        for trial in trials:
            if not trial.is_finished:
                scheduler.on_trial_add(controller, trial)
        return controller, path

    def _save_tuner(self, path: str) -> None:
        saved = {
            "param_space": self.param_space,
            "tune_config": self.tune_config,
            "run_config": self.run_config,
            "resources": self._resources,
        }
        try:
            blob = cloudpickle.dumps(saved)
        except Exception:
            run_config = copy.copy(self.run_config)
            run_config.callbacks = None
            blob = cloudpickle.dumps({**saved, "run_config": run_config})
        write_atomic(os.path.join(path, TUNER_FILE), blob)

    def _run(self) -> ResultGrid:
        controller, path = self._build()
        _run_coroutine(controller.run)
        return ResultGrid(controller.trials, path, self.tune_config.metric, self.tune_config.mode)


def _run_coroutine(fn: Callable[[], Any]) -> None:
    """Run ``fn()`` (a coroutine function) to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(fn())
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="tune-controller")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def run(
    run_or_experiment: Any,
    *,
    config: dict[str, Any] | None = None,
    num_samples: int = 1,
    metric: str | None = None,
    mode: str | None = None,
    search_alg: Searcher | None = None,
    scheduler: TrialScheduler | None = None,
    stop: Any = None,
    resources_per_trial: dict[str, float] | PlacementGroupFactory | None = None,
    max_concurrent_trials: int | None = None,
    name: str | None = None,
    storage_path: str | None = None,
    resume: bool | str = False,
    callbacks: list[Callback] | None = None,
    verbose: int = 1,
    points_to_evaluate: list[dict[str, Any]] | None = None,
    checkpoint_config: CheckpointConfig | None = None,
    failure_config: FailureConfig | None = None,
    max_failures: int = 0,
    time_budget_s: float | None = None,
    raise_on_failed_trial: bool = True,
    reuse_actors: bool = True,
    trial_dirname_creator: Callable[[Trial], str] | None = None,
    progress_reporter: ProgressReporter | None = None,
) -> ResultGrid:
    """Run an experiment (Ray's classic API); returns its results.

    ``resume=True`` continues the experiment ``storage_path/name`` after its driver was
    killed ("AUTO": resume if it exists, else start it). With ``raise_on_failed_trial``
    (the default, as in Ray) a TuneError is raised after the run when a trial failed.
    """
    if resume not in (False, True, "AUTO"):
        raise ValueError(f"resume must be False, True or 'AUTO', got {resume!r}")
    if resume is True and not name:
        raise ValueError("resume=True needs name= (and storage_path=) of the experiment")
    tuner = Tuner(
        run_or_experiment,
        param_space=config,
        tune_config=TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent_trials,
            time_budget_s=time_budget_s,
            reuse_actors=reuse_actors,
            trial_dirname_creator=trial_dirname_creator,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            stop=stop,
            callbacks=callbacks,
            checkpoint_config=checkpoint_config or CheckpointConfig(),
            failure_config=failure_config or FailureConfig(max_failures=max_failures),
            verbose=verbose,
            progress_reporter=progress_reporter,
        ),
        _resources=resources_per_trial,
        _resume=resume,
        _points_to_evaluate=points_to_evaluate,
    )
    if resume is True:
        tuner._restored = {}
    grid = tuner.fit()
    if raise_on_failed_trial and grid.num_errors:
        failed = [r.trial_id for r in grid if r.error is not None]
        raise TuneError(f"trials did not complete: {', '.join(failed)}; see their error.txt")
    return grid
