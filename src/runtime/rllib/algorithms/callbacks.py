"""Ray RLlib's older module path ``ray.rllib.algorithms.callbacks``: ``DefaultCallbacks``."""

from runtime.rllib.callbacks.callbacks import DefaultCallbacks, RLlibCallback

__all__ = ["DefaultCallbacks", "RLlibCallback"]
