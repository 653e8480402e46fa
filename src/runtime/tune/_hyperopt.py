"""HyperOptSearch: suggestions from hyperopt's Tree-structured Parzen Estimator.

Our domains map onto hyperopt's: uniform/loguniform/quniform/qloguniform onto ``hp.uniform``
and friends, randint/lograndint onto quantized (log-)uniforms cast to ``int``, randn/qrandn
onto ``hp.normal``/``hp.qnormal``, choice onto ``hp.choice``; constants pass through. Each
suggestion is one new trial document asked of ``tpe.suggest``; a finished trial's metric
is told back as its loss (negated for ``mode="max"``). ``hyperopt`` is imported when the
searcher is made (the ``tune-search`` extra).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

from ._search_space import (
    Categorical,
    Domain,
    Float,
    Integer,
    Normal,
    Path,
    is_grid,
    leaves,
    set_path,
    validate,
)
from ._searcher import Searcher, offers_another_space


def _hp_expr(label: str, domain: Any) -> Any:
    from hyperopt import hp

    if isinstance(domain, Float):
        if domain.log:
            low, high = math.log(domain.lower), math.log(domain.upper)
            if domain.q is not None:
                return hp.qloguniform(label, low, high, domain.q)
            return hp.loguniform(label, low, high)
        if domain.q is not None:
            return hp.quniform(label, domain.lower, domain.upper, domain.q)
        return hp.uniform(label, domain.lower, domain.upper)
    if isinstance(domain, Integer):
        q = domain.q or 1
        if domain.log:
            return hp.qloguniform(label, math.log(domain.lower), math.log(domain.upper - 1), q)
        return hp.quniform(label, domain.lower, domain.upper - 1, q)
    if isinstance(domain, Normal):
        if domain.q is not None:
            return hp.qnormal(label, domain.mean, domain.sd, domain.q)
        return hp.normal(label, domain.mean, domain.sd)
    if isinstance(domain, Categorical):
        return hp.choice(label, list(domain.categories))
    kind = "grid_search" if is_grid(domain) else type(domain).__name__
    raise ValueError(
        f"HyperOptSearch cannot search {kind} at {label!r}: use uniform, quniform, "
        "loguniform, qloguniform, randint, qrandint, lograndint, randn, qrandn or choice"
    )


class HyperOptSearch(Searcher):
    """A searcher backed by hyperopt's TPE (Ray's ``HyperOptSearch``).

    Args:
        space: a search space of our domains; usually None and taken from the experiment.
        metric, mode: what to optimize (or from TuneConfig / tune.run).
        points_to_evaluate: configs tried first, before any suggestion.
        n_initial_points: random suggestions before TPE models the results.
        random_state_seed: seed of the suggestions.
        gamma: TPE's split between good and bad trials.

    Raises:
        ImportError: hyperopt is not installed (``pip install hyperopt``).
    """

    def __init__(  # noqa: PLR0917 - Ray's signature, positional parameters included
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        n_initial_points: int = 20,
        random_state_seed: int | None = None,
        gamma: float = 0.25,
    ):
        import hyperopt
        import numpy as np
        from hyperopt import tpe

        super().__init__(metric, mode)
        if n_initial_points < 1:
            raise ValueError("n_initial_points must be >= 1")
        self._algo = functools.partial(tpe.suggest, n_startup_jobs=n_initial_points, gamma=gamma)
        self._rng = np.random.default_rng(random_state_seed)
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self._hp_trials = hyperopt.Trials()
        self._space: dict[str, Any] | None = None
        self._exprs: dict[str, Any] = {}
        self._domains: dict[str, Any] = {}
        self._constants: list[tuple[Path, Any]] = []
        self._live: dict[str, int] = {}  # our trial id -> hyperopt trial id
        if space is not None:
            self._setup(space)

    def _setup(self, space: dict[str, Any]) -> None:
        import hyperopt

        validate(space)
        self._space = space
        for path, value in leaves(space):
            label = "/".join(path)
            if isinstance(value, Domain) or is_grid(value):
                self._exprs[label] = _hp_expr(label, value)
                self._domains[label] = value
            else:
                self._constants.append((path, value))
        self._hp_domain = hyperopt.Domain(lambda cfg: cfg, self._exprs)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        if offers_another_space(self._space, config):
            return False
        super().set_search_properties(metric, mode, config)
        if self._space is None:
            self._setup(config)
        return True

    def _config(self, values: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for path, value in self._constants:
            set_path(config, path, copy.deepcopy(value))
        for label, raw in values.items():
            domain = self._domains[label]
            value = raw
            if isinstance(domain, Integer):
                value = min(max(round(raw), domain.lower), domain.upper - 1)
            elif isinstance(domain, Float | Normal):
                value = float(raw)
            set_path(config, tuple(label.split("/")), value)
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        import hyperopt

        if self._space is None:
            raise RuntimeError("HyperOptSearch has no search space: give it space= or param_space")
        if self._metric is None or self._mode is None:
            raise ValueError("HyperOptSearch needs a metric and a mode")
        tid = self._hp_trials.new_trial_ids(1)[0]
        self._hp_trials.refresh()
        if self._points:
            point = self._points.pop(0)
            flat = {"/".join(p): v for p, v in leaves(point)}
            vals = {k: [self._index(k, flat[k])] for k in self._exprs}
            misc = {
                "tid": tid,
                "cmd": self._hp_domain.cmd,
                "workdir": None,
                "idxs": {k: [tid] for k in self._exprs},
                "vals": vals,
            }
            docs = self._hp_trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc])
        else:
            seed = int(self._rng.integers(2**31 - 1))
            docs = self._algo([tid], self._hp_domain, self._hp_trials, seed)
        self._hp_trials.insert_trial_docs(docs)
        self._hp_trials.refresh()
        self._live[trial_id] = tid
        vals = {k: v[0] for k, v in docs[0]["misc"]["vals"].items() if v}
        return self._config(hyperopt.space_eval(self._exprs, vals))

    def _index(self, label: str, value: Any) -> Any:
        domain = self._domains[label]
        if isinstance(domain, Categorical):
            return list(domain.categories).index(value)
        return value

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        import hyperopt

        tid = self._live.pop(trial_id, None)
        if tid is None:
            return
        doc = next(t for t in self._hp_trials._dynamic_trials if t["tid"] == tid)
        metric = self._metric
        value = None if result is None or metric is None else result.get(metric)
        if error or not isinstance(value, int | float) or not math.isfinite(value):
            doc["state"] = hyperopt.JOB_STATE_ERROR
            doc["result"] = {"status": hyperopt.STATUS_FAIL}
        else:
            loss = -float(value) if self._mode == "max" else float(value)
            doc["state"] = hyperopt.JOB_STATE_DONE
            doc["result"] = {"loss": loss, "status": hyperopt.STATUS_OK}
        self._hp_trials.refresh()

    def save(self, checkpoint_path: str) -> None:
        # Trials still running are not resumed by hyperopt; drop them from the saved copy.
        state = dict(self.__dict__)
        state["_live"] = {}
        import os

        import cloudpickle

        tmp = checkpoint_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(cloudpickle.dumps(state))
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
