"""Ray's module path ``ray.tune.tuner``: :class:`Tuner`."""

from runtime.tune._tuner import Tuner

__all__ = ["Tuner"]
