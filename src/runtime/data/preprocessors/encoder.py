"""Ray's ``ray.data.preprocessors.encoder`` module path."""

from ._impl import LabelEncoder, OneHotEncoder, OrdinalEncoder

__all__ = ["LabelEncoder", "OneHotEncoder", "OrdinalEncoder"]
