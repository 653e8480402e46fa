"""Tune's metrics, through the public ``runtime.util.metrics`` API: trials by state, each
trial's state, and the last numeric values each trial reported (the dashboard's trial table
and metric-over-time chart read them from the head's metrics)."""

from __future__ import annotations

from collections import Counter as _Count
from typing import Any

from runtime.util.metrics import Gauge

from ._trial import Status, Trial

#: Keys Tune fills in itself: not shown as a trial's metrics.
_AUTO = frozenset({"done", "training_iteration", "trial_id", "experiment_id", "date", "timestamp",
                   "time_this_iter_s", "time_total_s", "time_since_restore", "pid", "hostname",
                   "node_ip", "iterations_since_restore", "timesteps_since_restore",
                   "timesteps_total", "episodes_total", "experiment_tag", "checkpoint_dir_name",
                   "should_checkpoint"})  # fmt: skip
#: A trial's metrics shown, at most (the first numeric keys it reported).
MAX_METRICS = 8
_STATES = (Status.PENDING, Status.RUNNING, Status.PAUSED, Status.TERMINATED, Status.ERROR)


class TuneMetrics:
    """Records one experiment's trials (call :meth:`update` as the controller loops)."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self.trials = Gauge(
            "runtime_tune_trials", "Tune trials by state", tag_keys=("experiment", "state")
        )
        self.state = Gauge(
            "runtime_tune_trial_state",
            "1 for a Tune trial's current state",
            tag_keys=("experiment", "trial_id", "state"),
        )
        self.result = Gauge(
            "runtime_tune_trial_result",
            "The last value a Tune trial reported, by metric",
            tag_keys=("experiment", "trial_id", "metric"),
        )
        self._last_state: dict[str, str] = {}

    def update(self, trials: list[Trial]) -> None:
        exp = self.experiment
        counts = _Count(str(t.status) for t in trials)
        for state in _STATES:
            self.trials.set(counts.get(str(state), 0), {"experiment": exp, "state": str(state)})
        for trial in trials:
            status, before = str(trial.status), self._last_state.get(trial.trial_id)
            if before != status:
                if before is not None:
                    tags = {"experiment": exp, "trial_id": trial.trial_id, "state": before}
                    self.state.set(0, tags)
                self.state.set(1, {"experiment": exp, "trial_id": trial.trial_id, "state": status})
                self._last_state[trial.trial_id] = status
            for metric, value in _numeric(trial.last_result):
                tags = {"experiment": exp, "trial_id": trial.trial_id, "metric": metric}
                self.result.set(value, tags)


def _numeric(result: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for key, value in result.items():
        if key in _AUTO or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append((key, float(value)))
        if len(out) >= MAX_METRICS:
            break
    return out
