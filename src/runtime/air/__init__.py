"""Ray's ``ray.air`` names that Ray 2.60 still ships, for older programs.

Each name is Train's or Tune's public one and warns (:class:`RayDeprecationWarning`, a
``DeprecationWarning``) when a program takes it from here: ``air.ScalingConfig``,
``air.RunConfig``, ``air.CheckpointConfig``, ``air.FailureConfig`` and ``air.Result`` (also as
``air.config.*``) are ``runtime.train``'s; ``air.session.report`` and the other session
functions report to the Train run or the Tune trial they are called in. Ray 2.60 has no
``air.Checkpoint`` any more (it is ``train.Checkpoint``), so neither is it here.

Example::

    from runtime.air import session          # warns: use runtime.train / runtime.tune
    session.report({"loss": 0.1})
"""

from __future__ import annotations

from typing import Any

from runtime.air import config, session
from runtime.air._deprecation import RayDeprecationWarning, moved

#: The names Ray 2.60's ``ray.air`` exports, each mapped to where it lives here.
_MOVED = {
    "ScalingConfig": "runtime.train",
    "RunConfig": "runtime.train",
    "CheckpointConfig": "runtime.train",
    "FailureConfig": "runtime.train",
    "Result": "runtime.train",
}

__all__ = ["RayDeprecationWarning", "config", "session"]


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return moved(f"ray.air.{name}", _MOVED[name], name)
    raise AttributeError(f"module 'runtime.air' has no attribute {name!r}")
