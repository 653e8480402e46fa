"""``@serve.ingress(fastapi_app)``: a FastAPI (or any ASGI) app as a deployment's HTTP face.

The decorated class gets a ``__call__`` that runs the ASGI app on the request, inside the
replica, and returns its answer; routes declared on the class's own methods
(``@app.get("/x") def x(self): ...``) are bound to the replica's instance, as in Ray
Serve. The app sees the route prefix as its ``root_path``. fastapi is an optional
dependency: it is imported by the user's code, never by Serve.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import cloudpickle

from ._http import Request, Response, StreamingResponse


def ingress(asgi_app: Any) -> Callable[[type], type]:
    """Serve ``asgi_app`` (e.g. a FastAPI app) as the HTTP ingress of the decorated class.

    Example::

        app = FastAPI()

        @serve.deployment
        @serve.ingress(app)
        class Api:
            def __init__(self) -> None:
                self.count = 0

            @app.get("/count")
            def count(self) -> dict:
                self.count += 1
                return {"count": self.count}
    """
    if not callable(asgi_app):
        raise TypeError(f"serve.ingress takes an ASGI app (e.g. FastAPI()), got {asgi_app!r}")
    # An app object does not always survive pickling by value (FastAPI's does not), so a
    # replica imports it by its module-level name when it has one.
    where = _find_global(asgi_app, inspect.currentframe())
    by_value = _ByValue(asgi_app) if where is None else None

    def decorate(cls: type) -> type:
        if not inspect.isclass(cls):
            raise TypeError(f"@serve.ingress decorates a class, got {cls!r}")
        own = {v.__qualname__ for v in vars(cls).values() if inspect.isfunction(v)}

        def app_of(self: Any) -> Any:
            app = self.__dict__.get("_serve_asgi_app")
            if app is None:
                target = by_value.app if by_value is not None else None
                if where is not None:
                    target = getattr(importlib.import_module(where[0]), where[1])
                app = self._serve_asgi_app = _bind_routes(target, own, self)
            return app

        async def __call__(self: Any, request: Request) -> Response | StreamingResponse:
            return await _call_asgi(app_of(self), request)

        async def _serve_websocket(self: Any, scope: Any, receive: Any, send: Any) -> None:
            """A WebSocket connection (the replica's ``websocket`` runs it)."""
            await app_of(self)(scope, receive, send)

        namespace = {
            "__call__": __call__,
            "_serve_websocket": _serve_websocket,
            "__module__": cls.__module__,
            "__doc__": cls.__doc__,
        }
        return type(cls.__name__, (cls,), namespace)

    return decorate


class _ByValue:
    """An app pickled by value (one defined in ``__main__``), in a form that unpickles.

    Starlette's ``State`` answers every attribute lookup from its ``_state`` dict, so
    pickle's default rebuild of it recurses without end in the replica (RecursionError);
    it is sent as the class and a copy of that dict instead.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __reduce__(self) -> tuple[Any, ...]:
        buf = io.BytesIO()
        _AppPickler(buf).dump(self.app)
        return (_load_app, (buf.getvalue(),))


class _AppPickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls.__name__ == "State" and cls.__module__ == "starlette.datastructures":
            return cls, (dict(obj.__dict__.get("_state", {})),)
        return super().reducer_override(obj)


def _load_app(blob: bytes) -> _ByValue:
    return _ByValue(cloudpickle.loads(blob))


def _find_global(obj: Any, frame: Any) -> tuple[str, str] | None:
    """(module, name) under which the caller's module holds ``obj``, if importable."""
    caller = frame.f_back if frame is not None else None
    if caller is None:
        return None
    module = caller.f_globals.get("__name__")
    if not module or module == "__main__":
        return None
    for name, value in caller.f_globals.items():
        if value is obj:
            return module, name
    return None


def _bind_routes(app: Any, own: set[str], instance: Any) -> Any:
    """Rebuild the routes whose endpoints are the class's methods, bound to ``instance``."""
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", None)
    if routes is None:
        return app
    try:
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:  # a plain ASGI app: nothing to bind
        return app
    params = {
        kind: [p for p in inspect.signature(kind.__init__).parameters
               if p not in ("self", "path", "endpoint")]
        for kind in (APIRoute, APIWebSocketRoute)
    }  # fmt: skip
    for i, route in enumerate(routes):
        kind = type(route)
        if kind in params and getattr(route.endpoint, "__qualname__", "") in own:
            # The route's own function (its module's globals resolve string annotations),
            # bound to this replica's instance.
            bound = types.MethodType(route.endpoint, instance)
            kwargs = {p: getattr(route, p) for p in params[kind] if hasattr(route, p)}
            routes[i] = kind(route.path, bound, **kwargs)
    return app


async def _call_asgi(app: Any, request: Request) -> Response | StreamingResponse:
    body = await request.body()
    prefix = request.route_prefix if request.route_prefix != "/" else ""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": prefix,
        "query_string": request.query_string.encode(),
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers._items
        ],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    disconnected = asyncio.Event()
    messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            messages.put_nowait(None)  # the end

    task = asyncio.ensure_future(run())
    try:
        start = await messages.get()
        while start is not None and start["type"] != "http.response.start":
            start = await messages.get()
        if start is None:
            await task  # the app's own error, if it raised
            raise RuntimeError("the ASGI app ended without sending a response")
        status = int(start["status"])
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}
        headers.pop("content-length", None)  # the proxy sets it for the body it sends
        first = await messages.get()
        if first is None or not first.get("more_body", False):
            data = bytes(first.get("body", b"")) if first is not None else b""
            await task
            return Response(data, status=status, headers=headers)
    except BaseException:
        disconnected.set()
        task.cancel()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        """The body as the app sends it (a FastAPI StreamingResponse, chunk by chunk)."""
        msg: dict[str, Any] | None = first
        try:
            while msg is not None:
                if msg["type"] == "http.response.body":
                    data = bytes(msg.get("body", b""))
                    if data:
                        yield data
                    if not msg.get("more_body", False):
                        break
                msg = await messages.get()
            await task
        finally:
            disconnected.set()  # the client went away, or the body ended
            if not task.done():
                task.cancel()

    return StreamingResponse(chunks(), status=status, headers=headers)
