"""Ray's module path ``ray.util.actor_pool``: :class:`ActorPool`."""

from runtime.util._actor_pool import ActorPool

__all__ = ["ActorPool"]
