"""BayesOptSearch: suggestions from a Gaussian process (the ``bayesian-optimization``
package), for search spaces of continuous floats.

Every searched value must be a ``tune.uniform`` (the package models a box of floats);
constants pass through. The first ``random_search_steps`` suggestions are drawn at random
(so parallel trials start spread out), then each one comes from the package's
acquisition function over the results told so far (metric negated for ``mode="min"``, as
the package maximizes). ``bayes_opt`` is imported when the searcher is made.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
from typing import Any

from ._search_space import Domain, Float, Path, is_grid, leaves, set_path, validate
from ._searcher import Searcher, offers_another_space


class BayesOptSearch(Searcher):
    """A Bayesian-optimization searcher over float parameters (Ray's ``BayesOptSearch``).

    Args:
        space: ``{name: tune.uniform(lo, hi)}`` (or ``(lo, hi)`` tuples, as Ray takes);
            usually None and taken from the experiment.
        metric, mode: what to optimize (or from TuneConfig / tune.run).
        points_to_evaluate: configs tried first.
        utility_kwargs: the acquisition function's settings for ``bayes_opt`` < 2
            (``kind``, ``kappa``, ``xi``); later versions choose their own.
        random_state: seed of the model and of the random steps.
        random_search_steps: random suggestions before the model takes over.
        verbose: the package's verbosity.

    Raises:
        ImportError: ``bayesian-optimization`` is not installed.
        ValueError: a searched parameter is not a plain uniform float.
    """

    def __init__(  # noqa: PLR0917 - Ray's signature, positional parameters included
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        utility_kwargs: dict[str, Any] | None = None,
        random_state: int = 42,
        random_search_steps: int = 10,
        verbose: int = 0,
        patience: int = 5,
        skip_duplicate: bool = True,
    ):
        import bayes_opt

        super().__init__(metric, mode)
        self._bayes_opt = bayes_opt
        self._utility_kwargs = dict(utility_kwargs or {"kind": "ucb", "kappa": 2.576, "xi": 0.0})
        self._seed = random_state
        self._rng = random.Random(random_state)
        self._random_steps = random_search_steps
        self._verbose = verbose
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self._space: dict[str, Any] | None = None
        self._bounds: dict[str, tuple[float, float]] = {}
        self._constants: list[tuple[Path, Any]] = []
        self._optimizer: Any = None
        self._live: dict[str, dict[str, float]] = {}
        self._suggested = 0
        if space is not None:
            self._setup({k: Float(*v) if isinstance(v, tuple) else v for k, v in space.items()})

    def _setup(self, space: dict[str, Any]) -> None:
        validate(space)
        self._space = space
        for path, value in leaves(space):
            label = "/".join(path)
            if isinstance(value, Float) and not value.log and value.q is None:
                self._bounds[label] = (value.lower, value.upper)
            elif isinstance(value, Domain) or is_grid(value):
                raise ValueError(
                    f"BayesOptSearch searches only tune.uniform floats; {label!r} is "
                    f"{type(value).__name__ if not is_grid(value) else 'grid_search'}"
                )
            else:
                self._constants.append((path, value))
        self._optimizer = self._bayes_opt.BayesianOptimization(
            f=None,
            pbounds=self._bounds,
            random_state=self._seed,
            verbose=self._verbose,
            allow_duplicate_points=True,
        )

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        if offers_another_space(self._space, config):
            return False
        super().set_search_properties(metric, mode, config)
        if self._space is None:
            self._setup(config)
        return True

    def _next_params(self) -> dict[str, float]:
        if self._points:
            point = self._points.pop(0)
            return {k: float(v) for k, v in ((("/".join(p)), v) for p, v in leaves(point))}
        if self._suggested < self._random_steps or not len(self._optimizer.space):
            return {k: self._rng.uniform(lo, hi) for k, (lo, hi) in self._bounds.items()}
        suggest = self._optimizer.suggest
        if "utility_function" in inspect.signature(suggest).parameters:  # bayes_opt < 2
            utility = self._bayes_opt.UtilityFunction(**self._utility_kwargs)  # type: ignore[attr-defined, unused-ignore]
            return dict(suggest(utility))
        return {k: float(v) for k, v in suggest().items()}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._space is None:
            raise RuntimeError("BayesOptSearch has no search space: give it space= or param_space")
        if self._metric is None or self._mode is None:
            raise ValueError("BayesOptSearch needs a metric and a mode")
        params = self._next_params()
        self._suggested += 1
        self._live[trial_id] = params
        config: dict[str, Any] = {}
        for path, value in self._constants:
            set_path(config, path, copy.deepcopy(value))
        for label, value in params.items():
            set_path(config, tuple(label.split("/")), float(value))
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        params = self._live.pop(trial_id, None)
        metric = self._metric
        value = None if result is None or metric is None else result.get(metric)
        if params is None or error or not isinstance(value, int | float):
            return
        if not math.isfinite(value):
            return
        target = float(value) if self._mode == "max" else -float(value)
        self._optimizer.register(params=params, target=target)

    def add_evaluated_point(self, config: dict[str, Any], result: dict[str, Any]) -> None:
        """Tell the model about a config evaluated elsewhere."""
        metric = self._metric
        if metric is None or metric not in result:
            raise ValueError(f"the result needs the metric {metric!r}")
        flat = {"/".join(p): float(v) for p, v in leaves(config) if "/".join(p) in self._bounds}
        value = float(result[metric])
        self._optimizer.register(params=flat, target=value if self._mode == "max" else -value)
