"""Ray's module path ``ray.actor``: the actor classes and :func:`exit_actor`."""

from __future__ import annotations

from runtime import ActorClass, ActorHandle, ActorMethod
from runtime.core.api.context import exit_actor

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
