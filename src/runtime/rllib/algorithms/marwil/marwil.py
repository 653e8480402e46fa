"""Ray RLlib's module path ``ray.rllib.algorithms.marwil.marwil``: ``MARWIL``, its config."""

from runtime.rllib.marwil import MARWIL, MARWILConfig

__all__ = ["MARWIL", "MARWILConfig"]
