"""Calling deployments from Python: ``DeploymentHandle``, ``DeploymentResponse``.

``handle.remote(x)`` returns a :class:`DeploymentResponse` at once; the call is routed on an
event loop (the caller's running loop, or the process's serve loop for sync callers) by the
deployment's :class:`~runtime.serve._router.Router`, straight to a replica. Await the
response (``await resp``) or block on it (``resp.result()``). A response passed, unawaited,
into another handle call travels as the object ref of its result: the second replica gets
the value without it passing through the caller. ``handle.options(stream=True)`` gives a
:class:`DeploymentResponseGenerator` that yields the items of a generator method.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import runtime

from . import _client
from ._context import current_request
from ._exceptions import ReplicaFullError
from ._router import ReplicaSlot, Retries, Router, get_router, is_replica_gone, is_retryable


class DeploymentHandle:
    """A handle to a deployment: ``await handle.remote(x)``, ``await handle.method.remote(x)``.

    Handles pickle (as the app and deployment names): pass them to other deployments,
    tasks and actors. Bound deployments passed to ``.bind()`` arrive as handles.
    """

    def __init__(
        self,
        deployment_name: str,
        app_name: str = "default",
        *,
        method_name: str = "__call__",
        stream: bool = False,
        multiplexed_model_id: str = "",
    ) -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._method = method_name
        self._stream = stream
        self._model_id = multiplexed_model_id

    def options(
        self,
        *,
        method_name: str | None = None,
        stream: bool | None = None,
        multiplexed_model_id: str | None = None,
        **_ignored: Any,
    ) -> DeploymentHandle:
        """A copy calling another method, streaming (``stream=True``), or naming the
        multiplexed model of its calls (``multiplexed_model_id``)."""
        if multiplexed_model_id is not None and not isinstance(multiplexed_model_id, str):
            raise TypeError(f"multiplexed_model_id must be a str, got {multiplexed_model_id!r}")
        return DeploymentHandle(
            self.deployment_name,
            self.app_name,
            method_name=self._method if method_name is None else method_name,
            stream=self._stream if stream is None else stream,
            multiplexed_model_id=(
                self._model_id if multiplexed_model_id is None else multiplexed_model_id
            ),
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Send the call; returns a DeploymentResponse (or a generator with stream=True)."""
        request_id = os.urandom(8).hex()
        meta = (request_id, self._method, self._stream, self._model_id)
        resp: DeploymentResponse
        if self._stream:
            resp = DeploymentResponseGenerator(request_id)
        else:
            resp = DeploymentResponse(request_id)
        loop = _client.running_loop()
        coro = _call(resp, self.app_name, self.deployment_name, meta, args, kwargs)
        if loop is not None:
            resp._loop = loop
            resp._task = loop.create_task(coro)
        else:
            loop = _client.background_loop()
            resp._loop = loop
            resp._cfuture = asyncio.run_coroutine_threadsafe(coro, loop)
        parent = current_request.get()
        if parent is not None:
            parent.children.append(resp)
        return resp

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.deployment_name, self.app_name, self._method, self._stream, self._model_id),
        )

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment={self.deployment_name!r}, app={self.app_name!r})"


def _rebuild(
    deployment: str, app: str, method: str, stream: bool, model_id: str = ""
) -> DeploymentHandle:
    return DeploymentHandle(
        deployment, app, method_name=method, stream=stream, multiplexed_model_id=model_id
    )


