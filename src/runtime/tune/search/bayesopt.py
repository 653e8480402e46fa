"""``from runtime.tune.search.bayesopt import BayesOptSearch``, as in Ray (the
``bayesian-optimization`` package is imported when the searcher is made)."""

from runtime.tune._bayesopt import BayesOptSearch

__all__ = ["BayesOptSearch"]
