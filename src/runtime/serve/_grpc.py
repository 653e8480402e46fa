"""The gRPC ingress: a ``grpc.aio`` server inside each proxy, next to its HTTP server.

``serve.start(grpc_options=gRPCOptions(port=9000, grpc_servicer_functions=[
"my_pb2_grpc.add_GreeterServicer_to_server"]))`` registers the services whose
``add_*_to_server`` functions are named; each RPC goes to the ingress deployment of the
application named by the ``application`` metadata key (or the only application), as a call
of the deployment's method of the RPC's name with the request message; the method returns
the response message. It goes through the same routers as handle calls (admission per
replica, retries of requests that did not run, multiplexing with the
``multiplexed_model_id`` metadata key). Unary RPCs only. grpcio is the user's dependency
(as in Ray), imported only when gRPC is configured.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from . import _client
from ._exceptions import BackPressureError, DeploymentUnavailableError
from ._handle import DeploymentHandle

log = logging.getLogger(__name__)


class _Servicer:
    """Answers every RPC name the ``add_*_to_server`` functions ask for with a router."""

    def __init__(self, ingress: GrpcIngress) -> None:
        self._ingress = ingress

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        ingress = self._ingress

        async def rpc(request: Any, context: Any) -> Any:
            return await ingress.call(method, request, context)

        return rpc


class GrpcIngress:
    def __init__(self, host: str, port: int, servicer_functions: list[str], hide: bool) -> None:
        self.host = host
        self.port = port
        self.functions = list(servicer_functions)
        self.hide = hide
        self.server: Any = None
        self.bound: int | None = None
        self._ingress: dict[str, str] = {}

    async def start(self, reuse_port: bool) -> int:
        grpc = _grpc()

        options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
        server = grpc.aio.server(options=options)
        servicer = _Servicer(self)
        for path in self.functions:
            module, _, name = path.rpartition(".")
            if not module:
                raise ValueError(f"a gRPC servicer function is 'module.function', got {path!r}")
            getattr(importlib.import_module(module), name)(servicer, server)
        self.bound = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self.server = server
        log.info("serve: gRPC proxy listening on %s:%s", self.host, self.bound)
        return self.bound

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)

    async def _app(self, context: Any) -> tuple[str, str]:
        md = {k: v for k, v in context.invocation_metadata() or ()}
        controller = await _client.controller_async()
        app = md.get("application")
        if not app:
            names = await controller.app_names.remote()
            if len(names) != 1:
                raise DeploymentUnavailableError(
                    f"name the application in the 'application' metadata (apps: {names})"
                )
            app = names[0]
        ingress = self._ingress.get(app)
        if ingress is None:
            ingress = await controller.get_ingress.remote(app)
            if ingress is None:
                raise DeploymentUnavailableError(f"no application named {app!r}")
            self._ingress[app] = ingress
        return app, ingress

    async def call(self, method: str, request: Any, context: Any) -> Any:
        grpc = _grpc()

        try:
            app, ingress = await self._app(context)
        except DeploymentUnavailableError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        md = {k: v for k, v in context.invocation_metadata() or ()}
        handle = DeploymentHandle(
            ingress,
            app,
            method_name=method,
            multiplexed_model_id=md.get("multiplexed_model_id", ""),
        )
        resp = handle.remote(request)
        try:
            return await resp
        except BaseException as exc:
            if not isinstance(exc, Exception):  # the client went away: cancel its request
                resp.cancel()
                raise
            if isinstance(exc, BackPressureError | DeploymentUnavailableError):
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            self._ingress.pop(app, None)  # the app may have changed: look it up again
            log.warning("serve gRPC: %s failed: %r", method, exc)
            detail = "the deployment failed; its log has the details" if self.hide else str(exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {detail}")
            raise  # unreachable: abort raises


def _grpc() -> Any:
    """grpcio, imported when a proxy serves gRPC (a clear error when it is missing)."""
    try:
        return importlib.import_module("grpc")
    except ImportError as exc:
        raise ImportError(
            "serve's gRPC ingress needs grpcio: pip install grpcio (or runtime[serve])"
        ) from exc
