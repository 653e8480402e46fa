"""Ray RLlib's module path ``ray.rllib.algorithms.bc``: ``BC``, its config."""

from runtime.rllib.marwil import BC, BCConfig

__all__ = ["BC", "BCConfig"]
