"""Ray's module path ``ray.actor``: the actor classes and :func:`exit_actor`."""

from __future__ import annotations

import runtime
from runtime import ActorClass, ActorHandle, ActorMethod


def exit_actor() -> None:
    """End the actor the calling method runs in, from inside it (Ray's ``actor.exit_actor``).

    The actor ends without restart (as ``sys.exit()`` in an actor method does): the call that
    ran ``exit_actor`` and every later call fail with
    :class:`runtime.exceptions.ActorDiedError` (Ray's ``RayActorError``). Works in ``def``
    and ``async def`` methods: it raises ``SystemExit``, which the node takes as the actor's
    exit.

    Raises:
        TypeError: called outside an actor method, as in Ray.
    """
    ctx = runtime.get_runtime_context()
    if ctx.get_actor_id() is None:
        raise TypeError("exit_actor() is called outside an actor method")
    raise SystemExit(0)


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
