"""Serve's user API: start, run, deploy, status, delete, shutdown, get_app_handle.

These are sync calls (as in Ray), made from a driver; they talk to the controller actor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

import runtime
from runtime.exceptions import ActorDiedError, ActorUnavailableError

from . import _client
from ._config import LoggingConfig
from ._controller import ServeController
from ._deployment import Application, build
from ._exceptions import DeploymentUnavailableError
from ._handle import DeploymentHandle
from ._router import close_routers
from .config import HTTPOptions, ProxyLocation, gRPCOptions

ControllerActor = runtime.remote(ServeController)

_READY_TIMEOUT_S = float(os.environ.get("RUNTIME_SERVE_DEPLOY_TIMEOUT_S", "120"))


@dataclasses.dataclass(frozen=True)
class DeploymentStatus:
    """A deployment's state: ``status`` (HEALTHY, UPDATING, DEPLOY_FAILED), replica counts."""

    name: str
    status: str
    replica_states: dict[str, int]
    target_replicas: int
    message: str = ""


@dataclasses.dataclass(frozen=True)
class ApplicationStatus:
    """An application's state: ``status`` (RUNNING, DEPLOYING, DEPLOY_FAILED, DELETING)."""

    name: str
    status: str
    route_prefix: str | None
    deployments: dict[str, DeploymentStatus]


@dataclasses.dataclass(frozen=True)
class ServeStatus:
    """What ``serve.status()`` returns: every application, and where HTTP listens."""

    applications: dict[str, ApplicationStatus]
    http_host: str | None = None
    http_port: int | None = None
    grpc_port: int | None = None  # None: no gRPC ingress


def _controller_or_none() -> Any:
    if not runtime.is_initialized():
        return None
    try:
        return _client.lookup_controller()
    except ValueError:
        return None


def start(
    proxy_location: ProxyLocation | str | dict[str, Any] | HTTPOptions | None = None,
    http_options: dict[str, Any] | HTTPOptions | None = None,
    grpc_options: dict[str, Any] | gRPCOptions | None = None,
    *,
    detached: bool = True,
    **_ignored: Any,
) -> None:
    """Start Serve on the cluster (the controller and the HTTP proxy), if it is not running.

    ``http_options`` (a dict or :class:`~runtime.serve.config.HTTPOptions`): ``host``
    (127.0.0.1), ``port`` (8000; 0 picks a free port, see ``serve.status().http_port``) and
    the ingress limits. ``proxy_location``: ``"HeadOnly"`` (one proxy, the default here) or
    ``"Disabled"`` (no HTTP; ``{"disabled": True}`` in ``http_options`` says the same).
    Starting again keeps the running instance (and its options).
    """
    del detached  # the controller is always detached, as in Ray 2.x
    if isinstance(proxy_location, dict | HTTPOptions) and http_options is None:
        proxy_location, http_options = None, proxy_location  # start(http_options) positionally
    disabled = isinstance(http_options, dict) and bool(http_options.get("disabled"))
    opts = HTTPOptions.parse(http_options)
    if isinstance(proxy_location, dict | HTTPOptions):
        raise TypeError("http_options were given twice (positionally and by keyword)")
    location = ProxyLocation.parse(proxy_location or opts.location)
    grpc = gRPCOptions.parse(grpc_options)
    options = dataclasses.asdict(opts)
    if grpc.grpc_servicer_functions:
        options["grpc"] = dataclasses.asdict(grpc)
    options["hide_exception_text"] = opts.hides_exceptions()
    options["disabled"] = disabled or location is ProxyLocation.Disabled
    options["proxy_location"] = location.value
    if not runtime.is_initialized():
        runtime.init()
    controller = _controller_or_none()
    if controller is None:
        try:
            controller = ControllerActor.options(
                name=_client.CONTROLLER_NAME,
                namespace=_client.NAMESPACE,
                lifetime="detached",
                max_restarts=-1,
                max_task_retries=-1,
                max_concurrency=100_000,
                get_if_exists=True,
            ).remote(os.urandom(8).hex(), options)
        except ValueError:
            controller = _client.lookup_controller()
        _client.set_controller(controller)
    runtime.get(controller.ping.remote(), timeout=60)
    # The running instance's options decide (a later start() or run() keeps them): with
    # HTTP disabled this answers None at once.
    runtime.get(controller.http_port.remote(), timeout=60)


def _controller() -> Any:
    controller = _controller_or_none()
    if controller is None:
        raise DeploymentUnavailableError("Serve is not running: call serve.run() or serve.start()")
    return controller


def _check_prefix(route_prefix: str | None) -> None:
    if route_prefix is None:
        return
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ValueError(
            f"route_prefix must be None or a string starting with '/': {route_prefix!r}"
        )
    if route_prefix != "/" and route_prefix.endswith("/"):
        raise ValueError(f"route_prefix must not end with '/': {route_prefix!r}")


