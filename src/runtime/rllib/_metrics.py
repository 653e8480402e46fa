"""MetricsLogger: custom metrics logged by callbacks, reduced into an iteration's result.

A callback calls ``metrics_logger.log_value("my_metric", x, reduce="mean")`` (Ray's call).
Env runners log into their own logger and hand the values back with every batch; the
algorithm pools each key's values over its runners and the iteration's rounds, reduces them
(``mean``, ``min``, ``max`` or ``sum``) into ``result["env_runners"][key]``; values logged
in the driver (``on_train_result``, ``on_algorithm_init``, ...) land at the result's top
level. Unlike Ray's, values do not carry over from one iteration to the next (an
iteration's figure is over that iteration's values; ``window`` keeps only the last N).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MetricsLogger", "merge_metrics"]

REDUCTIONS = ("mean", "min", "max", "sum")

#: What a logger hands over: key -> (reduce, window, values).
Logged = dict[str, tuple[str, int | None, list[float]]]


class MetricsLogger:
    """Collects logged values per key until ``drain()`` hands them over (and clears them)."""

    def __init__(self) -> None:
        self._values: Logged = {}

    def log_value(
        self,
        key: str | tuple[str, ...],
        value: Any,
        reduce: str = "mean",
        window: int | None = None,
        clear_on_reduce: bool = True,
        **unsupported: Any,
    ) -> None:
        """Log one value under ``key`` (a name, or a tuple of names for a nested result key).

        Raises:
            ValueError: an unknown ``reduce``, or another ``reduce`` than this key had.
            NotImplementedError: Ray's options not implemented here (``ema_coeff``, ...).
        """
        if unsupported:
            raise NotImplementedError(
                f"MetricsLogger.log_value({next(iter(unsupported))}=...) is not supported here"
            )
        del clear_on_reduce  # every iteration starts afresh here
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        name = key if isinstance(key, str) else "/".join(key)
        entry = self._values.setdefault(name, (reduce, window, []))
        if entry[0] != reduce:
            raise ValueError(f"metric {name!r} was logged with reduce={entry[0]!r} before")
        entry[2].append(float(value))

    def log_dict(self, values: dict[str, Any], *, key: str | None = None, **kwargs: Any) -> None:
        """``log_value`` for every item (under ``key/`` when given)."""
        for name, value in values.items():
            self.log_value(f"{key}/{name}" if key else name, value, **kwargs)

    def peek(self, key: str | tuple[str, ...], default: Any = None) -> Any:
        """The reduced value logged so far under ``key`` (``default`` when none)."""
        name = key if isinstance(key, str) else "/".join(key)
        if name not in self._values:
            return default
        return merge_metrics([{name: self._values[name]}])[name]

    def drain(self) -> Logged:
        """Everything logged since the last drain (and forget it)."""
        values, self._values = self._values, {}
        return values


def merge_metrics(logged: list[Logged]) -> dict[str, float]:
    """Pool each key's values over ``logged`` and reduce them."""
    pooled: Logged = {}
    for part in logged:
        for name, (reduce, window, values) in part.items():
            pooled.setdefault(name, (reduce, window, []))[2].extend(values)
    out: dict[str, float] = {}
    for name, (reduce, window, values) in pooled.items():
        kept = values[-window:] if window else values
        out[name] = float(getattr(np, reduce)(kept)) if kept else float("nan")
    return out


def nest(flat: dict[str, float]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}`` (tuple keys were joined with ``/``)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
