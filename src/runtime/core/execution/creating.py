"""Actors started on a node: CreateActors (each spec of the message created in turn, one
answer each), and the starter threads that start the threads of actors that have their own."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..common.errors import error_item
from ..common.threads import ThreadPool
from ..wire import protocol as p

#: Starts the threads of actors that have a thread of their own (``own_thread``, concurrency
#: groups, ``max_concurrency`` > 1; the others are strands on the node's pool), started by
#: its constructor's submission; ``Thread.start`` waits until the new thread runs (0.1-0.4
#: ms here, longer on a crowded machine), which held the node's loop once per actor. A few
#: starters take that wait off the loop, in parallel.
_starters: tuple[int, ThreadPool] | None = None


def start_thread_of(pool: ThreadPool, fn: Callable[[], None]) -> None:
    """``pool.submit(fn)`` from a starter thread (made per process: a forked host's members
    do not inherit its threads)."""
    global _starters
    if _starters is None or _starters[0] != os.getpid():
        _starters = (os.getpid(), ThreadPool("runtime-actor-starter", 4))
    _starters[1].submit(partial(pool.submit, fn))


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


__all__ = ["create_many", "start_thread_of"]
