"""Ray RLlib's module path ``ray.rllib.algorithms.appo.appo``: ``APPO`` and ``APPOConfig``."""

from runtime.rllib.appo import APPO, APPOConfig

__all__ = ["APPO", "APPOConfig"]
