"""OptunaSearch: suggestions from an optuna sampler (TPE by default) through optuna's ask/tell.

Our search space maps onto optuna distributions: uniform/loguniform/quniform become
``FloatDistribution`` (log, step), randint/lograndint ``IntDistribution`` (upper bound
exclusive, as Tune's), choice ``CategoricalDistribution``; constants pass through. randn,
sample_from and grid_search have no optuna equivalent and are rejected up front.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from ._search_space import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    Normal,
    Path,
    is_grid,
    leaves,
    set_path,
    validate,
)
from ._searcher import Searcher, offers_another_space


def _distribution(path: Path, domain: Any) -> Any:
    import optuna

    where = "/".join(path)
    if isinstance(domain, Float):
        if domain.q is not None:
            if domain.log:
                raise ValueError(f"{where!r}: optuna has no quantized log-uniform float")
            return optuna.distributions.FloatDistribution(domain.lower, domain.upper, step=domain.q)
        return optuna.distributions.FloatDistribution(domain.lower, domain.upper, log=domain.log)
    if isinstance(domain, Integer):
        return optuna.distributions.IntDistribution(
            domain.lower, domain.upper - 1, log=domain.log, step=domain.q or 1
        )
    if isinstance(domain, Categorical):
        return optuna.distributions.CategoricalDistribution(domain.categories)
    kind = "grid_search" if is_grid(domain) else type(domain).__name__
    if isinstance(domain, Normal):
        kind = "randn"
    elif isinstance(domain, Function):
        kind = "sample_from"
    raise ValueError(
        f"OptunaSearch cannot search {kind} at {where!r}: use uniform, loguniform, quniform, "
        "randint, lograndint or choice (or BasicVariantGenerator for grids and sample_from)"
    )


class OptunaSearch(Searcher):
    """A searcher backed by an optuna study.

    Args:
        space: a search space (our domains); usually left None and taken from the
            experiment's ``param_space``/``config``.
        metric, mode: what to optimize (or from TuneConfig / tune.run).
        points_to_evaluate: configs evaluated first (enqueued in the study).
        sampler: any ``optuna.samplers.BaseSampler``; TPE by default (seeded by ``seed``).
        seed: seed for the default TPE sampler.
        evaluated_rewards: rewards of ``points_to_evaluate`` already known (not re-run).
        study_name: the optuna study's name ("optuna" by default, as in Ray).
        storage: where the study keeps its trials: an ``optuna.storages.BaseStorage`` or a
            database URL such as ``"sqlite:///tune.db"`` (in memory by default). A study of
            that name already there is continued.
    """

    def __init__(
        self,
        *,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        sampler: Any = None,
        seed: int | None = None,
        evaluated_rewards: list[float] | None = None,
        study_name: str | None = None,
        storage: Any = None,
    ):
        import optuna

        super().__init__(metric, mode)
        if storage is not None and not isinstance(storage, str | optuna.storages.BaseStorage):
            raise TypeError(
                f"storage must be an optuna storage or a database URL, got {type(storage).__name__}"
            )
        if study_name is not None and not isinstance(study_name, str):
            raise TypeError(f"study_name must be a str, got {study_name!r}")
        self._study_name = study_name or "optuna"
        self._storage = storage
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            raise TypeError(f"sampler must be an optuna sampler, got {type(sampler).__name__}")
        if evaluated_rewards is not None and len(evaluated_rewards) != len(
            points_to_evaluate or []
        ):
            raise ValueError("evaluated_rewards needs one reward per point in points_to_evaluate")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._sampler = sampler if sampler is not None else optuna.samplers.TPESampler(seed=seed)
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self._evaluated_rewards = evaluated_rewards
        self._space: dict[str, Any] | None = None
        self._constants: list[tuple[Path, Any]] = []
        self._distributions: dict[str, Any] = {}
        self._study: Any = None
        self._ot_trials: dict[str, Any] = {}
        if space is not None:
            self._setup(space)

    def _setup(self, space: dict[str, Any]) -> None:
        validate(space)
        self._space = space
        self._constants = []
        self._distributions = {}
        for path, value in leaves(space):
            if isinstance(value, Domain) or is_grid(value):
                self._distributions["/".join(path)] = _distribution(path, value)
            else:
                self._constants.append((path, value))

    def _ensure_study(self) -> None:
        if self._study is not None:
            return
        import optuna

        if self._metric is None or self._mode is None:
            raise ValueError(
                "OptunaSearch needs a metric and a mode: pass them to OptunaSearch or to "
                "TuneConfig/tune.run"
            )
        direction: Literal["maximize", "minimize"] = (
            "maximize" if self._mode == "max" else "minimize"
        )
        self._study = optuna.create_study(
            sampler=self._sampler,
            direction=direction,
            study_name=self._study_name,
            storage=self._storage,
            load_if_exists=self._storage is not None,
        )
        for i, point in enumerate(self._points):
            flat = {"/".join(p): v for p, v in leaves(point)}
            if self._evaluated_rewards is not None:
                self._study.add_trial(
                    optuna.trial.create_trial(
                        params=flat,
                        distributions={k: self._distributions[k] for k in flat},
                        value=self._evaluated_rewards[i],
                    )
                )
            else:
                self._study.enqueue_trial(flat)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        if offers_another_space(self._space, config):
            return False
        super().set_search_properties(metric, mode, config)
        if self._space is None:
            self._setup(config)
        self._ensure_study()
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._space is None:
            raise RuntimeError("OptunaSearch has no search space: give it space= or param_space")
        self._ensure_study()
        ot_trial = self._study.ask(self._distributions)
        self._ot_trials[trial_id] = ot_trial
        config: dict[str, Any] = {}
        for path, value in self._constants:
            set_path(config, path, copy.deepcopy(value))
        for key, value in ot_trial.params.items():
            set_path(config, tuple(key.split("/")), value)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        metric = self._metric
        if ot_trial is None or metric is None or metric not in result:
            return
        step = result.get("training_iteration")
        if isinstance(step, int):
            ot_trial.report(result[metric], step)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        import optuna

        ot_trial = self._ot_trials.pop(trial_id, None)
        if ot_trial is None:
            return
        metric = self._metric
        if error or result is None or metric is None or metric not in result:
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(ot_trial, result[metric])

    def add_evaluated_point(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        import optuna

        self._ensure_study()
        metric = self._metric
        assert metric is not None  # _ensure_study checked it
        flat = {"/".join(p): v for p, v in leaves(config) if "/".join(p) in self._distributions}
        self._study.add_trial(
            optuna.trial.create_trial(
                params=flat,
                distributions={k: self._distributions[k] for k in flat},
                value=result[metric],
            )
        )

    def save(self, checkpoint_path: str) -> None:
        # optuna trials in flight cannot be restored; the study (with its told trials) can.
        state = dict(self.__dict__)
        state["_ot_trials"] = {}
        import os
        import pickle

        tmp = checkpoint_path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        os.replace(tmp, checkpoint_path)
