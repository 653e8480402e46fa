"""Ray's ``ray.data.preprocessors.scaler`` module path."""

from ._impl import MinMaxScaler, StandardScaler

__all__ = ["MinMaxScaler", "StandardScaler"]
