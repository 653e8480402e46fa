"""Ray's ``ray.data.context`` module path: ``DataContext``."""

from ._context import DataContext

__all__ = ["DataContext"]
