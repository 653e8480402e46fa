"""Ray's ``ray.data.preprocessors.chain`` module path."""

from ._impl import Chain

__all__ = ["Chain"]
