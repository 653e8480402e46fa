"""The searcher plug point: :class:`Searcher` suggests configs and learns from results.

A searcher is asked for one config per new trial (``suggest``); it returns a config, None
("not now": wait until a running trial finishes), or :attr:`Searcher.FINISHED`. Implement
``suggest`` and ``on_trial_complete``; ``tests/tune/conformance.py`` holds the test case
class every searcher passes.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, ClassVar

from ._config import check_mode
from ._search_space import Domain, is_grid, leaves


def offers_another_space(space: dict[str, Any] | None, config: dict[str, Any]) -> bool:
    """Whether a searcher built on ``space`` is offered another one with search domains in it
    (Ray's contract: its ``set_search_properties`` then answers False)."""
    return (
        space is not None
        and bool(config)
        and config != space
        and any(isinstance(v, Domain) or is_grid(v) for _, v in leaves(config))
    )


class Searcher:
    """Base class of searchers (Ray's ``Searcher`` interface)."""

    FINISHED: ClassVar[str] = "FINISHED"
    #: Whether this searcher can only work with a metric to optimize.
    needs_metric: ClassVar[bool] = True

    def __init__(self, metric: str | None = None, mode: str | None = None):
        check_mode(mode)
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Receive the experiment's metric, mode and search space (before any suggest).

        Returns False when the searcher was already configured with a different space
        (Ray's contract); the default fills in what was not given at construction.
        """
        check_mode(mode)
        if self._metric is None and metric is not None:
            self._metric = metric
        if self._mode is None and mode is not None:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A config for a new trial, None for "not now", or ``Searcher.FINISHED``."""
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """An intermediate result of a trial this searcher suggested."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """A trial ended: its last result, or ``error=True`` if it failed."""
        raise NotImplementedError

    def add_evaluated_point(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Tell the searcher about a point evaluated elsewhere (optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not take evaluated points")

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's state (default: pickle the searcher) atomically."""
        tmp = checkpoint_path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.__dict__, f)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def total_samples(self) -> int | None:
        """How many trials this searcher will suggest, if it knows (for progress)."""
        return None
