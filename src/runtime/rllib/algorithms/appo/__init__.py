"""Ray RLlib's module path ``ray.rllib.algorithms.appo``: ``APPO`` and ``APPOConfig``."""

from runtime.rllib.appo import APPO, APPOConfig

__all__ = ["APPO", "APPOConfig"]
