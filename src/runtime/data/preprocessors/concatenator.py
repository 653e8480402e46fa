"""Ray's ``ray.data.preprocessors.concatenator`` module path."""

from ._impl import Concatenator

__all__ = ["Concatenator"]
