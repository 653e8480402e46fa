"""Ray RLlib's module path ``ray.rllib.algorithms.algorithm_config``: ``AlgorithmConfig``."""

from runtime.rllib._config import AlgorithmConfig, NotProvided

__all__ = ["AlgorithmConfig", "NotProvided"]
