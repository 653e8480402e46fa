"""Ray RLlib's module path ``ray.rllib.algorithms.algorithm``: ``Algorithm``."""

from runtime.rllib._algorithm import Algorithm

__all__ = ["Algorithm"]
