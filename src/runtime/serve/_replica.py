"""The replica actor: one instance of the user's class (or function) serving requests.

The controller creates it (a detached, named actor) and calls ``initialize``; routers call
``handle_request`` (handles) and ``handle_http`` (the ingress) directly, never through the
controller. Every request runs in a task of its own, registered by request id, so that
``cancel_request`` can stop it (and the handle calls it made). A streamed answer (a
generator) stays here; the caller reads it with one streaming call of ``stream`` (core's
``num_returns="streaming"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle

from . import _client, _gc, _http, _multiplex, _websocket
from ._context import ReplicaContext, RequestContext, current_replica, current_request
from ._exceptions import (
    HTTPException,
    ReplicaDrainingError,
    ReplicaFullError,
    RequestCancelledError,
)
from ._logging import ReplicaLogging

_END = object()
log = logging.getLogger(__name__)
#: The most a batch of HTTP requests waits for its slower ones after its first answer.
_BATCH_GRACE_S = 0.005
#: How long the answer of a late request of a batch waits to be fetched.
_LATE_KEEP_S = 60.0


class ServeReplica:
    """Hosts the user's object; every method here is a coroutine on the node's loop."""

    def __init__(  # noqa: PLR0917 - the controller passes them positionally
        self,
        app_name: str,
        deployment: str,
        replica_tag: str,
        blob: bytes,
        is_function: bool,
        max_ongoing: int = 0,
        logging_config: dict[str, Any] | None = None,
    ) -> None:
        self._ctx = ReplicaContext(app_name, deployment, replica_tag)
        self._logging_config = logging_config
        self._logging: ReplicaLogging | None = None
        #: ``max_ongoing_requests``, held here across every caller (0: no cap).
        self._max_ongoing = max_ongoing
        self._blob = blob
        self._is_function = is_function
        self._obj: Any = None
        self._ongoing = 0
        self._total = 0
        #: Request id -> the task running its user code (the actor call's own task).
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        #: Requests :meth:`cancel_request` cancelled, until their user code has stopped.
        self._cancelling: set[str] = set()
        self._contexts: dict[str, RequestContext] = {}
        self._streams: dict[str, AsyncIterator[Any] | Iterator[Any]] = {}
        self._sockets: dict[str, _websocket.Session] = {}
        #: Requests of a batch that were still running when the batch answered, until the
        #: proxy fetches their answers (``http_result``; dropped unfetched after a minute).
        self._late: dict[str, asyncio.Task[bytes]] = {}
        self._idle: asyncio.Event | None = None
        self._initialized = False
        self._draining = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def initialize(
        self, user_config: Any = None, has_user_config: bool = False
    ) -> dict[str, Any]:
        """Build the user's object (once), apply ``user_config``; returns pid and node."""
        if not self._initialized:
            if self._logging_config is not None and self._logging is None:
                self._logging = ReplicaLogging(self._logging_config, self._ctx)
            # On a thread: unpickling imports the user's modules, and a constructor may load
            # a model; neither may stall the node's loop.
            self._obj = await asyncio.to_thread(self._construct)
            self._ctx = ReplicaContext(
                self._ctx.app_name, self._ctx.deployment, self._ctx.replica_tag, self._obj
            )
            self._initialized = True
            _multiplex._listeners[self._ctx.replica_tag] = self._models_changed
            _gc.freeze()  # the user's modules and model are long-lived: see _gc
        if has_user_config:
            await self.reconfigure(user_config)
        return {
            "pid": os.getpid(),
            "replica_tag": self._ctx.replica_tag,
            "node_id": _client.node_id(),
        }

    def _construct(self) -> Any:
        target, args, kwargs = cloudpickle.loads(self._blob)
        if self._is_function:
            return target
        token = current_replica.set(self._ctx)
        try:
            return target(*args, **kwargs)
        finally:
            current_replica.reset(token)

    async def reconfigure(self, user_config: Any) -> None:
        """Apply a new ``user_config`` through the user's ``reconfigure`` (no restart)."""
        fn = getattr(self._obj, "reconfigure", None)
        if fn is None:
            raise TypeError(
                f"deployment {self._ctx.deployment!r} has a user_config but no reconfigure() method"
            )
        await self._call_user(fn, (user_config,), {})

    async def check_health(self) -> None:
        """Run the user's ``check_health`` if it has one (raising means unhealthy)."""
        fn = getattr(self._obj, "check_health", None)
        if fn is not None:
            await self._call_user(fn, (), {})

    async def set_max_ongoing(self, n: int) -> None:
        """A new ``max_ongoing_requests`` (the deployment's config changed in place)."""
        self._max_ongoing = n

    async def stats(self) -> tuple[int, int]:
        """(requests ongoing now, requests served in all): the autoscaler's input."""
        return self._ongoing, self._total

    async def drain(self) -> None:
        """Refuse new requests from now on (``ReplicaDrainingError``): they come from
        routers that have not yet heard that this replica is going, and go elsewhere.
        The controller waits for this before it calls a redeploy done, so that no request
        made after ``serve.run`` returned runs on the old code."""
        self._draining = True
        _multiplex._listeners.pop(self._ctx.replica_tag, None)

    async def prepare_for_shutdown(self, wait_loop_s: float, timeout_s: float) -> int:
        """Refuse new requests (:meth:`drain`) and wait (bounded) for the requests in
        flight to finish; returns how many remained."""
        await self.drain()
        await asyncio.sleep(wait_loop_s)  # requests routed before the routers heard of it
        deadline = time.monotonic() + timeout_s
        while self._ongoing > 0 and time.monotonic() < deadline:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._idle.wait()
            except TimeoutError:
                break
        fn = getattr(self._obj, "__del__", None)
        if fn is not None:
            with contextlib.suppress(Exception):  # a failing destructor must not stop shutdown
                await self._call_user(fn, (), {})
        if self._logging is not None:
            self._logging.close()
            self._logging = None
        return self._ongoing

    # --- requests -----------------------------------------------------------------------------

    async def handle_request(
        self,
        request_id: str,
        method: str,
        stream: bool,
        model_id: str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run ``method(*args, **kwargs)`` of the user's object for a handle call.

        With ``stream``, the result must be a generator; it stays here and this returns the
        request id to pull chunks with. (The call's parts travel as separate plain
        arguments, so that a call with plain arguments is sent as msgpack, not pickled.)
        """
        self._admit()
        fn = self._method(method)
        if model_id:
            self._contexts[request_id] = RequestContext(request_id, model_id=model_id)
        self._begin()
        ended = False
        try:
            result = await self._run(request_id, fn, args, kwargs)
            if _is_generator(result):
                if not stream:
                    _close(result)
                    raise TypeError(
                        f"{self._ctx.deployment}.{method} returned a generator: call it with "
                        "handle.options(stream=True)"
                    )
                self._streams[request_id] = result
                ended = True  # the stream ends the request when it is exhausted
                return request_id
            if stream:
                raise TypeError(
                    f"handle.options(stream=True) needs a generator, but "
                    f"{self._ctx.deployment}.{method} returned {type(result).__name__}"
                )
            return result
        finally:
            if not ended:
                self._end()
                self._contexts.pop(request_id, None)

    async def handle_http(  # noqa: PLR0917 - plain str/bytes arguments travel as msgpack
        self,
        request_id: str,
        method: str,
        path: str,
        query: str,
        headers: bytes,
        body: bytes,
        route_prefix: str,
        model_id: str = "",
    ) -> bytes:
        """Serve one HTTP request with the user's ``__call__``; returns the packed answer.

        ``headers``: the request's headers as the proxy packed them (decoded only if the
        deployment reads them); ``model_id``: the multiplexed model the request names.
        """
        request = _http.Request.from_wire(method, path, query, headers, body, route_prefix)
        if self._logging is None:
            return await self._handle_http(request_id, request, model_id)
        started = time.perf_counter()
        answer = await self._handle_http(request_id, request, model_id)
        self._logging.access(method, path, _http.unpack_answer(answer)[0], started, request_id)
        return answer

    async def handle_http_batch(self, requests: list[list[Any]]) -> list[Any]:
        """Serve several HTTP requests that one proxy sent together (each the arguments of
        :meth:`handle_http`), each in a task of its own; answers in the same order.

        An answer is the packed response, the exception :meth:`handle_http` raised (the
        replica refused it, or it was cancelled), or None for a request still running when
        the others were done: not to hold fast answers behind a slow one, the batch waits
        after its first answer only half as long as that answer took (at most 5 ms), and
        the proxy fetches a late answer with :meth:`http_result`.
        """
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self.handle_http(*args)) for args in requests]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                grace = min(0.5 * (time.monotonic() - started), _BATCH_GRACE_S)
                _, pending = await asyncio.wait(pending, timeout=grace)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        answers: list[Any] = []
        for args, task in zip(requests, tasks, strict=True):
            if task in pending:
                request_id = args[0]
                self._late[request_id] = task
                task.add_done_callback(self._forget_late(request_id))
                answers.append(None)
            elif task.cancelled():
                answers.append(RequestCancelledError(f"request {args[0]} was cancelled"))
            else:
                exc = task.exception()
                answers.append(exc if exc is not None else task.result())
        return answers

    def _forget_late(self, request_id: str) -> Any:
        def done(task: asyncio.Task[bytes]) -> None:
            def forget() -> None:
                if self._late.get(request_id) is task:
                    del self._late[request_id]
                    if not task.cancelled():
                        task.exception()  # retrieved: no "never retrieved" warning

            asyncio.get_running_loop().call_later(_LATE_KEEP_S, forget)

        return done

    async def http_result(self, request_id: str) -> bytes:
        """The answer of a batched request that was still running when its batch answered."""
        task = self._late.pop(request_id, None)
        if task is None:
            raise RequestCancelledError(f"request {request_id} has no answer here (any more)")
        return await task

    async def _handle_http(self, request_id: str, request: _http.Request, model_id: str) -> bytes:
        self._admit()
        self._begin()
        ended = False
        try:
            if model_id:
                self._contexts[request_id] = RequestContext(request_id, model_id=model_id)
            try:
                fn = self._method("__call__")
                args = (request,) if _takes_argument(fn) else ()
                result = await self._run(request_id, fn, args, {})
            except RequestCancelledError:
                raise
            except Exception as exc:
                return self._error_answer(exc)
            streamed = _http.as_streaming(result)
            if streamed is not None:
                self._streams[request_id] = streamed.content
                ended = True
                return _http.pack_answer(
                    streamed.status, list(streamed.headers.items()), b"", streaming=True
                )
            try:
                return _http.pack_answer(*_http.render(result))
            except TypeError as exc:
                return self._error_answer(exc)
        finally:
            if not ended:
                self._end()
                self._contexts.pop(request_id, None)

    async def websocket(
        self, request_id: str, path: str, query: str, headers: bytes, route_prefix: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Run a WebSocket connection through the deployment's ASGI app (``@serve.ingress``),
        called with core's ``num_returns="streaming"``: yields what the app sends (see
        :mod:`._websocket`); the client's messages come by ``websocket_receive``."""
        self._admit()
        self._begin()
        try:
            app = getattr(self._obj, "_serve_websocket", None) if self._initialized else None
            if app is None:
                yield {
                    "type": "websocket.close",
                    "code": 1003,
                    "reason": f"deployment {self._ctx.deployment!r} takes no WebSockets: serve "
                    "an ASGI app with @serve.ingress for them",
                }
                return
            request = _http.decode_request("GET", path, query, headers, b"", route_prefix)
            asgi_scope = _websocket.scope(path, query, request.headers._items, route_prefix)
            session = self._sockets[request_id] = _websocket.Session()
            ctx = self._ctx

            async def call(scope: dict[str, Any], receive: Any, send: Any) -> None:
                current_replica.set(ctx)  # this runs in a task of its own
                current_request.set(RequestContext(request_id))
                await app(scope, receive, send)

            async for message in _websocket.run(call, asgi_scope, session):
                yield message
        finally:
            self._sockets.pop(request_id, None)
            self._end()

    async def websocket_receive(self, request_id: str, message: dict[str, Any]) -> bool:
        """A client's message for its connection's app; False if the connection is gone."""
        session = self._sockets.get(request_id)
        return False if session is None else await session.deliver(message)

    async def next_chunk(self, request_id: str) -> tuple[bool, Any]:
        """The next item of a streamed answer: (True, item), or (False, None) at its end."""
        gen = self._streams.get(request_id)
        if gen is None:
            return False, None
        try:
            if isinstance(gen, AsyncIterator):
                item = await self._run(request_id, gen.__anext__, (), {}, sync=False)
            else:
                item = await self._run(request_id, next, (gen, _END), {}, sync=True)
                if item is _END:
                    raise StopAsyncIteration
        except StopAsyncIteration:
            self._finish_stream(request_id)
            return False, None
        except BaseException:
            self._finish_stream(request_id)
            raise
        return True, item

    async def stream(self, request_id: str, as_bytes: bool) -> AsyncIterator[Any]:
        """The items of a streamed answer, called with core's ``num_returns="streaming"``:
        one call for the whole stream, each item sent as it is produced (with backpressure).
        ``as_bytes``: items as the bytes of an HTTP body. Cancelling the call
        (``runtime.cancel``) closes the user's generator and cancels its handle calls."""
        finished = False
        try:
            while True:
                more, item = await self.next_chunk(request_id)
                if not more:
                    finished = True
                    return
                yield _http.chunk_bytes(item) if as_bytes else item
        finally:
            if not finished:
                await self.cancel_request(request_id)

    async def cancel_request(self, request_id: str) -> bool:
        """Cancel a request (and the handle calls it made); True if it was still running."""
        found = False
        task = self._tasks.get(request_id)
        if task is not None and not task.done() and request_id not in self._cancelling:
            self._cancelling.add(request_id)
            task.cancel()
            found = True
        gen = self._streams.get(request_id)
        if gen is not None:
            self._finish_stream(request_id)
            found = True
        ctx = self._contexts.pop(request_id, None)
        if ctx is not None:
            for child in ctx.children:
                child.cancel()
        return found

    # --- helpers ------------------------------------------------------------------------------

    def _method(self, name: str) -> Any:
        if not self._initialized:
            raise RuntimeError(f"replica {self._ctx.replica_tag} is not initialized yet")
        if self._is_function:
            if name != "__call__":
                raise AttributeError(
                    f"deployment {self._ctx.deployment!r} is a function: it has no method {name!r}"
                )
            return self._obj
        if name.startswith("_") and name != "__call__":
            raise AttributeError(
                f"method {name!r} of deployment {self._ctx.deployment!r} is private"
            )
        fn = getattr(self._obj, name, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"deployment {self._ctx.deployment!r} has no method {name!r}")
        return fn

    def _models_changed(self, ids: list[str]) -> None:
        """Report this replica's multiplexed models to the controller (routers prefer it)."""

        async def report() -> None:
            try:
                controller = await _client.controller_async()
                ctx = self._ctx
                await controller.record_models.remote(
                    ctx.app_name, ctx.deployment, ctx.replica_tag, ids
                )
            except Exception as exc:
                log.debug("serve replica: model report failed: %r", exc)

        task = asyncio.ensure_future(report())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def _error_answer(self, exc: Exception) -> bytes:
        """The HTTP answer to an exception of user code; logged here unless it is HTTP's own."""
        if isinstance(exc, HTTPException):
            return _http.pack_answer(*_http.render_error(exc))
        log.warning("serve replica %s: the request failed", self._ctx.replica_tag, exc_info=exc)
        return _http.pack_answer(*_http.render_error(exc), failed=True)

    def _admit(self) -> None:
        """Refuse a request this replica will not run now (the router sends it elsewhere)."""
        if self._draining:
            raise ReplicaDrainingError(f"replica {self._ctx.replica_tag} is shutting down")
        if 0 < self._max_ongoing <= self._ongoing:
            raise ReplicaFullError(
                f"replica {self._ctx.replica_tag} runs max_ongoing_requests="
                f"{self._max_ongoing} requests"
            )

    def _begin(self) -> None:
        self._ongoing += 1
        self._total += 1

    def _end(self) -> None:
        self._ongoing -= 1
        if self._ongoing == 0 and self._idle is not None:
            self._idle.set()

    def _finish_stream(self, request_id: str) -> None:
        gen = self._streams.pop(request_id, None)
        if gen is not None:
            _close(gen)
            self._end()

    async def _call_user(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], sync: bool | None = None
    ) -> Any:
        """Call user code: coroutines on the loop, plain functions on a thread (off the loop)."""
        token = current_replica.set(self._ctx)
        try:
            if sync is None:
                sync = _is_sync(fn)
            if not sync:
                result = fn(*args, **kwargs)
            else:
                ctx = contextvars.copy_context()
                result = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: ctx.run(fn, *args, **kwargs)
                )
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            current_replica.reset(token)

    async def _run(
        self,
        request_id: str,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sync: bool | None = None,
    ) -> Any:
        """Run user code in the call's own task (core runs each actor call in a task of its
        own), registered so that :meth:`cancel_request` can cancel it: that cancellation
        ends here as ``RequestCancelledError``, any other (``runtime.cancel``, shutdown)
        goes on as ``CancelledError``. (A task per request just for this cost about a
        quarter of a no-op request's time in the replica.)"""
        ctx = self._contexts.get(request_id)
        if ctx is None:
            ctx = self._contexts[request_id] = RequestContext(request_id)
        task = asyncio.current_task()
        assert task is not None
        self._tasks[request_id] = task
        token = current_request.set(ctx)
        try:
            return await self._call_user(fn, args, kwargs, sync)
        except asyncio.CancelledError:
            if request_id in self._cancelling and task.cancelling() == 1:
                task.uncancel()  # only cancel_request cancelled it: the call itself goes on
                raise RequestCancelledError(f"request {request_id} was cancelled") from None
            raise
        finally:
            current_request.reset(token)
            self._cancelling.discard(request_id)
            if self._tasks.get(request_id) is task:
                del self._tasks[request_id]
            if request_id not in self._streams:
                self._contexts.pop(request_id, None)


