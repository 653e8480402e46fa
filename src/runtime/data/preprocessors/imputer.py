"""Ray's ``ray.data.preprocessors.imputer`` module path."""

from ._impl import SimpleImputer

__all__ = ["SimpleImputer"]
