"""Result: what ``fit()`` returns (final metrics, latest checkpoint, folder, error, history)."""

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
        path: the run's folder, ``storage_path/name``.
        error: None, or a :class:`TrainingFailedError` once ``max_failures`` is used up.
        metrics_history: every report of rank 0, in order.
        best_checkpoints: ``(checkpoint, metrics)`` of the checkpoints kept, oldest first.
    """

    metrics: dict[str, Any]
    checkpoint: Checkpoint | None
    path: str
    error: BaseException | None = None
    metrics_history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = field(default_factory=list)

    @property
    def metrics_dataframe(self) -> Any:
        """Rank 0's reports as a pandas DataFrame (one row per report)."""
        import pandas as pd

        return pd.DataFrame(self.metrics_history)

    def __repr__(self) -> str:
        return (
            f"Result(metrics={self.metrics!r}, checkpoint={self.checkpoint!r}, "
            f"path={self.path!r}, error={self.error!r})"
        )