def _deploy(
    app: Application, name: str, route_prefix: str | None, logging_config: Any = None
) -> tuple[Any, str]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"an application name must be a non-empty string: {name!r}")
    _check_prefix(route_prefix)
    ingress, specs = build(app, name, LoggingConfig.parse(logging_config))
    start()
    controller = _controller()
    version = runtime.get(
        controller.deploy_app.remote(name, route_prefix, ingress, specs), timeout=60
    )
    _wait_proxy(controller, version)
    return controller, ingress


def _wait_proxy(controller: Any, version: int) -> None:
    """Wait (bounded) until every HTTP proxy (one, or one per node) routes by the given
    route table version; none when HTTP is disabled."""
    proxies = runtime.get(controller.proxies.remote(), timeout=60)
    refs = [proxy.wait_routes.remote(version) for proxy in proxies.values()]
    for ref in refs:
        # A proxy whose node died is forgotten by the controller (none starts there again).
        with contextlib.suppress(ActorDiedError, ActorUnavailableError):
            runtime.get(ref, timeout=30)


def run(
    target: Application,
    *,
    name: str = "default",
    route_prefix: str | None = "/",
    blocking: bool = False,
    logging_config: LoggingConfig | dict[str, Any] | None = None,
    _timeout_s: float | None = None,
) -> DeploymentHandle:
    """Deploy an application and wait until it runs; returns its ingress handle.

    Deploying a name again converges to the new graph: changed deployments roll to the
    new code (new replicas first, then the old ones drain), dropped ones stop, unchanged
    ones keep their replicas. Raises ``RuntimeError`` if a deployment fails to start.
    ``blocking=True`` then waits until interrupted (Ctrl-C). ``logging_config``: for the
    deployments that have none of their own (see ``serve.schema.LoggingConfig``).
    """
    controller, ingress = _deploy(target, name, route_prefix, logging_config)
    _wait_running(controller, name, _READY_TIMEOUT_S if _timeout_s is None else _timeout_s)
    handle = DeploymentHandle(ingress, name)
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return handle


def deploy(
    target: Application,
    *,
    name: str = "default",
    route_prefix: str | None = "/",
    logging_config: LoggingConfig | dict[str, Any] | None = None,
) -> None:
    """Declare the application: the controller converges to it in the background.

    Returns once the controller holds the new desired state; ``serve.status()`` shows the
    progress. Same converge rules (and ``logging_config``) as ``serve.run``.
    """
    _deploy(target, name, route_prefix, logging_config)


def _wait_running(controller: Any, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        state = runtime.get(controller.status.remote(), timeout=60)["applications"].get(name)
        if state is None:
            raise DeploymentUnavailableError(f"application {name!r} disappeared while deploying")
        if state["status"] == "RUNNING":
            return
        if state["status"] == "DEPLOY_FAILED":
            messages = "; ".join(
                d["message"] for d in state["deployments"].values() if d["message"]
            )
            raise RuntimeError(f"application {name!r} failed to deploy: {messages}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"application {name!r} was not running after {timeout} s: {state}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def status() -> ServeStatus:
    """The state of every application and deployment (empty if Serve is not running)."""
    controller = _controller_or_none()
    if controller is None:
        return ServeStatus({})
    raw = runtime.get(controller.status.remote(), timeout=60)
    apps = {}
    for name, a in raw["applications"].items():
        deps = {
            d: DeploymentStatus(
                d, s["status"], s["replica_states"], s["target_replicas"], s["message"]
            )
            for d, s in a["deployments"].items()
        }
        apps[name] = ApplicationStatus(name, a["status"], a["route_prefix"], deps)
    http = raw["http"]
    return ServeStatus(apps, http["host"], http["port"], http.get("grpc_port"))


def delete(name: str, *, _blocking: bool = True) -> None:
    """Delete an application: its replicas drain and stop; its route goes at once."""
    controller = _controller()
    version = runtime.get(controller.delete_app.remote(name), timeout=60)
    if version is None:
        raise ValueError(f"there is no application named {name!r}")
    _wait_proxy(controller, version)
    if _blocking:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while name in runtime.get(controller.status.remote(), timeout=60)["applications"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"application {name!r} was not deleted in time")
            time.sleep(0.02)


def get_app_handle(name: str = "default") -> DeploymentHandle:
    """The handle of application ``name``'s ingress deployment."""
    controller = _controller()
    ingress = runtime.get(controller.get_ingress.remote(name), timeout=60)
    if ingress is None:
        raise DeploymentUnavailableError(f"there is no application named {name!r}")
    return DeploymentHandle(ingress, name)


def get_deployment_handle(deployment_name: str, app_name: str = "default") -> DeploymentHandle:
    """The handle of one deployment of an application."""
    raw = runtime.get(_controller().status.remote(), timeout=60)["applications"]
    if app_name not in raw or deployment_name not in raw[app_name]["deployments"]:
        raise DeploymentUnavailableError(
            f"there is no deployment {deployment_name!r} in application {app_name!r}"
        )
    return DeploymentHandle(deployment_name, app_name)


def shutdown() -> None:
    """Stop every application, the proxy and the controller (waits, bounded)."""
    controller = _controller_or_none()
    close_routers()
    if controller is not None:
        try:
            runtime.get(controller.shutdown.remote(), timeout=120)
        finally:
            runtime.kill(controller)
    _client.forget_controller()
