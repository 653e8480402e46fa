"""Callbacks: hooks the controller calls as trials start, report, finish and fail; and the
built-in logger callbacks (result.json + params.json, progress.csv, TensorBoard)."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from ._trial import Trial


class Callback:
    """Override the hooks you need; each gets keyword arguments as Ray's do."""

    def setup(self, **info: Any) -> None:
        """Called once before the first trial starts (``stop``, ``num_samples``, ...)."""

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A trial was started (or restarted) on an actor."""

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        """A trial reported a result."""

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A trial finished (its status is TERMINATED)."""

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """A trial failed for good (its status is ERROR)."""

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: str, **info: Any
    ) -> None:
        """A trial saved a checkpoint (its path)."""

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Every trial finished."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars and 0-d arrays
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return repr(value)


def dumps(value: Any) -> str:
    """JSON for results and configs: non-JSON values become their repr, numpy scalars
    numbers, and non-finite floats NaN/Infinity (as Python's and Ray's JSON do)."""
    try:
        return json.dumps(value, default=_default)
    except (TypeError, ValueError):  # e.g. non-string keys
        return json.dumps(_jsonable(value))


class LoggerCallback(Callback):
    """A callback that logs per trial: ``log_trial_start/result/end``."""

    def log_trial_start(self, trial: Trial) -> None: ...

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None: ...

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None: ...

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_start(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.log_trial_result(iteration, trial, result)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_end(trial, failed=False)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.log_trial_end(trial, failed=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in trials:
            self.log_trial_end(trial, failed=trial.error is not None)


class JsonLoggerCallback(LoggerCallback):
    """``params.json`` (the config) and ``result.json`` (one JSON line per result)."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}

    def log_trial_start(self, trial: Trial) -> None:
        with open(os.path.join(trial.path, "params.json"), "w") as f:
            f.write(dumps(trial.config))
        self._file(trial)

    def _file(self, trial: Trial) -> Any:
        f = self._files.get(trial.trial_id)
        if f is None:
            f = self._files[trial.trial_id] = open(  # noqa: SIM115 - kept open while it runs
                os.path.join(trial.path, "result.json"), "a"
            )
        return f

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        f = self._file(trial)
        f.write(dumps({**result, "config": trial.config}) + "\n")
        f.flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        f = self._files.pop(trial.trial_id, None)
        if f is not None:
            f.close()


class CSVLoggerCallback(LoggerCallback):
    """``progress.csv``: one row per result; the columns are the first result's keys."""

    def __init__(self) -> None:
        self._writers: dict[str, tuple[Any, Any]] = {}

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        flat = {k: v for k, v in _flatten(result).items() if k != "config"}
        entry = self._writers.get(trial.trial_id)
        if entry is None:
            path = os.path.join(trial.path, "progress.csv")
            exists = os.path.exists(path) and os.path.getsize(path) > 0
            f = open(path, "a", newline="")  # noqa: SIM115 - kept open while the trial runs
            if exists:
                with open(path, newline="") as r:
                    fields = next(csv.reader(r))
            else:
                fields = list(flat)
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            entry = self._writers[trial.trial_id] = (f, writer)
        f, writer = entry
        writer.writerow({k: _jsonable(v) for k, v in flat.items()})
        f.flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        entry = self._writers.pop(trial.trial_id, None)
        if entry is not None:
            entry[0].close()


class TBXLoggerCallback(LoggerCallback):
    """TensorBoard event files through tensorboardX (numeric metrics, per iteration)."""

    def __init__(self) -> None:
        # tensorboardX is optional and ships no type information (see pyproject's mypy section).
        from tensorboardX import SummaryWriter

        self._cls = SummaryWriter
        self._writers: dict[str, Any] = {}

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        writer = self._writers.get(trial.trial_id)
        if writer is None:
            writer = self._writers[trial.trial_id] = self._cls(logdir=trial.path, flush_secs=30)
        step = int(result.get("training_iteration", iteration))
        for key, value in _flatten(result).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(f"tune/{key}", value, global_step=step)
        writer.flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "config":
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def default_loggers() -> list[Callback]:
    """JSON and CSV loggers. TensorBoard is opt-in (``TBXLoggerCallback``): tensorboardX
    imports torch when installed, about 2 s, which Ray pays by default and we do not."""
    return [JsonLoggerCallback(), CSVLoggerCallback()]
