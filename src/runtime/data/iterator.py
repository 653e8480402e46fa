"""Ray's ``ray.data.iterator`` module path: ``DataIterator``."""

from ._iterator import DataIterator

__all__ = ["DataIterator"]
