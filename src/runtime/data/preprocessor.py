"""Ray's ``ray.data.preprocessor`` module path: the ``Preprocessor`` base class."""

from .preprocessors._base import Preprocessor, PreprocessorNotFittedException

__all__ = ["Preprocessor", "PreprocessorNotFittedException"]
