"""ConcurrencyLimiter: wrap a searcher so at most ``max_concurrent`` of its trials run at once."""

from __future__ import annotations

from typing import Any

from ._searcher import Searcher


class ConcurrencyLimiter(Searcher):
    """Answers "not now" while ``max_concurrent`` suggested trials are still running.

    Args:
        searcher: the searcher to wrap.
        max_concurrent: at most this many live trials (>= 1).
        batch: suggest in batches of ``max_concurrent``; wait until the whole batch ends.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False):
        if not isinstance(searcher, Searcher):
            raise TypeError(f"ConcurrencyLimiter wraps a Searcher, got {type(searcher).__name__}")
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        super().__init__(searcher.metric, searcher.mode)
        self.searcher = searcher
        self.max_concurrent = max_concurrent
        self.batch = batch
        self.live: set[str] = set()
        self.needs_metric = searcher.needs_metric  # type: ignore[misc]

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        super().set_search_properties(metric, mode, config)
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.live) >= self.max_concurrent:
            return None
        if self.batch and self.live and getattr(self, "_batch_full", False):
            return None
        suggestion = self.searcher.suggest(trial_id)
        if isinstance(suggestion, dict):
            self.live.add(trial_id)
            self._batch_full = len(self.live) >= self.max_concurrent
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.live:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.live:
            return
        self.live.discard(trial_id)
        if not self.live:
            self._batch_full = False
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def total_samples(self) -> int | None:
        return self.searcher.total_samples()
