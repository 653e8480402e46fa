"""Preprocessors (Ray's ``ray.data.preprocessors``): fit statistics on a Dataset, then
transform Datasets or single batches with them; the fitted state pickles with a checkpoint.

Example::

    from runtime.data.preprocessors import Chain, StandardScaler, OneHotEncoder
    prep = Chain(StandardScaler(["x"]), OneHotEncoder(["color"]))
    train = prep.fit_transform(train_ds)
    batch = prep.transform_batch(pandas_df)   # at serving time, no cluster needed
"""

from ._base import Preprocessor, PreprocessorNotFittedException
from ._impl import (
    Chain,
    Concatenator,
    LabelEncoder,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    SimpleImputer,
    StandardScaler,
)

__all__ = [
    "Chain",
    "Concatenator",
    "LabelEncoder",
    "MinMaxScaler",
    "OneHotEncoder",
    "OrdinalEncoder",
    "Preprocessor",
    "PreprocessorNotFittedException",
    "SimpleImputer",
    "StandardScaler",
]
