"""A first-in, first-out queue shared across the cluster, held by one async actor.

``Queue`` is a thin client: every operation is one call to a ``_QueueActor`` that keeps an
``asyncio.Queue`` on its node's event loop. Blocking waits (a ``get`` on an empty queue, a
``put`` on a full one) are awaited inside the actor's async methods under
``asyncio.timeout``, so a waiting call never blocks the actor's loop: other callers' puts
and gets run meanwhile, and the put that makes room (or brings an item) wakes the waiter.

The actor answers every call with a status instead of raising, so the client raises a clean
``Empty``/``Full`` (not a remote ``TaskError``) and no traceback crosses the wire on the
common "nothing there" path. A ``Queue`` pickles (its state is the actor handle and
``maxsize``): tasks and actors that receive it talk to the same actor.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterable
from typing import Any

import runtime
from runtime.exceptions import ActorDiedError

__all__ = ["Empty", "Full", "Queue"]


class Empty(queue.Empty):
    """Raised by ``get`` when no item came within the timeout (or at once, without blocking)."""


class Full(queue.Full):
    """Raised by ``put`` when no room came within the timeout (or at once, without blocking)."""


# The actor's answers: (status, value). A status, not an exception, so "empty" costs no
# remote traceback and the client raises its own clean Empty/Full.
_OK, _EMPTY, _FULL, _CLOSED = 0, 1, 2, 3


class _QueueActor:
    """The queue's state: an ``asyncio.Queue`` on the actor's loop (every method is async,
    so all of them run on that one loop and the queue needs no lock)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.closed = False
        self.waiters: set[asyncio.Task[Any]] = set()

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, boxed: list[Any], timeout: float | None) -> int:
        """Put ``boxed[0]`` (boxed so an ObjectRef item stays a ref); wait for room."""
        if self.closed:
            return _CLOSED
        try:
            self.queue.put_nowait(boxed[0])
            return _OK
        except asyncio.QueueFull:
            if timeout is not None and timeout <= 0:
                return _FULL
        status, _ = await self._wait(self.queue.put(boxed[0]), timeout, _FULL)
        return status

    async def get(self, timeout: float | None) -> tuple[int, Any]:
        """Take the first item; wait for one (``timeout`` None: until one arrives)."""
        if self.closed:
            return _CLOSED, None
        try:
            return _OK, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return _EMPTY, None
        return await self._wait(self.queue.get(), timeout, _EMPTY)

    async def _wait(self, op: Any, timeout: float | None, on_timeout: int) -> tuple[int, Any]:
        """Await a queue operation under a deadline; ``close()`` ends the wait early."""
        task = asyncio.current_task()
        assert task is not None
        self.waiters.add(task)
        try:
            async with asyncio.timeout(timeout):
                return _OK, await op
        except TimeoutError:
            return on_timeout, None
        except asyncio.CancelledError:
            if self.closed and task.cancelling() == 1:  # our close(), not the runtime's cancel
                task.uncancel()
                return _CLOSED, None
            raise
        finally:
            self.waiters.discard(task)

    async def put_nowait_batch(self, items: list[Any]) -> int:
        """Put all of ``items`` in order, or none of them if they do not all fit."""
        if self.closed:
            return _CLOSED
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return _FULL
        for item in items:
            self.queue.put_nowait(item)
        return _OK

    async def get_nowait_batch(self, num_items: int) -> tuple[int, Any]:
        """Take ``num_items`` items in order, or none if fewer are there."""
        if self.closed:
            return _CLOSED, None
        if num_items > self.queue.qsize():
            return _EMPTY, self.queue.qsize()
        return _OK, [self.queue.get_nowait() for _ in range(num_items)]

    async def close(self) -> None:
        """Refuse new calls and end every waiting put/get (they raise ActorDiedError)."""
        self.closed = True
        waiters = list(self.waiters)
        for task in waiters:
            task.cancel()
        if waiters:
            await asyncio.wait(waiters)


_actor_class: Any = None


def _queue_actor_class() -> Any:
    """One actor class for every queue, made on first use (its pickled class is cached)."""
    global _actor_class
    if _actor_class is None:
        _actor_class = runtime.remote(_QueueActor)
    return _actor_class


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            raise TypeError(f"'timeout' must be a number of seconds or None, got {timeout!r}")
        if timeout < 0:
            raise ValueError(f"'timeout' must be a non-negative number, got {timeout!r}")