def _takes_argument(fn: Any) -> bool:
    """Whether ``fn`` takes the request (a zero-argument ``__call__`` is called without);
    known once per function (``inspect.signature`` costs more than a no-op request)."""
    key = getattr(fn, "__func__", fn)
    try:
        return _TAKES_ARGUMENT[key]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    takes = _inspect_takes_argument(fn)
    with contextlib.suppress(TypeError):
        _TAKES_ARGUMENT[key] = takes
    return takes


#: Function -> whether it takes the request (weakly keyed: a redeploy's code is freed).
_TAKES_ARGUMENT: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _inspect_takes_argument(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def _is_sync(fn: Any) -> bool:
    """Whether ``fn`` is a plain function (run on a thread), not a coroutine or async
    generator function; known once per function, as :func:`_takes_argument`."""
    key = getattr(fn, "__func__", fn)
    try:
        return _IS_SYNC[key]
    except (KeyError, TypeError):
        pass
    sync = not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))
    with contextlib.suppress(TypeError):
        _IS_SYNC[key] = sync
    return sync


_IS_SYNC: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _is_generator(value: Any) -> bool:
    return inspect.isasyncgen(value) or inspect.isgenerator(value)


def _close(gen: Any) -> None:
    if inspect.isgenerator(gen):
        gen.close()
    elif inspect.isasyncgen(gen):
        # aclose() is a coroutine; run it in the background so a generator's finally runs.
        task = asyncio.ensure_future(gen.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[Any]] = set()