async def _resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Replace responses among the arguments with the object refs of their results."""
    if any(isinstance(a, DeploymentResponse) for a in args):
        args = tuple([await a._to_object_ref() if isinstance(a, DeploymentResponse) else a
                      for a in args])  # fmt: skip
    if any(isinstance(v, DeploymentResponse) for v in kwargs.values()):
        kwargs = {
            k: await v._to_object_ref() if isinstance(v, DeploymentResponse) else v
            for k, v in kwargs.items()
        }
    return args, kwargs


async def _call(  # noqa: PLR0917 - one call's parts, passed straight through
    resp: DeploymentResponse,
    app: str,
    deployment: str,
    meta: tuple[str, str, bool, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    router = get_router(app, deployment, asyncio.get_running_loop())
    try:
        args, kwargs = await _resolve(args, kwargs)
    except BaseException as exc:
        resp._assigned.set_exception(exc)
        raise
    retries = Retries()
    refused = False
    while True:
        try:
            model_id = meta[3]
            if refused:
                slot = await router.assign(refused=True, model_id=model_id)
            else:
                slot = router.try_assign(model_id) or await router.assign(model_id=model_id)
            if model_id:
                router.note_model(model_id, slot)
        except BaseException as exc:
            if not resp._assigned.done():
                resp._assigned.set_exception(exc)
            raise
        try:
            ref = slot.handle.handle_request.remote(*meta, *args, **kwargs)
        except BaseException as exc:
            router.release(slot)
            if not resp._assigned.done():
                resp._assigned.set_exception(exc)
            raise
        resp._slot = slot
        if not resp._assigned.done():
            resp._assigned.set_result(ref)
        try:
            return await _finish(router, slot, ref)
        except ReplicaFullError:
            refused = True  # other callers fill that replica; it did not run this
            continue
        except Exception as exc:
            # Sent again only when it surely did not start (a handle call may not be
            # idempotent, so one that may have run on a replica that died is not).
            if not retries.again(exc):
                raise


async def _finish(router: Router, slot: ReplicaSlot, ref: Any) -> Any:
    ran = True
    try:
        return await ref
    except ReplicaFullError:
        ran = False  # the slot is marked full as it is released
        raise
    except Exception as exc:
        if is_replica_gone(exc) or is_retryable(exc):
            router.replica_failed(slot, exc)
        raise
    finally:
        router.release(slot, ran=ran)


class DeploymentResponse:
    """The future result of a handle call: ``await resp`` or ``resp.result(timeout_s=None)``.

    Pass it unawaited into another handle call to chain deployments; ``resp.cancel()``
    cancels the request on its replica.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cfuture: concurrent.futures.Future[Any] | None = None
        self._assigned: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._slot: ReplicaSlot | None = None
        self._cancelled = False

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        if self._task is not None:
            if _client.running_loop() is self._loop:
                return await self._task
            assert self._loop is not None
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(_await_task(self._task), self._loop)
            )
        assert self._cfuture is not None
        return await asyncio.wrap_future(self._cfuture)

    def result(self, *, timeout_s: float | None = None) -> Any:
        """Block until the result is in (from sync code; use ``await`` on an event loop)."""
        if self._cfuture is not None:
            try:
                return self._cfuture.result(timeout_s)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"no result within {timeout_s} s") from None
        if _client.running_loop() is not None:
            raise RuntimeError(
                "DeploymentResponse.result() blocks, and it was called on an event loop: "
                "use `await response` instead"
            )
        assert self._task is not None and self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(_await_task(self._task), self._loop)
        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no result within {timeout_s} s") from None

    async def _to_object_ref(self) -> runtime.ObjectRef[Any]:
        """The object ref of the result, once the call has been sent to a replica."""
        return await asyncio.wrap_future(self._assigned)

    def cancel(self) -> None:
        """Cancel the request: on its replica if it got there, else before it is sent."""
        if self._cancelled:
            return
        self._cancelled = True
        slot = self._slot
        if slot is not None:
            ref = slot.handle.cancel_request.remote(self.request_id)
            del ref  # fire and forget: the replica cancels the request's task
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._task is not None:
            if _client.running_loop() is loop:
                self._task.cancel()
            else:
                loop.call_soon_threadsafe(self._task.cancel)
        elif self._cfuture is not None:
            self._cfuture.cancel()

    def __repr__(self) -> str:
        return f"DeploymentResponse({self.request_id})"


async def _await_task(task: asyncio.Future[Any]) -> Any:
    return await task


class DeploymentResponseGenerator(DeploymentResponse):
    """The items of a streamed call (``handle.options(stream=True)``): ``async for``/``for``."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    _stream: Any = None

    def _open(self) -> Any:
        if self._stream is None:
            slot = self._slot
            assert slot is not None
            self._stream = slot.handle.stream.options(num_returns="streaming").remote(
                self.request_id, False
            )
        return self._stream

    async def __anext__(self) -> Any:
        await self._wait()  # the stream is set up on its replica
        ref = await self._open().__anext__()  # StopAsyncIteration at its end
        return await ref

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if _client.running_loop() is not None:
            raise RuntimeError("iterate a streamed response with `async for` on an event loop")
        self.result()
        return runtime.get(next(self._open()))

    def cancel(self) -> None:
        """Stop the stream: its generator on the replica is closed."""
        if self._stream is not None and not self._cancelled:
            runtime.cancel(self._stream)
        super().cancel()
