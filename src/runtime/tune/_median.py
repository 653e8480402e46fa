"""MedianStoppingRule: stop a trial whose best result is worse than the median of the other
trials' running averages at the same point in time (Golovin et al., 2017), as Ray's."""

from __future__ import annotations

import statistics
from typing import Any

from ._scheduler import ControllerView, TrialScheduler
from ._trial import Trial


class MedianStoppingRule(TrialScheduler):
    """Early stopping by the median rule.

    Args:
        time_attr: the result field that measures progress.
        metric, mode: what to optimize.
        grace_period: no trial stops before this many units of ``time_attr``.
        min_samples_required: how many other trials must have got this far to compare.
        min_time_slice: (kept for Ray compatibility) minimum progress between decisions.
        hard_stop: stop (True) or pause (False) a trial that falls below the median.
    """

    needs_metric = True

    def __init__(
        self,
        *,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ):
        super().__init__(metric, mode)
        if min_samples_required < 1:
            raise ValueError("min_samples_required must be >= 1")
        self.time_attr = time_attr
        self.grace_period = grace_period
        self.min_samples_required = min_samples_required
        self.min_time_slice = min_time_slice
        self.hard_stop = hard_stop
        self._history: dict[str, list[tuple[float, float]]] = {}
        self._last_decision: dict[str, float] = {}
        self._stopped: set[str] = set()
        self.num_stopped = 0

    def on_trial_result(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> str:
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        t = result.get(self.time_attr)
        score = self._score(result)
        if t is None or score is None:
            return TrialScheduler.CONTINUE
        self._history.setdefault(trial.trial_id, []).append((float(t), score))
        if t < self.grace_period:
            return TrialScheduler.CONTINUE
        if t - self._last_decision.get(trial.trial_id, -float("inf")) < self.min_time_slice:
            return TrialScheduler.CONTINUE
        self._last_decision[trial.trial_id] = float(t)
        others = [
            h
            for tid, h in self._history.items()
            if tid != trial.trial_id and h and h[0][0] <= t <= h[-1][0]
        ]
        if len(others) < self.min_samples_required:
            return TrialScheduler.CONTINUE
        running_means = [statistics.fmean(s for ht, s in h if ht <= t) for h in others]
        median = statistics.median(running_means)
        best = max(s for _, s in self._history[trial.trial_id])
        if best < median:
            self.num_stopped += 1
            if self.hard_stop:
                self._stopped.add(trial.trial_id)
                return TrialScheduler.STOP
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_complete(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> None:
        t = result.get(self.time_attr)
        score = self._score(result)
        if t is not None and score is not None:
            history = self._history.setdefault(trial.trial_id, [])
            if not history or history[-1][0] != t:
                history.append((float(t), score))

    def debug_string(self) -> str:
        return f"MedianStoppingRule: {self.num_stopped} trials stopped"
