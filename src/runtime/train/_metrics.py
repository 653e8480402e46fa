"""Train's metrics, through the public ``runtime.util.metrics`` API: reports per run (their
rate is the run's pace) and the number of ranks it runs with."""

from __future__ import annotations

from runtime.util.metrics import Counter, Gauge

_reports: Counter | None = None
_workers: Gauge | None = None


def _made() -> tuple[Counter, Gauge]:
    global _reports, _workers
    if _reports is None or _workers is None:
        _reports = Counter("runtime_train_reports", "Train reports, by run", tag_keys=("run",))
        _workers = Gauge("runtime_train_workers", "Ranks a Train run runs with", tag_keys=("run",))
    return _reports, _workers


def reported(run: str) -> None:
    """One report of ``run`` (every rank reached it)."""
    _made()[0].inc(tags={"run": run})


def workers(run: str, n: int) -> None:
    """``run`` now runs with ``n`` ranks (0 when it ended)."""
    _made()[1].set(n, tags={"run": run})
