"""Ray's module path ``ray.actor``: the actor classes and :func:`exit_actor`."""

from __future__ import annotations

import runtime
from runtime import ActorClass, ActorHandle, ActorMethod


def exit_actor() -> None:
    """End the actor the calling method runs in, from inside it (Ray's ``actor.exit_actor``).

    The actor is killed without restart; the call that ran ``exit_actor`` and every later
    call fail with :class:`runtime.exceptions.ActorDiedError` (Ray's ``RayActorError``).
    Only from a ``def`` method here (an ``async def`` one may not block on the kill).

    Raises:
        TypeError: called outside an actor method, as in Ray.
    """
    ctx = runtime.get_runtime_context()
    if ctx.get_actor_id() is None:
        raise TypeError("exit_actor() is called outside an actor method")
    runtime.kill(ctx.current_actor, no_restart=True)
    # The kill stops this actor's node-side state; do not return a value meanwhile.
    raise SystemExit(0)


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
