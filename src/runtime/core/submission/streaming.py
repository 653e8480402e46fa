"""Streaming generators: ``f.options(num_returns="streaming").remote()``.

The node running the generator sends each item to the caller as soon as it is produced
(``StreamItem``); the caller keeps them as objects it owns and hands out their refs in order
through an :class:`ObjectRefGenerator`. The consumer acknowledges what it took
(``StreamAck``), and the producer pauses while ``window`` items wait unconsumed: a fast
generator never runs ahead of a slow consumer by more than that.

An error raised by the generator becomes the object of the next ref, as in Ray: ``next()``
returns that ref and getting it raises the error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..common.threads import LoopInbox
from ..objects.refs import ObjectRef, return_id
from ..wire import protocol as p

if TYPE_CHECKING:
    from ..wire.transport import Connection


class StreamHost(Protocol):
    """What a streaming call's state needs of the caller's worker (the worker is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def inbox(self) -> LoopInbox: ...
    @property
    def streams(self) -> dict[bytes, StreamState]: ...
    def new_owned(self, object_id: bytes) -> ObjectRef[Any]: ...
    def resolve(self, oid: bytes, value: p.Value | p.Located, buffers: list[Any]) -> None: ...
    def cancel_task(self, task_id: bytes, *, force: bool, recursive: bool) -> bool: ...


#: Items a generator may run ahead of its consumer, unless the call says otherwise.
DEFAULT_WINDOW = 16


class StreamState:
    """The caller's side of one streaming task (every method runs on the worker's loop)."""

    __slots__ = (
        "conn",
        "consumed",
        "finished",
        "items",
        "node_id",
        "received",
        "task_id",
        "waiter",
        "watchers",
        "worker",
    )

    def __init__(self, worker: StreamHost, task_id: bytes) -> None:
        self.worker = worker
        self.task_id = task_id
        self.items: deque[ObjectRef[Any]] = deque()
        self.received = 0
        self.consumed = 0
        self.finished = False
        self.node_id = ""
        self.conn: Connection | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: runtime.wait calls waiting for the next item (or the end) without taking it.
        self.watchers: list[asyncio.Future[None]] = []

    def on_item(self, index: int, value: p.Value | p.Located, buffers: list[Any]) -> None:
        if self.finished or index != self.received + 1:
            return  # a late item of a cancelled stream, or a duplicate
        self.received = index
        oid = return_id(self.task_id, index)
        ref = self.worker.new_owned(oid)
        self.worker.resolve(oid, value, buffers)
        self.items.append(ref)
        self._wake()

    def on_done(self, error: p.Value | None) -> None:
        if self.finished:
            return
        if error is not None:  # the error is the object of one more ref
            index = self.received + 1
            oid = return_id(self.task_id, index)
            ref = self.worker.new_owned(oid)
            self.worker.resolve(oid, error, [])
            self.items.append(ref)
            self.received = index
        self.finished = True
        self.worker.streams.pop(self.task_id, None)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        watchers, self.watchers = self.watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)

    def is_ready(self) -> bool:
        """Whether ``next()`` would answer at once: an item is there, or the stream ended."""
        return bool(self.items) or self.finished

    async def wait_ready(self) -> None:
        """Wait until :meth:`is_ready` (for ``runtime.wait``), taking nothing."""
        while not self.is_ready():
            fut = self.worker.loop.create_future()
            self.watchers.append(fut)
            await fut

    async def next(self) -> ObjectRef[Any]:
        while not self.items:
            if self.finished:
                raise StopAsyncIteration
            self.waiter = self.worker.loop.create_future()
            await self.waiter
            self.waiter = None
        ref = self.items.popleft()
        self.consumed += 1
        conn = self.conn
        if not self.finished and conn is not None and not conn.closed:
            conn.send(p.StreamAck(self.task_id, self.consumed))
        return ref

    def close(self) -> None:
        """The consumer dropped the generator early: stop the producer, free the items."""
        self.items.clear()
        if not self.finished:
            self.finished = True
            self.worker.streams.pop(self.task_id, None)
            self.worker.cancel_task(self.task_id, force=False, recursive=True)


class ObjectRefGenerator:
    """The refs of a streaming task's items, in order, as they are produced.

    Iterate it (``for ref in gen``) in sync code, or ``async for ref in gen`` in async code;
    each item is an ObjectRef. ``runtime.cancel(gen)`` stops the generator.
    """

    def __init__(self, state: StreamState) -> None:
        self._state = state

    @property
    def task_id(self) -> bytes:
        return self._state.task_id

    def __iter__(self) -> Iterator[ObjectRef[Any]]:
        return self

    def __next__(self) -> ObjectRef[Any]:
        state = self._state
        worker = state.worker
        if worker.inbox.on_loop():
            raise RuntimeError(
                "iterating an ObjectRefGenerator blocks, and this is the runtime's event loop: "
                "use `async for ref in gen` here"
            )
        fut = asyncio.run_coroutine_threadsafe(state.next(), worker.loop)
        try:
            return fut.result()
        except StopAsyncIteration:
            raise StopIteration from None
        except BaseException:
            fut.cancel()
            raise

    def __aiter__(self) -> AsyncIterator[ObjectRef[Any]]:
        return self

    async def __anext__(self) -> ObjectRef[Any]:
        state = self._state
        worker = state.worker
        if worker.inbox.on_loop():
            return await state.next()
        fut: concurrent.futures.Future[ObjectRef[Any]] = asyncio.run_coroutine_threadsafe(
            state.next(), worker.loop
        )
        return await asyncio.wrap_future(fut)

    def completed(self) -> bool:
        """True once the generator finished and every item was handed out."""
        return self._state.finished and not self._state.items

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is None or (state.finished and not state.items):
            return
        with contextlib.suppress(Exception):  # the runtime is gone: nothing left to stop
            state.worker.inbox.post(state.close)

    def __reduce__(self) -> Any:
        raise TypeError(
            "an ObjectRefGenerator cannot be passed to other tasks or actors; pass the "
            "refs it yields instead"
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._state.task_id.hex()})"


__all__ = ["DEFAULT_WINDOW", "ObjectRefGenerator", "StreamState"]
