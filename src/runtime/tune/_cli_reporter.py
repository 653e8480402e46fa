"""CLIReporter: Ray's progress table with the columns chosen by the user."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ._progress import ProgressReporter, _flat, _fmt
from ._trial import Status, Trial


def _columns(spec: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    if isinstance(spec, str):
        raise TypeError("columns are a list of names or a dict of name -> header, not a str")
    return {str(k): str(k) for k in spec}


class CLIReporter(ProgressReporter):
    """Prints a progress table with the chosen metric and parameter columns.

    Pass it as ``tune.run(progress_reporter=...)`` or ``RunConfig(progress_reporter=...)``.

    Args:
        metric_columns: the reported metrics to show (a list, or a dict of metric ->
            header); by default ``training_iteration`` and the experiment's metric.
        parameter_columns: the config keys to show (``"a/b"`` for nested ones); by
            default the first six.
        total_samples: the number of trials the header says will run, when known.
        max_progress_rows: at most this many trials in the table.
        max_error_rows: at most this many failed trials listed under it.
        max_column_length: longer values and headers are cut to this.
        max_report_frequency: seconds between two tables while trials run.
        metric, mode: with ``sort_by_metric``, the rows are sorted best first.
        sort_by_metric: sort rows by ``metric`` instead of by status.
        out: where the table goes (``sys.stdout`` by default).
    """

    def __init__(
        self,
        *,
        metric_columns: Sequence[str] | Mapping[str, str] | None = None,
        parameter_columns: Sequence[str] | Mapping[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: float = 5,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
        out: TextIO | None = None,
    ):
        super().__init__(metric=metric, interval_s=max_report_frequency, out=out)
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if max_progress_rows < 1 or max_column_length < 4:
            raise ValueError("max_progress_rows must be >= 1 and max_column_length >= 4")
        self.metric_columns = _columns(metric_columns)
        self.parameter_columns = _columns(parameter_columns)
        self.total_samples = total_samples
        self.max_progress_rows = max_progress_rows
        self.max_error_rows = max_error_rows
        self.max_column_length = max_column_length
        self.infer_limit = infer_limit
        self.print_intermediate_tables = print_intermediate_tables
        self.mode = mode
        self.sort_by_metric = sort_by_metric

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        """Show ``metric`` too, headed ``representation`` (the metric's name by default).

        Raises:
            ValueError: the column is already shown.
        """
        if metric in self.metric_columns:
            raise ValueError(f"column {metric!r} is already shown")
        self.metric_columns[metric] = representation or metric

    def add_parameter_column(self, parameter: str, representation: str | None = None) -> None:
        """Show the config value ``parameter`` too (``"a/b"`` for a nested one)."""
        if parameter in self.parameter_columns:
            raise ValueError(f"column {parameter!r} is already shown")
        self.parameter_columns[parameter] = representation or parameter

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        """Take the experiment's metric and mode where none was given here."""
        self.metric = self.metric or metric
        self.mode = self.mode or mode
        return True

    def _cut(self, text: str) -> str:
        n = self.max_column_length
        return text if len(text) <= n else text[: n - 3] + "..."

    def table(self, trials: list[Trial]) -> str:
        """The table as text (what each report prints)."""
        params = dict(self.parameter_columns)
        if not params:
            for t in trials:
                for key in _flat(t.config):
                    if len(params) < 6:
                        params.setdefault(key, key)
        metrics = dict(self.metric_columns)
        if not metrics:
            metrics = {"training_iteration": "iter"}
            if self.metric:
                metrics[self.metric] = self.metric
        shown = self._order(trials)[: self.max_progress_rows]
        headers = ["Trial name", "status", *params.values(), *metrics.values()]
        rows = []
        for t in shown:
            flat = _flat(t.config)
            rows.append(
                [t.trial_name, t.status]
                + [_fmt(flat.get(k, "")) for k in params]
                + [_fmt(t.last_result.get(m, "")) for m in metrics]
            )
        headers = [self._cut(h) for h in headers]
        rows = [[self._cut(v) for v in r] for r in rows]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        total = f"/{self.total_samples}" if self.total_samples else ""
        status = ", ".join(f"{n} {s}" for s, n in counts.items())
        line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
        out = [f"Number of trials: {len(trials)}{total} ({status})", line]
        out.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        out[-1] += " |"
        out.append(line)
        for r in rows:
            out.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
            out[-1] += " |"
        out.append(line)
        if len(trials) > len(shown):
            out.append(f"... {len(trials) - len(shown)} more trials not shown")
        errored = [t for t in trials if t.status == Status.ERROR][: self.max_error_rows]
        if errored:
            out.append(f"Number of errored trials: {len(errored)}")
            out += [f"  {t.trial_name}: {t.path}" for t in errored]
        return "\n".join(out)

    def _order(self, trials: list[Trial]) -> list[Trial]:
        if self.sort_by_metric and self.metric and self.mode:
            sign = -1.0 if self.mode == "max" else 1.0

            def key(t: Trial) -> float:
                v = t.last_result.get(self.metric or "")
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    return sign * float(v)
                return math.inf

            return sorted(trials, key=key)
        order = {Status.RUNNING: 0, Status.PAUSED: 1, Status.PENDING: 2, Status.ERROR: 3}
        return sorted(trials, key=lambda t: order.get(t.status, 4))

    def _print(self, trials: list[Trial]) -> None:
        stream = self.out or sys.stdout
        stream.write(self.table(trials) + "\n")
        stream.flush()

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if self.print_intermediate_tables is False:
            return
        super().on_trial_result(iteration, trials, trial, result, **info)
