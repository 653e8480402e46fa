"""``from runtime.tune.search.hyperopt import HyperOptSearch``, as in Ray (hyperopt itself
is imported when the searcher is made)."""

from runtime.tune._hyperopt import HyperOptSearch

__all__ = ["HyperOptSearch"]
