"""``from runtime.tune.search.optuna import OptunaSearch``, as in Ray (optuna itself is
imported when the searcher is first used)."""

from runtime.tune._optuna import OptunaSearch

__all__ = ["OptunaSearch"]
