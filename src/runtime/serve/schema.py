"""Serve's config-file schema objects under Ray's module path ``serve.schema``:
``LoggingConfig`` (a deployment's ``logging_config``)."""

from ._config import LoggingConfig

__all__ = ["LoggingConfig"]