class Queue:
    """A first-in, first-out queue on the cluster, like ``asyncio.Queue`` but shared.

    Args:
        maxsize: the most items the queue holds; 0 (the default) means unbounded.
        actor_options: options for the queue's actor (``num_cpus``, ``resources``,
            ``name``, ``scheduling_strategy``, ...), passed to ``.options(...)``.

    The queue pickles: pass it to tasks and actors and they use the same queue. Items
    come out in the order they went in; an ObjectRef put in comes out as the same ref.

    Example::

        q = Queue(maxsize=10)
        q.put(1)
        assert q.get(timeout=5) == 1

        @runtime.remote
        def produce(q, n):
            for i in range(n):
                q.put(i)

        produce.remote(q, 3)
        assert [q.get() for _ in range(3)] == [0, 1, 2]
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0 (0: unbounded), got {maxsize!r}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"actor_options must be a dict, got {type(actor_options).__name__}")
        self.maxsize = maxsize
        cls = _queue_actor_class()
        if actor_options:
            cls = cls.options(**actor_options)
        self.actor: Any = cls.remote(maxsize)

    def _handle(self) -> Any:
        if self.actor is None:
            raise ActorDiedError("this queue was shut down (Queue.shutdown); make a new Queue")
        return self.actor

    # --- size ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue now."""
        return int(runtime.get(self._handle().qsize.remote()))

    def qsize(self) -> int:
        """The number of items in the queue now (as ``queue.Queue.qsize``)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item now."""
        return bool(runtime.get(self._handle().empty.remote()))

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items now (never, when unbounded)."""
        return bool(runtime.get(self._handle().full.remote()))

    # --- put ----------------------------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end of the queue.

        Args:
            item: any serializable value (an ObjectRef stays a ref).
            block: wait for room when the queue is full; False: raise Full at once.
            timeout: with ``block``, seconds to wait at most; None waits until there is room.

        Raises:
            Full: no room at once (``block=False``) or within ``timeout``.
            ValueError: ``timeout`` is negative.
            ActorDiedError: the queue was shut down.
        """
        _check_timeout(timeout)
        status = runtime.get(self._handle().put.remote([item], timeout if block else 0))
        _raise_put(status, self.maxsize)

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end of the queue, awaiting room (as :meth:`put`, for async code).

        Raises:
            Full: no room at once (``block=False``) or within ``timeout``.
            ValueError: ``timeout`` is negative.
            ActorDiedError: the queue was shut down.
        """
        _check_timeout(timeout)
        status = await self._handle().put.remote([item], timeout if block else 0)
        _raise_put(status, self.maxsize)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: add the item or raise Full at once."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all of ``items`` in order, or none of them.

        Raises:
            Full: the queue has no room for all of them (then none was added).
            TypeError: ``items`` is not iterable.
        """
        if not isinstance(items, Iterable):
            raise TypeError(f"put_nowait_batch takes an iterable, got {type(items).__name__}")
        batch = list(items)
        status = runtime.get(self._handle().put_nowait_batch.remote(batch))
        if status == _FULL:
            raise Full(
                f"cannot add {len(batch)} items to a queue of maxsize {self.maxsize}: "
                "not enough room (nothing was added)"
            )
        _raise_put(status, self.maxsize)

    # --- get ----------------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item.

        Args:
            block: wait for an item when the queue is empty; False: raise Empty at once.
            timeout: with ``block``, seconds to wait at most; None waits until an item comes.

        Raises:
            Empty: no item at once (``block=False``) or within ``timeout``.
            ValueError: ``timeout`` is negative.
            ActorDiedError: the queue was shut down.
        """
        _check_timeout(timeout)
        status, value = runtime.get(self._handle().get.remote(timeout if block else 0))
        return _item(status, value, timeout if block else 0)

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item, awaiting one (as :meth:`get`, for async code).

        Raises:
            Empty: no item at once (``block=False``) or within ``timeout``.
            ValueError: ``timeout`` is negative.
            ActorDiedError: the queue was shut down.
        """
        _check_timeout(timeout)
        status, value = await self._handle().get.remote(timeout if block else 0)
        return _item(status, value, timeout if block else 0)

    def get_nowait(self) -> Any:
        """``get(block=False)``: the first item, or Empty at once."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the first ``num_items`` items in order, or none of them.

        Raises:
            Empty: fewer than ``num_items`` items are in the queue (then none was taken).
            TypeError, ValueError: ``num_items`` is not an int >= 0.
        """
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError(f"num_items must be an int, got {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        status, value = runtime.get(self._handle().get_nowait_batch.remote(num_items))
        if status == _EMPTY:
            raise Empty(f"cannot get {num_items} items from a queue of {value} (none was taken)")
        if status == _CLOSED:
            raise _closed()
        return list(value)

    # --- lifetime -----------------------------------------------------------------------------

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor; its items are dropped and its resources freed.

        Args:
            force: kill the actor at once: calls waiting on it fail with ActorDiedError.
                False: first close the queue (waiting puts and gets end with
                ActorDiedError saying the queue was shut down), waiting at most
                ``grace_period_s`` for that, then kill the actor.
            grace_period_s: how long a graceful shutdown waits before killing.

        Every holder of the queue (tasks, actors it was passed to) then gets
        ActorDiedError from any call. Calling shutdown twice is harmless.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            done, _ = runtime.wait([actor.close.remote()], timeout=grace_period_s)
            del done
        runtime.kill(actor, no_restart=True)

    def __repr__(self) -> str:
        state = "shut down" if self.actor is None else repr(self.actor)
        return f"Queue(maxsize={self.maxsize}, {state})"


def _closed() -> ActorDiedError:
    return ActorDiedError("the queue was shut down (Queue.shutdown) while this call waited")


def _raise_put(status: int, maxsize: int) -> None:
    if status == _FULL:
        raise Full(f"the queue is full (maxsize={maxsize})")
    if status == _CLOSED:
        raise _closed()


def _item(status: int, value: Any, timeout: float | None) -> Any:
    if status == _OK:
        return value
    if status == _EMPTY:
        if timeout == 0:
            raise Empty("the queue is empty")
        raise Empty(f"no item came within {timeout} s")
    raise _closed()
