"""runtime.serve: deployments of replica actors behind a fast aiohttp ingress.

Example::

    from runtime import serve

    @serve.deployment(num_replicas=2)
    class Hello:
        async def __call__(self, request: serve.Request):
            return {"hello": request.query_params.get("name", "world")}

    handle = serve.run(Hello.bind())          # HTTP on 127.0.0.1:8000, route "/"
    print(handle.remote(...).result())        # or call it from Python

See docs/serve.md for the whole guide.
"""

from ._api import (
    ApplicationStatus,
    DeploymentStatus,
    ServeStatus,
    delete,
    deploy,
    get_app_handle,
    get_deployment_handle,
    run,
    shutdown,
    start,
    status,
)
from ._asgi import ingress
from ._batching import batch
from ._config import AutoscalingConfig, DeploymentConfig
from ._context import ReplicaContext, get_replica_context
from ._deployment import Application, Deployment, deployment
from ._exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    HTTPException,
    RequestCancelledError,
    ServeError,
)
from ._handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from ._http import Request, Response, StreamingResponse
from ._multiplex import get_multiplexed_model_id, multiplexed
from .config import HTTPOptions, ProxyLocation, gRPCOptions

__all__ = [
    "Application",
    "ApplicationStatus",
    "AutoscalingConfig",
    "BackPressureError",
    "Deployment",
    "DeploymentConfig",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "DeploymentStatus",
    "DeploymentUnavailableError",
    "HTTPException",
    "HTTPOptions",
    "ProxyLocation",
    "ReplicaContext",
    "Request",
    "RequestCancelledError",
    "Response",
    "ServeError",
    "ServeStatus",
    "StreamingResponse",
    "batch",
    "delete",
    "deploy",
    "deployment",
    "gRPCOptions",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "multiplexed",
    "run",
    "shutdown",
    "start",
    "status",
]
