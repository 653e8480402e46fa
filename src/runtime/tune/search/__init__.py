"""Ray's module path for the searchers: ``from runtime.tune.search import
ConcurrencyLimiter`` and ``from runtime.tune.search.optuna import OptunaSearch`` (as
``ray.tune.search``); the same classes as ``runtime.tune.*``."""

from runtime.tune._basic_variant import BasicVariantGenerator
from runtime.tune._concurrency_limiter import ConcurrencyLimiter
from runtime.tune._searcher import Searcher

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Searcher"]
