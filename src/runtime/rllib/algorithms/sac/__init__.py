"""Ray RLlib's module path ``ray.rllib.algorithms.sac``: ``SAC`` and ``SACConfig``."""

from runtime.rllib.sac import SAC, SACConfig

__all__ = ["SAC", "SACConfig"]
