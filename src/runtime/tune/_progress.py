"""The progress table printed while an experiment runs (quiet with ``verbose=0``)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ._callback import Callback
from ._trial import Status, Trial

_INTERVAL_S = 5.0
_MAX_ROWS = 20


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def table(trials: list[Trial], metric: str | None, max_rows: int = _MAX_ROWS) -> str:
    """A plain-text table: trial name, status, config values, iteration and metric."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    head = f"Trials: {len(trials)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
    keys: list[str] = []
    for t in trials:
        for key in _flat(t.config):
            if key not in keys:
                keys.append(key)
    metrics = ["training_iteration"] + ([metric] if metric else [])
    if not metric:
        for t in trials:
            for key, value in t.last_result.items():
                if key not in _AUTO and isinstance(value, int | float) and key not in metrics:
                    metrics.append(key)
                    break
            if len(metrics) > 1:
                break
    columns = ["trial", "status", *keys[:6], *metrics]
    order = {Status.RUNNING: 0, Status.PAUSED: 1, Status.PENDING: 2, Status.ERROR: 3}
    shown = sorted(trials, key=lambda t: order.get(t.status, 4))[:max_rows]
    rows = []
    for t in shown:
        flat = _flat(t.config)
        rows.append(
            [t.trial_name, t.status]
            + [_fmt(flat.get(k, "")) for k in keys[:6]]
            + [_fmt(t.last_result.get(m, "")) for m in metrics]
        )
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [
        head,
        line,
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        line,
    ]
    out += [
        "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    out.append(line)
    if len(trials) > len(shown):
        out.append(f"... {len(trials) - len(shown)} more trials not shown")
    return "\n".join(out)


_AUTO = frozenset(
    {
        "done",
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "iterations_since_restore",
        "timestamp",
        "trial_id",
        "pid",
        "hostname",
    }
)


class ProgressReporter(Callback):
    """Prints the table every few seconds and at the end (``verbose`` >= 1)."""

    def __init__(
        self, metric: str | None = None, interval_s: float = _INTERVAL_S, out: TextIO | None = None
    ):
        self.metric = metric
        self.interval_s = interval_s
        self.out = out
        self._last = 0.0

    def _print(self, trials: list[Trial]) -> None:
        stream = self.out or sys.stdout
        stream.write(table(trials, self.metric) + "\n")
        stream.flush()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._print(trials)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        stream = self.out or sys.stdout
        stream.write(f"Trial {trial.trial_name} errored:\n{trial.error}\n")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._print(trials)
