"""The warning every ``runtime.air`` name gives: Ray 2.60 deprecates ``ray.air`` too."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


class RayDeprecationWarning(DeprecationWarning):
    """A name kept only for older Ray programs (Ray's class of the same name)."""


def moved(old: str, new_module: str, name: str) -> Any:
    """Warn that ``old`` moved to ``new_module.name`` and return that object."""
    warnings.warn(
        f"{old} is deprecated (as in Ray 2.60): use {new_module.replace('runtime', 'ray', 1)}"
        f".{name} instead ({new_module}.{name} here)",
        RayDeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(new_module), name)
