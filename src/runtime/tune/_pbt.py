"""Population Based Training (Jaderberg et al., 2017), as Ray's PopulationBasedTraining.

Every ``perturbation_interval`` units of ``time_attr``, a trial in the bottom quantile
*exploits* a trial of the top quantile (restarts from a copy of its checkpoint, with its
config) and *explores* (perturbs that config: scale numbers by a factor, move to a
neighbouring choice, or resample).
"""

from __future__ import annotations

import copy
import os
import random
import shutil
from collections.abc import Callable
from typing import Any

from ._scheduler import ControllerView, TrialScheduler
from ._search_space import Domain
from ._trial import Trial


def explore(
    config: dict[str, Any],
    mutations: dict[str, Any],
    resample_probability: float,
    perturbation_factors: tuple[float, float],
    rng: random.Random,
) -> dict[str, Any]:
    """A perturbed copy of ``config``: each key in ``mutations`` resampled or nudged."""
    new = copy.deepcopy(config)
    for key, spec in mutations.items():
        value = config.get(key)
        if isinstance(spec, dict):
            new[key] = explore(value or {}, spec, resample_probability, perturbation_factors, rng)
        elif isinstance(spec, list | tuple):
            if rng.random() < resample_probability or value not in spec:
                new[key] = rng.choice(list(spec))
            else:
                index = list(spec).index(value) + rng.choice((-1, 1))
                new[key] = spec[min(max(index, 0), len(spec) - 1)]
        elif isinstance(spec, Domain) or callable(spec):
            if rng.random() < resample_probability or not isinstance(value, int | float):
                new[key] = spec.sample(rng) if isinstance(spec, Domain) else spec()
            else:
                scaled = value * rng.choice(perturbation_factors)
                new[key] = round(scaled) if isinstance(value, int) else scaled
        else:
            raise TypeError(
                f"hyperparam_mutations[{key!r}] must be a list, a tune domain, a function or "
                f"a dict of those, got {spec!r}"
            )
    return new


class PopulationBasedTraining(TrialScheduler):
    """PBT: exploit better trials' checkpoints, explore around their configs.

    Trials must checkpoint: function trainables report checkpoints (the latest is
    cloned), class trainables are saved by Tune when PBT needs them.

    Args:
        time_attr: the result field that measures progress.
        metric, mode: what to optimize.
        perturbation_interval: perturb each trial every this many units of ``time_attr``.
        burn_in_period: no perturbation before this many units.
        hyperparam_mutations: key -> list of values, a tune domain, or a function.
        quantile_fraction: the top and bottom fractions of the population (<= 0.5).
        resample_probability: chance of resampling instead of nudging.
        perturbation_factors: factors a numeric value is scaled by.
        custom_explore_fn: ``fn(config) -> config`` applied after the mutations.
        seed: seed for the random choices (None: unseeded).
    """

    needs_metric = True

    def __init__(
        self,
        *,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: dict[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: tuple[float, float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int | None = None,
    ):
        super().__init__(metric, mode)
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError("PBT needs hyperparam_mutations or custom_explore_fn")
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError("quantile_fraction must be between 0 and 0.5")
        if perturbation_interval <= 0:
            raise ValueError("perturbation_interval must be > 0")
        self.time_attr = time_attr
        self.perturbation_interval = perturbation_interval
        self.burn_in_period = burn_in_period
        self.hyperparam_mutations = hyperparam_mutations or {}
        self.quantile_fraction = quantile_fraction
        self.resample_probability = resample_probability
        self.perturbation_factors = perturbation_factors
        self.custom_explore_fn = custom_explore_fn
        self._rng = random.Random(seed)
        self._last_perturb: dict[str, float] = {}
        self._score_of: dict[str, float] = {}
        self.num_perturbations = 0
        #: (recipient trial id, donor trial id, new config) for each exploit, in order.
        self.exploits: list[tuple[str, str, dict[str, Any]]] = []

    def on_trial_add(self, controller: ControllerView, trial: Trial) -> None:
        self._last_perturb.setdefault(trial.trial_id, 0.0)

    def on_trial_result(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> str:
        t = result.get(self.time_attr)
        score = self._score(result)
        if t is None or score is None:
            return TrialScheduler.CONTINUE
        self._score_of[trial.trial_id] = score
        if t < self.burn_in_period:
            return TrialScheduler.CONTINUE
        if t - self._last_perturb.get(trial.trial_id, 0.0) < self.perturbation_interval:
            return TrialScheduler.CONTINUE
        self._last_perturb[trial.trial_id] = float(t)
        lower, upper = self._quantiles(controller)
        if trial in upper:
            trial.save_requested = True  # class trainables: checkpoint now, to be cloned
            return TrialScheduler.CONTINUE
        if trial not in lower:
            return TrialScheduler.CONTINUE
        donors = [d for d in upper if d.checkpoint is not None]
        if not donors:
            return TrialScheduler.CONTINUE
        donor = self._rng.choice(donors)
        return self._exploit(trial, donor)

    def _quantiles(self, controller: ControllerView) -> tuple[list[Trial], list[Trial]]:
        trials = [
            t for t in controller.get_trials() if t.trial_id in self._score_of and not t.is_finished
        ]
        trials.sort(key=lambda t: self._score_of[t.trial_id])
        n = len(trials)
        if n <= 1:
            return [], []
        k = int(n * self.quantile_fraction)
        k = max(1, k) if self.quantile_fraction > 0 else 0
        if k > n / 2:
            k = n // 2
        return trials[:k], trials[n - k :]

    def _exploit(self, trial: Trial, donor: Trial) -> str:
        assert donor.checkpoint is not None
        self.num_perturbations += 1
        target = os.path.join(trial.path, f"checkpoint_pbt_{self.num_perturbations:06d}")
        shutil.rmtree(target, ignore_errors=True)
        try:  # copy the donor's checkpoint, so the donor may delete its own copy later
            shutil.copytree(donor.checkpoint, target)
        except OSError:
            return TrialScheduler.CONTINUE  # the donor's checkpoint is gone: skip this one
        new_config = explore(
            donor.config,
            self.hyperparam_mutations,
            self.resample_probability,
            self.perturbation_factors,
            self._rng,
        )
        if self.custom_explore_fn is not None:
            new_config = self.custom_explore_fn(new_config)
            if not isinstance(new_config, dict):
                raise TypeError("custom_explore_fn must return a config dict")
        trial.config = new_config
        trial.restore_path = target
        self._last_perturb[trial.trial_id] = self._last_perturb.get(donor.trial_id, 0.0)
        self.exploits.append((trial.trial_id, donor.trial_id, new_config))
        return TrialScheduler.PAUSE

    def debug_string(self) -> str:
        return f"PopulationBasedTraining: {self.num_perturbations} perturbations"
