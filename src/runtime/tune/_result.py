"""The results of an experiment: one :class:`Result` per trial, in a :class:`ResultGrid`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._checkpoint import Checkpoint
from ._config import check_mode
from ._errors import MetricNotReportedError, TrialError
from ._trial import Status, Trial


@dataclass
class Result:
    """One trial's outcome: its last metrics, config, latest checkpoint, folder, error."""

    metrics: dict[str, Any]
    config: dict[str, Any]
    checkpoint: Checkpoint | None
    path: str
    error: TrialError | None = None
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    trial_id: str = ""
    status: str = ""
    metric_analysis: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def metrics_dataframe(self) -> Any:
        """Every result this trial reported (``progress.csv``), as a pandas DataFrame."""
        import pandas as pd

        path = os.path.join(self.path, "progress.csv")
        if not os.path.exists(path):
            return pd.DataFrame()
        return pd.read_csv(path)

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint | None:
        """The kept checkpoint whose reported ``metric`` is best (``mode`` "min"/"max").

        Returns None when the trial kept no checkpoint.

        Raises:
            ValueError: a bad mode, or no kept checkpoint came with ``metric``.
        """
        check_mode(mode)
        if mode is None:
            raise ValueError("get_best_checkpoint needs mode='min' or mode='max'")
        if not self.best_checkpoints:
            return None
        scored = [
            (float(m[metric]), c)
            for c, m in self.best_checkpoints
            if isinstance(m.get(metric), int | float) and not isinstance(m.get(metric), bool)
        ]
        if not scored:
            raise ValueError(
                f"no checkpoint of trial {self.trial_id or self.path} was reported with the "
                f"metric {metric!r}"
            )
        pick = max if mode == "max" else min
        return pick(scored, key=lambda item: item[0])[1]

    @classmethod
    def from_path(cls, path: str) -> Result:
        """The result of the trial whose folder is ``path`` (read from the experiment's
        state file beside it, or from the trial's own files).

        Raises:
            FileNotFoundError: ``path`` is not a trial folder.
        """
        import json

        path = os.path.abspath(path)
        state_file = os.path.join(os.path.dirname(path), "experiment_state.json")
        if os.path.exists(state_file):
            with open(state_file) as f:
                state = json.load(f)
            for entry in state.get("trials", []):
                if os.path.abspath(entry.get("path", "")) == path:
                    return cls.from_trial(Trial.from_state(entry))
        params = os.path.join(path, "params.json")
        if not os.path.exists(params):
            raise FileNotFoundError(f"{path!r} is not a Tune trial folder (no params.json)")
        with open(params) as f:
            config = json.load(f)
        metrics: dict[str, Any] = {}
        result_file = os.path.join(path, "result.json")
        if os.path.exists(result_file):
            with open(result_file) as f:
                lines = [ln for ln in f if ln.strip()]
            if lines:
                metrics = json.loads(lines[-1])
        checkpoints = sorted(
            os.path.join(path, d) for d in os.listdir(path) if d.startswith("checkpoint_")
        )
        return cls(
            metrics=metrics,
            config=config,
            checkpoint=Checkpoint(checkpoints[-1]) if checkpoints else None,
            path=path,
            best_checkpoints=[(Checkpoint(c), {}) for c in checkpoints],
            trial_id=str(metrics.get("trial_id", "")),
        )

    @classmethod
    def from_trial(cls, trial: Trial) -> Result:
        return cls(
            metrics=dict(trial.last_result),
            config=trial.config,
            checkpoint=Checkpoint(trial.checkpoint) if trial.checkpoint else None,
            path=trial.path,
            error=TrialError(trial.error) if trial.error else None,
            best_checkpoints=[(Checkpoint(p), r) for p, r in trial.checkpoints],
            trial_id=trial.trial_id,
            status=trial.status,
            metric_analysis=trial.metric_analysis,
        )


