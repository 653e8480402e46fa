"""Random and grid search: every grid combination, ``num_samples`` times, domains sampled."""

from __future__ import annotations

import copy
import random
from typing import Any

from ._search_space import count_variants, generate_variants, leaves, set_path, validate
from ._searcher import Searcher


class BasicVariantGenerator(Searcher):
    """Ray's default searcher: the grid cross product times ``num_samples``, random draws.

    Args:
        points_to_evaluate: configs (possibly partial) to run first; each takes the place
            of one sample; keys they leave out are drawn from the space.
        max_concurrent: at most this many of its trials at once (0: no limit).
        random_state: a seed (or ``random.Random``) for reproducible draws.
    """

    needs_metric = False

    def __init__(
        self,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        max_concurrent: int = 0,
        random_state: int | random.Random | None = None,
    ):
        super().__init__()
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        for p in self._points:
            if not isinstance(p, dict):
                raise TypeError(f"points_to_evaluate needs dicts, got {p!r}")
        self._max_concurrent = max_concurrent
        self._rng = (
            random_state if isinstance(random_state, random.Random) else random.Random(random_state)
        )
        self._variants: list[dict[str, Any]] | None = None
        self._next = 0
        self._live: set[str] = set()

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        super().set_search_properties(metric, mode, config)
        if self._variants is not None:
            return True  # restored: keep the variants already drawn
        validate(config)
        num_samples = int(spec.get("num_samples", 1))
        samples = max(num_samples, len(self._points))
        variants: list[dict[str, Any]] = []
        for i in range(samples):
            space = copy.deepcopy(config)
            if i < len(self._points):
                for path, value in leaves(self._points[i]):
                    set_path(space, path, value)
            variants.extend(generate_variants(space, self._rng))
        self._variants = variants
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._variants is None:
            raise RuntimeError("set_search_properties must be called before suggest")
        if self._next >= len(self._variants):
            return Searcher.FINISHED
        if self._max_concurrent and len(self._live) >= self._max_concurrent:
            return None
        config = self._variants[self._next]
        self._next += 1
        self._live.add(trial_id)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._live.discard(trial_id)

    def total_samples(self) -> int | None:
        return None if self._variants is None else len(self._variants)

    @staticmethod
    def count(config: dict[str, Any], num_samples: int) -> int:
        """How many trials ``config`` and ``num_samples`` make."""
        return count_variants(config) * num_samples
