"""The blocking facade: a script's thread waits on a future that the worker's loop resolves.

Also the typed accessor of this process's worker for the API layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from ..common.context import current_task
from ..common.exceptions import GetTimeoutError
from ..common.strands import begin_blocking, end_blocking
from ..objects import refs as _refs
from ..objects import serialization as ser
from ..process.worker import Worker
from ..submission.direct import blocked

T = TypeVar("T")

#: The worker of this process (RuntimeError when the runtime is not initialized), as the
#: whole :class:`Worker`: the same function as ``refs.current_worker``, typed for this layer.
current_worker = cast("Callable[[], Worker]", _refs.current_worker)

#: Starts a local mesh on first use (set by the session module, which sits beside this one).
_auto_init: Callable[[], None] | None = None


def set_auto_init(hook: Callable[[], None]) -> None:
    """Register what :func:`worker_or_init` calls when no runtime is running yet."""
    global _auto_init
    _auto_init = hook


def worker_or_init() -> Worker:
    """This process's worker, starting a local mesh first if none runs, as Ray does on the
    first ``.remote()``, ``put``, ``get``, ``wait`` or ``get_actor`` (unless
    ``RUNTIME_AUTO_INIT=0``, where the error that says to call ``runtime.init()`` stays)."""
    worker = _refs._worker  # the per-call path: one read, no call (get() runs at ~2M/s)
    if worker is None:
        if _auto_init is not None:
            _auto_init()
        return current_worker()
    return worker  # type: ignore[return-value]  # the process's worker is the whole Worker


def blocking(worker: Worker, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the worker's loop and wait for it from this (non-loop) thread."""
    if worker.inbox.on_loop():
        coro.close()
        raise RuntimeError(
            "this call blocks, and it was made on the runtime's event loop (inside an async "
            "actor method or async task), where blocking would stall the node: use `await ref` "
            "(or `await asyncio.gather(*refs)`) instead of runtime.get()"
        )
    ctx = current_task.get()
    executor = worker.executor
    lend = ctx is not None and executor is not None and bool(ctx.demand)
    if lend:
        worker.inbox.post(executor.lend, ctx)  # type: ignore[union-attr]
    fut = asyncio.run_coroutine_threadsafe(deadline(coro, timeout), worker.loop)
    blocked()  # (as in wait_owned)
    held = begin_blocking()  # on a strand's thread: the pool runs the others meanwhile
    try:
        return fut.result()
    except BaseException:
        fut.cancel()  # e.g. KeyboardInterrupt: leave no task behind on the loop
        raise
    finally:
        end_blocking(held)
        if lend:
            worker.inbox.post(executor.take_back, ctx)  # type: ignore[union-attr]


def wait_owned(worker: Worker, refs: Sequence[_refs.ObjectRef[Any]], timeout: float | None) -> bool:
    """The fast path of a blocking get: when this process owns every ref, wait until all are
    ready on one lock that the loop releases. False when the slow path must be taken.

    The waiter is added from this thread, under the reference table's lock (which the loop
    also takes to add or take waiters), instead of being posted to the loop: a blocked caller
    costs the loop no wake-up of its own, only the answer's.
    """
    return _wait_entries(worker, refs, timeout) is not None


#: What :func:`get_owned` returns when the slow path must be taken.
SLOW: Any = object()


def get_owned(worker: Worker, refs: Sequence[_refs.ObjectRef[Any]], timeout: float | None) -> Any:
    """A blocking get of refs this process owns, on the fast path (:func:`wait_owned`): their
    values in order (the first error raises, as in Ray), or :data:`SLOW` when the slow path
    must be taken (a ref owned elsewhere, a value not here)."""
    entries = _wait_entries(worker, refs, timeout)
    if entries is None:
        return SLOW
    values: list[Any] = []
    decode = ser.msgpack_decode
    for entry in entries:
        value = entry.value
        if value is None or entry.state != _refs.READY:  # stored elsewhere, or lost again
            found, got = worker.try_get_local(refs[len(values)])
            if not found:
                return SLOW
            values.append(got)
        elif value.kind == ser.KIND_MSGPACK:  # (ser.deserialize, inline: once per value)
            values.append(decode(value.data))
        else:
            values.append(ser.deserialize(value, entry.buffers))
    return values


def _wait_entries(
    worker: Worker, refs: Sequence[_refs.ObjectRef[Any]], timeout: float | None
) -> list[_refs.OwnedObject] | None:
    table = worker.refs
    ctx = current_task.get()
    # A task that holds resources lends them while it blocks (blocking() tells the executor):
    # that is the slow path's. An actor method holds none: it waits here like a driver.
    lends = ctx is not None and bool(ctx.demand) and worker.executor is not None
    if not refs or lends:
        return None
    get = table.owned.get
    entries = [get(r.id) for r in refs]
    if None in entries:  # (identity: an entry has no __eq__)
        return None
    if worker.inbox.on_loop():
        blocking(worker, _noop(), None)  # raises the "use await" error
    # One pending entry watched at a time, not a waiter per entry (objects.refs.AllReady).
    waiter = _refs.AllReady(table, worker.loop, entries)  # type: ignore[arg-type]
    with table.lock:  # the loop takes it before it calls the waiters
        if waiter.watch():
            return entries  # type: ignore[return-value]
    blocked()  # it waits: its next actor call may be written from here (submission.direct)
    held = begin_blocking()
    got = False
    try:
        got = waiter.ready.acquire(timeout=-1 if timeout is None else timeout)
    finally:
        end_blocking(held)
        if not got:  # (a timeout, or an interrupt)
            with table.lock:
                waiter.cancel()
    if not got:
        raise GetTimeoutError(f"the objects were not ready within {timeout} s")
    return entries  # type: ignore[return-value]


async def _noop() -> None:
    return None


async def deadline(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        raise GetTimeoutError(f"the objects were not ready within {timeout} s") from None


__all__ = [
    "blocking",
    "current_worker",
    "deadline",
    "get_owned",
    "set_auto_init",
    "wait_owned",
    "worker_or_init",
]