def _value(result: Result, metric: str, mode: str, scope: str) -> float | None:
    if scope == "all":
        stats = result.metric_analysis.get(metric)
        value = None if stats is None else stats[mode]
    elif scope == "last":
        value = result.metrics.get(metric)
        if value is None and metric in result.metric_analysis:  # a nested metric, "a/b"
            value = result.metric_analysis[metric]["last"]
    else:
        raise ValueError(
            f"scope must be 'last' or 'all' (Ray's 'last-N-avg' are not here): {scope!r}"
        )
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class ResultGrid:
    """The results of every trial; ``grid[i]``, ``len(grid)``, ``for r in grid``."""

    def __init__(
        self,
        trials: list[Trial],
        experiment_path: str,
        metric: str | None = None,
        mode: str | None = None,
    ):
        self._trials = list(trials)
        self._results = [Result.from_trial(t) for t in self._trials]
        self.experiment_path = experiment_path
        self._metric = metric
        self._mode = mode

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    def __repr__(self) -> str:
        return f"ResultGrid<{len(self)} trials, {self.num_errors} errors>"

    @property
    def errors(self) -> list[TrialError]:
        """The errors of the trials that failed."""
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return sum(1 for r in self._results if r.status == Status.ERROR)

    @property
    def num_terminated(self) -> int:
        return sum(1 for r in self._results if r.status == Status.TERMINATED)

    @property
    def trials(self) -> list[Trial]:
        return list(self._trials)

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        """The result whose ``metric`` is best (``mode`` "min" or "max").

        Raises:
            ValueError: no metric or mode given here or to the experiment.
            MetricNotReportedError: no trial reported ``metric`` (the error names it and
                the metrics that were reported).
        """
        metric = metric or self._metric
        mode = mode or self._mode
        if not metric or not mode:
            raise ValueError(
                "get_best_result needs a metric and a mode: pass them here or to "
                "TuneConfig/tune.run"
            )
        check_mode(mode)
        best: tuple[float, Result] | None = None
        for result in self._results:
            value = _value(result, metric, mode, scope)
            if value is None or (filter_nan_and_inf and not math.isfinite(value)):
                continue
            key = value if mode == "max" else -value
            if best is None or key > best[0]:
                best = (key, result)
        if best is None:
            seen = sorted({k for r in self._results for k in r.metrics})
            raise MetricNotReportedError(
                f"no trial reported the metric {metric!r}; the trials reported: "
                f"{', '.join(seen) or 'nothing'}"
            )
        return best[1]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> Any:
        """One row per trial: its last metrics (or its best by ``filter_metric``) and
        its config as ``config/<key>`` columns (pandas, imported here)."""
        import pandas as pd

        rows = []
        for result in self._results:
            row = dict(result.metrics)
            if filter_metric is not None and filter_mode is not None:
                df = result.metrics_dataframe
                if filter_metric in df:
                    idx = (
                        df[filter_metric].idxmax()
                        if filter_mode == "max"
                        else df[filter_metric].idxmin()
                    )
                    row = df.loc[idx].to_dict()
            for key, value in _flatten(result.config).items():
                row[f"config/{key}"] = value
            row["trial_id"] = result.trial_id
            row["status"] = result.status
            row["logdir"] = result.path
            rows.append(row)
        return pd.DataFrame(rows)

    # tune.run's ExperimentAnalysis-style shortcuts (when metric and mode were given)

    def _best(self) -> Result:
        if not self._metric or not self._mode:
            raise ValueError("best_config/best_result need metric and mode given to tune.run")
        return self.get_best_result(self._metric, self._mode)

    @property
    def best_result(self) -> dict[str, Any]:
        return self._best().metrics

    @property
    def best_config(self) -> dict[str, Any]:
        return self._best().config

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        return self._best().checkpoint

    @property
    def best_logdir(self) -> str:
        return self._best().path

    @property
    def results_df(self) -> Any:
        return self.get_dataframe()

    # Ray's ExperimentAnalysis (what tune.run returns there), over the same trials

    def _metric_mode(self, metric: str | None, mode: str | None) -> tuple[str, str]:
        metric = metric or self._metric
        mode = mode or self._mode
        if not metric or not mode:
            raise ValueError(
                "pass metric= and mode= here or to tune.run/TuneConfig to pick the best trial"
            )
        check_mode(mode)
        return metric, mode

    def get_best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Trial | None:
        """The trial whose ``metric`` is best, or None when no trial reported it."""
        metric, mode = self._metric_mode(metric, mode)
        try:
            best = self.get_best_result(metric, mode, scope, filter_nan_and_inf)
        except MetricNotReportedError:
            return None
        return self._trials[self._results.index(best)]

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any] | None:
        """The config of :meth:`get_best_trial`, or None."""
        trial = self.get_best_trial(metric, mode, scope)
        return None if trial is None else trial.config

    def get_best_logdir(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> str | None:
        """The folder of :meth:`get_best_trial`, or None."""
        trial = self.get_best_trial(metric, mode, scope)
        return None if trial is None else trial.path

    def get_best_checkpoint(
        self, trial: Trial, metric: str | None = None, mode: str | None = None
    ) -> Checkpoint | None:
        """The best checkpoint ``trial`` kept by ``metric``."""
        metric, mode = self._metric_mode(metric, mode)
        return self._results[self._trials.index(trial)].get_best_checkpoint(metric, mode)

    @property
    def best_trial(self) -> Trial:
        """The best trial by the experiment's metric and mode.

        Raises:
            ValueError: no metric/mode was given to the experiment.
            MetricNotReportedError: no trial reported the metric.
        """
        return self._trials[self._results.index(self._best())]

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        """One row per trial (pandas): each trial's last result, or with ``metric`` and
        ``mode`` its best one."""
        return self.get_dataframe(metric, mode)

    def get_all_configs(self) -> dict[str, dict[str, Any]]:
        """Each trial's folder mapped to its config."""
        return {t.path: t.config for t in self._trials}

    @property
    def trial_dataframes(self) -> dict[str, Any]:
        """Each trial's folder mapped to every result it reported (pandas)."""
        return {r.path: r.metrics_dataframe for r in self._results}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
