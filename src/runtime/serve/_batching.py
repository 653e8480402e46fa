"""``@serve.batch``: concurrent calls to an async method grouped into one call on a list.

The first call of a batch waits at most ``batch_wait_timeout_s`` for others (or until
``max_batch_size`` have come); the method then runs once on the list of arguments and
must return a list (or a tuple, or an array such as a numpy ndarray) of the same length;
each caller gets its own item. If the method
raises, every caller of that batch gets the error. One batch runs at a time per method
and instance; calls that arrive meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any


class _Batcher:
    def __init__(self, fn: Callable[..., Any], max_size: int, wait_s: float) -> None:
        self.fn = fn
        self.max_size = max_size
        self.wait_s = wait_s
        self.queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self.more: asyncio.Event | None = None
        self.worker: asyncio.Task[None] | None = None

    def submit(self, owner: Any, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.queue.append((item, fut))
        if self.more is None:
            self.more = asyncio.Event()
        if len(self.queue) >= self.max_size:
            self.more.set()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._run(owner))
        return fut

    async def _run(self, owner: Any) -> None:
        while self.queue:
            assert self.more is not None
            if len(self.queue) < self.max_size:
                self.more.clear()
                try:
                    async with asyncio.timeout(self.wait_s):
                        await self.more.wait()
                except TimeoutError:
                    pass
            batch, self.queue = self.queue[: self.max_size], self.queue[self.max_size :]
            batch = [(i, f) for i, f in batch if not f.done()]  # cancelled callers
            if not batch:
                continue
            items = [i for i, _ in batch]
            try:
                args = (owner, items) if owner is not None else (items,)
                results = await self.fn(*args)
                if not _is_sequence(results) or len(results) != len(items):
                    raise TypeError(
                        f"@serve.batch method {self.fn.__name__} must return a list of "
                        f"{len(items)} results (one per call), got {type(results).__name__}"
                        + (f" of {len(results)}" if _is_sequence(results) else "")
                    )
            except Exception as exc:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for i, (_, f) in enumerate(batch):
                if not f.done():
                    f.set_result(results[i])


def _is_sequence(value: Any) -> bool:
    """A list, a tuple, or an array-like (a numpy ndarray: one row per call)."""
    if isinstance(value, list | tuple):
        return True
    if isinstance(value, str | bytes | bytearray | dict):
        return False
    try:
        len(value)
    except TypeError:
        return False
    return hasattr(value, "__getitem__")


def batch(
    _fn: Callable[..., Any] | None = None,
    /,
    *,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
) -> Any:
    """Group concurrent calls of an async method (or function) into calls on lists.

    Example::

        @serve.deployment
        class Model:
            @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
            async def __call__(self, requests: list) -> list:
                return [len(r.path) for r in requests]
    """
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if not isinstance(batch_wait_timeout_s, int | float) or batch_wait_timeout_s < 0:
        raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@serve.batch needs an async def function, got {fn!r}")
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        attr = f"__serve_batcher_{fn.__name__}"
        free: dict[str, _Batcher] = {}

        def batcher(owner: Any) -> _Batcher:
            if owner is None:
                b = free.get("b")
                if b is None:
                    b = free["b"] = _Batcher(fn, max_batch_size, batch_wait_timeout_s)
                return b
            b = owner.__dict__.get(attr)
            if b is None:
                b = _Batcher(fn, max_batch_size, batch_wait_timeout_s)
                setattr(owner, attr, b)
            return b

        if is_method:

            @functools.wraps(fn)
            async def method(self: Any, item: Any) -> Any:
                return await batcher(self).submit(self, item)

            return method

        @functools.wraps(fn)
        async def function(item: Any) -> Any:
            return await batcher(None).submit(None, item)

        return function

    if _fn is not None:
        return wrap(_fn)
    return wrap
