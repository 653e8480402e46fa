"""Ray RLlib's module path ``ray.rllib.algorithms.impala``: ``IMPALA`` and ``IMPALAConfig``."""

from runtime.rllib.appo import IMPALA, IMPALAConfig

__all__ = ["IMPALA", "IMPALAConfig"]
