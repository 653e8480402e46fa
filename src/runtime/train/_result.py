"""Result: what ``fit()`` returns (final metrics, latest checkpoint, folder, error, history),
and what ``Result.from_path`` reads back from a run's folder later."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._checkpoint import Checkpoint


@dataclass
class Result:
    """The outcome of a training run.

    Attributes:
        metrics: the last metrics rank 0 reported (``{}`` if it reported none).
        checkpoint: the latest persisted checkpoint, or None.
        path: the run's folder, ``storage_path/name`` (a path on ``filesystem``).
        error: None, or a :class:`TrainingFailedError` once ``max_failures`` is used up.
        metrics_history: every report of rank 0, in order.
        best_checkpoints: ``(checkpoint, metrics)`` of the checkpoints kept, oldest first.
        filesystem: the ``pyarrow.fs.FileSystem`` the run's folder is on.
    """

    metrics: dict[str, Any]
    checkpoint: Checkpoint | None
    path: str
    error: BaseException | None = None
    metrics_history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)
    filesystem: Any = None

    @property
    def metrics_dataframe(self) -> Any:
        """Rank 0's reports as a pandas DataFrame (one row per report)."""
        import pandas as pd

        return pd.DataFrame(self.metrics_history)

    def get_best_checkpoint(self, metric: str, mode: str) -> Checkpoint | None:
        """The kept checkpoint whose report had the best ``metric`` (``mode``: "max"/"min").

        Returns None when no kept checkpoint's report has ``metric``.

        Raises:
            ValueError: ``mode`` is neither "max" nor "min".
        """
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        scored = [
            (float(m[metric]), c)
            for c, m in self.best_checkpoints
            if isinstance(m.get(metric), int | float) and not isinstance(m.get(metric), bool)
        ]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda entry: entry[0])[1]

    @classmethod
    def from_path(cls, path: str, storage_filesystem: Any = None) -> Result:
        """The Result of the run whose folder is ``path`` (a local path or a URI), as the run
        left it: metrics history, the checkpoints kept with their metrics, the error text.

        Raises:
            FileNotFoundError: no Train run was written there.
        """
        from ._storage import StorageContext, read_run, resolve_filesystem

        fs, run_path = resolve_filesystem(str(path), storage_filesystem)
        context = StorageContext(fs, run_path)
        run = read_run(context)
        state, history = run["state"], run["history"]
        kept = [(context.checkpoint(c["dir"]), dict(c["metrics"])) for c in state["checkpoints"]]
        error = None if not state.get("error") else RuntimeError(state["error"])
        return cls(
            metrics=dict(history[-1]) if history else {},
            checkpoint=kept[-1][0] if kept else None,
            path=run_path,
            error=error,
            metrics_history=history,
            best_checkpoints=kept,
            filesystem=fs,
        )

    def __repr__(self) -> str:
        return (
            f"Result(metrics={self.metrics!r}, checkpoint={self.checkpoint!r}, "
            f"path={self.path!r}, error={self.error!r})"
        )
