"""ASHA: asynchronous successive halving (Li et al., 2018), as Ray's ASHAScheduler.

Each trial passes rungs at ``grace_period * reduction_factor**k`` units of ``time_attr``;
at a rung it continues only if its metric is in the top ``1/reduction_factor`` of the
values recorded at that rung so far. No trial waits for others (hence asynchronous).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from ._scheduler import ControllerView, TrialScheduler
from ._trial import Trial


class _Bracket:
    """One bracket's rungs: milestone -> {trial_id: signed score}."""

    def __init__(self, min_t: float, max_t: float, rf: float, s: int, stop_last: bool):
        self.rf = rf
        self.stop_last = stop_last
        n_rungs = int(math.log(max_t / min_t) / math.log(rf) - s + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (min_t * rf ** (k + s), {}) for k in reversed(range(n_rungs))
        ]

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        return float(np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100))

    def on_result(self, trial_id: str, t: float, score: float | None) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if t < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            if score is None:
                break
            if cutoff is not None and score < cutoff:
                action = TrialScheduler.STOP
            recorded[trial_id] = score
            break
        return action


class ASHAScheduler(TrialScheduler):
    """Asynchronous successive halving.

    Args:
        time_attr: the result field that measures training progress.
        metric, mode: what to optimize (or from TuneConfig / tune.run).
        max_t: stop every trial at this many units of ``time_attr``.
        grace_period: no trial stops before this many units.
        reduction_factor: keep the top ``1/reduction_factor`` at each rung.
        brackets: the number of brackets (different grace periods); 1 is ASHA proper.
        stop_last_trials: stop trials that reach ``max_t`` (True, as Ray).
    """

    needs_metric = True

    def __init__(
        self,
        *,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
    ):
        super().__init__(metric, mode)
        if not grace_period > 0:
            raise ValueError("grace_period must be > 0")
        if not max_t > 0:
            raise ValueError("max_t must be > 0")
        if not reduction_factor > 1:
            raise ValueError("reduction_factor must be > 1")
        if grace_period > max_t:
            raise ValueError("grace_period must be <= max_t")
        if brackets < 1:
            raise ValueError("brackets must be >= 1")
        self.time_attr = time_attr
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.stop_last_trials = stop_last_trials
        self._brackets = [
            _Bracket(grace_period, max_t, reduction_factor, s, stop_last_trials)
            for s in range(brackets)
        ]
        self._trial_bracket: dict[str, _Bracket] = {}
        self._rng = random.Random(0)
        self.num_stopped = 0

    def on_trial_add(self, controller: ControllerView, trial: Trial) -> None:
        sizes = np.array([len(b.rungs) for b in self._brackets], dtype=float)
        probs = np.exp(sizes - sizes.max())
        probs /= probs.sum()
        index = self._rng.choices(range(len(self._brackets)), weights=list(probs))[0]
        self._trial_bracket[trial.trial_id] = self._brackets[index]

    def on_trial_result(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> str:
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        if self.stop_last_trials and t >= self.max_t:
            return TrialScheduler.STOP
        bracket = self._trial_bracket.get(trial.trial_id)
        if bracket is None:
            self.on_trial_add(controller, trial)
            bracket = self._trial_bracket[trial.trial_id]
        action = bracket.on_result(trial.trial_id, t, self._score(result))
        if action == TrialScheduler.STOP:
            self.num_stopped += 1
        return action

    def on_trial_complete(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> None:
        bracket = self._trial_bracket.get(trial.trial_id)
        t = result.get(self.time_attr)
        if bracket is not None and t is not None:
            bracket.on_result(trial.trial_id, t, self._score(result))

    def debug_string(self) -> str:
        return f"ASHAScheduler: {self.num_stopped} trials stopped early"


AsyncHyperBandScheduler = ASHAScheduler
