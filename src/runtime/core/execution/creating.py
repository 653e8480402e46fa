"""CreateActors on a node: each spec of the message created in turn, one answer each."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ..common.errors import error_item
from ..wire import protocol as p


def create_many(create: Callable[[p.ActorSpec], Any], msg: p.CreateActors) -> Any:
    """``create`` (a node's ``create_actor``) for each spec of a CreateActors, their class
    blobs once in ``msg.blobs``: one answer each, in order: None (started here), [node id,
    address] (a process of its own started for it), or the error it raised (as
    :func:`~..common.errors.error_item`). A coroutine when some answer has to be awaited."""
    out: list[Any] = []
    later: list[tuple[int, Awaitable[Any]]] = []
    for spec in msg.specs:
        try:
            if not spec.cls_blob:
                spec.cls_blob = msg.blobs[spec.cls_id]
            started = create(spec)
        except Exception as exc:
            out.append(error_item(exc))
            continue
        if inspect.isawaitable(started):
            later.append((len(out), started))
        out.append(None)
    if not later:
        return out

    async def finish() -> list[Any]:
        done = await asyncio.gather(*(a for _, a in later), return_exceptions=True)
        for (i, _), result in zip(later, done, strict=True):
            out[i] = error_item(result) if isinstance(result, BaseException) else result
        return out

    return finish()


__all__ = ["create_many"]
