"""Ray RLlib's module path ``ray.rllib.callbacks``: ``RLlibCallback`` (see ``.callbacks``)."""

from runtime.rllib.callbacks.callbacks import DefaultCallbacks, RLlibCallback

__all__ = ["DefaultCallbacks", "RLlibCallback"]
