"""Ray RLlib's module path ``ray.rllib.algorithms.impala.impala``: ``IMPALA``, its config."""

from runtime.rllib.appo import IMPALA, IMPALAConfig

__all__ = ["IMPALA", "IMPALAConfig"]
