"""Stop criteria: a dict of thresholds, a function ``(trial_id, result) -> bool``, or a
:class:`Stopper` object (which may also stop the whole experiment)."""

from __future__ import annotations

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
