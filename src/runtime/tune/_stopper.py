"""Stop criteria: a dict of thresholds, a function ``(trial_id, result) -> bool``, or a
:class:`Stopper` object (which may also stop the whole experiment)."""

from __future__ import annotations

import datetime
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class Stopper:
    """Decides per result whether a trial stops, and whether everything stops."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        raise NotImplementedError

    def stop_all(self) -> bool:
        return False


class MaximumIterationStopper(Stopper):
    """Stop each trial after ``max_iter`` iterations."""

    def __init__(self, max_iter: int):
        self.max_iter = max_iter

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(result.get("training_iteration", 0) >= self.max_iter)


class TrialPlateauStopper(Stopper):
    """Stop a trial once ``metric`` has stopped moving (Ray's ``TrialPlateauStopper``).

    Once the trial has reported ``num_results`` values (and at least ``grace_period``
    results), it stops when the standard deviation of the last ``num_results`` values is
    at most ``std``. With ``metric_threshold`` it stops only when the mean of those values
    is also past the threshold (``mode`` "min": at or below it; "max": at or above it).

    Raises:
        ValueError: ``mode`` is neither "min" nor "max" when a threshold is given, or a
            count is below 1.
    """

    def __init__(  # noqa: PLR0917 - Ray's signature, positional parameters included
        self,
        metric: str,
        std: float = 0.01,
        num_results: int = 4,
        grace_period: int = 4,
        metric_threshold: float | None = None,
        mode: str | None = None,
    ):
        if num_results < 1 or grace_period < 0:
            raise ValueError("num_results must be >= 1 and grace_period >= 0")
        if metric_threshold is not None and mode not in ("min", "max"):
            raise ValueError("metric_threshold needs mode='min' or mode='max'")
        self.metric = metric
        self.std = std
        self.num_results = num_results
        self.grace_period = grace_period
        self.metric_threshold = metric_threshold
        self.mode = mode
        self._history: dict[str, deque[float]] = {}
        self._seen: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self.metric)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        self._seen[trial_id] = self._seen.get(trial_id, 0) + 1
        history = self._history.setdefault(trial_id, deque(maxlen=self.num_results))
        history.append(float(value))
        if self._seen[trial_id] < self.grace_period or len(history) < self.num_results:
            return False
        if self.metric_threshold is not None:
            mean = statistics.fmean(history)
            if self.mode == "min" and mean > self.metric_threshold:
                return False
            if self.mode == "max" and mean < self.metric_threshold:
                return False
        return statistics.pstdev(history) <= self.std


class TimeoutStopper(Stopper):
    """Stop the whole experiment ``timeout`` after the stopper was made (Ray's
    ``TimeoutStopper``); ``timeout`` is seconds or a ``datetime.timedelta``."""

    def __init__(self, timeout: float | datetime.timedelta):
        seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
        if not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout_s = float(seconds)
        self._deadline = time.monotonic() + self.timeout_s

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return time.monotonic() >= self._deadline

    def __getstate__(self) -> dict[str, Any]:
        # A monotonic deadline means nothing in another process: keep the time left.
        state = dict(self.__dict__)
        state["_left"] = max(0.0, self._deadline - time.monotonic())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        left = state.pop("_left", state.get("timeout_s", 0.0))
        self.__dict__.update(state)
        self._deadline = time.monotonic() + left


class CombinedStopper(Stopper):
    """Several stoppers as one: a trial stops when any of them says so, and so does the
    whole experiment (Ray's ``CombinedStopper``)."""

    def __init__(self, *stoppers: Stopper):
        for s in stoppers:
            if not isinstance(s, Stopper):
                raise TypeError(f"CombinedStopper takes tune.Stopper objects, got {s!r}")
        self.stoppers = list(stoppers)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        # Every stopper sees every result (they may keep history), so no short-circuit.
        decisions = [s(trial_id, result) for s in self.stoppers]
        return any(decisions)

    def stop_all(self) -> bool:
        return any(s.stop_all() for s in self.stoppers)


class _DictStopper(Stopper):
    """Ray's dict criteria: stop when ``result[key] >= value`` for any key."""

    def __init__(self, criteria: dict[str, Any]):
        for key, value in criteria.items():
            if not isinstance(key, str) or isinstance(value, bool):
                raise TypeError(
                    f"stop criteria map metric names to numbers, got {key!r}: {value!r}"
                )
            if not isinstance(value, int | float):
                raise TypeError(f"stop[{key!r}] must be a number, got {value!r}")
        self.criteria = dict(criteria)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        for key, threshold in self.criteria.items():
            value = result.get(key)
            if isinstance(value, int | float) and value >= threshold:
                return True
        return False


class _FunctionStopper(Stopper):
    def __init__(self, fn: Callable[[str, dict[str, Any]], bool]):
        self.fn = fn

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self.fn(trial_id, result))


def make_stopper(stop: Any) -> Stopper | None:
    """The Stopper for ``stop`` (None, dict, function or Stopper); TypeError otherwise."""
    if stop is None:
        return None
    if isinstance(stop, Stopper):
        return stop
    if isinstance(stop, dict):
        return _DictStopper(stop)
    if callable(stop):
        return _FunctionStopper(stop)
    raise TypeError(
        f"stop must be a dict of thresholds, a function (trial_id, result) -> bool or a "
        f"tune.Stopper, got {type(stop).__name__}"
    )
