"""Ray's ``ray.air.config``: Train's option classes, each with a deprecation warning."""

from __future__ import annotations

from typing import Any

from runtime.air._deprecation import moved

_NAMES = frozenset({"ScalingConfig", "RunConfig", "CheckpointConfig", "FailureConfig"})


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return moved(f"ray.air.config.{name}", "runtime.train", name)
    raise AttributeError(f"module 'runtime.air.config' has no attribute {name!r}")
