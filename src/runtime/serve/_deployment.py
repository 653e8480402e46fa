"""Declaring deployments and binding them into applications.

``@serve.deployment`` turns a class or function into a :class:`Deployment`; ``.bind(...)``
makes an :class:`Application`, a node of a graph whose edges are bound deployments passed as
arguments. :func:`build` flattens the graph into :class:`DeploymentSpec` s, the pickled form
the controller stores and the replicas load; each bound deployment among the arguments
becomes a ``DeploymentHandle`` to that deployment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import cloudpickle

from ._config import CONFIG_OPTIONS, AutoscalingConfig, DeploymentConfig

T = TypeVar("T")


class Deployment(Generic[T]):
    """A class or function that Serve runs as replicas; ``.bind(*args)`` makes an app."""

    def __init__(self, func_or_class: Any, name: str, config: DeploymentConfig) -> None:
        self.func_or_class = func_or_class
        self.name = name
        self.config = config
        self.__doc__ = getattr(func_or_class, "__doc__", None)

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        """An application with this deployment as its ingress, built with these arguments.

        Bound deployments among the arguments (at any depth in lists, tuples and dicts)
        reach the constructor as ``DeploymentHandle`` s.
        """
        return Application(self, args, kwargs)

    def options(self, **options: Any) -> Deployment[T]:
        """A copy with other options (any ``@serve.deployment`` keyword, and ``name``)."""
        name = options.pop("name", self.name)
        return Deployment(self.func_or_class, _check_name(name), _make_config(self.config, options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"deployment {self.name!r} cannot be called directly: use "
            f"serve.run({self.name}.bind(...)) and call the handle it returns"
        )

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r})"


class Application:
    """A bound deployment: the ingress of an application graph (``Deployment.bind``)."""

    def __init__(self, deployment: Deployment[Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.deployment = deployment
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"Application({self.deployment.name})"


@dataclasses.dataclass
class DeploymentSpec:
    """A deployment as stored by the controller: code and arguments pickled, config plain."""

    name: str
    blob: bytes  # cloudpickle of (func_or_class, init_args, init_kwargs)
    config: DeploymentConfig
    code_version: str  # changes when the code, the arguments or the actor options change
    is_function: bool


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "#" in name or "/" in name:
        raise ValueError(
            f"a deployment name must be a non-empty string without '#' or '/': {name!r}"
        )
    return name


def _make_config(base: DeploymentConfig, options: dict[str, Any]) -> DeploymentConfig:
    unknown = set(options) - CONFIG_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown deployment options {sorted(unknown)}; known: {sorted(CONFIG_OPTIONS)}"
        )
    if "ray_actor_options" in options and options["ray_actor_options"] is None:
        options["ray_actor_options"] = {}
    return base.replace(**options)


@overload
def deployment(func_or_class: type[T], /) -> Deployment[T]: ...
@overload
def deployment(func_or_class: Callable[..., Any], /) -> Deployment[Any]: ...
@overload
def deployment(
    func_or_class: None = None, /, *, name: str | None = None, **options: Any
) -> Callable[[Any], Deployment[Any]]: ...
def deployment(func_or_class: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Declare a deployment: ``@serve.deployment`` or ``@serve.deployment(num_replicas=2, ...)``.

    Options: ``num_replicas`` (an int, or ``"auto"``), ``max_ongoing_requests`` (5),
    ``max_queued_requests`` (1000; -1 for no bound), ``autoscaling_config``,
    ``ray_actor_options``, ``user_config``, ``health_check_period_s`` (10),
    ``health_check_timeout_s`` (30), ``graceful_shutdown_timeout_s`` (20),
    ``graceful_shutdown_wait_loop_s`` (0.2). A bad option raises here.

    Example::

        @serve.deployment(num_replicas=2)
        class Echo:
            async def __call__(self, request: serve.Request):
                return {"path": request.path}

        serve.run(Echo.bind())
    """
    if "autoscaling_config" in options:
        options["autoscaling_config"] = AutoscalingConfig.parse(options["autoscaling_config"])
    config = _make_config(DeploymentConfig(), dict(options))

    def wrap(target: Any) -> Deployment[Any]:
        if not (inspect.isclass(target) or callable(target)):
            raise TypeError(f"@serve.deployment takes a class or a function, got {target!r}")
        return Deployment(target, _check_name(name or target.__name__), config)

    if func_or_class is not None:
        return wrap(func_or_class)
    return wrap


def _source_hash(target: Any) -> bytes:
    try:
        return inspect.getsource(target).encode()
    except (OSError, TypeError):
        return b""


def build(
    app: Application, app_name: str, logging_config: Any = None
) -> tuple[str, list[DeploymentSpec]]:
    """Flatten an application graph: (the ingress deployment's name, every deployment).

    ``logging_config``: the application's, for the deployments that have none of their own.
    """
    from ._handle import DeploymentHandle

    if not isinstance(app, Application):
        raise TypeError(
            f"expected an application (a bound deployment: MyDeployment.bind(...)), got {app!r}"
        )
    specs: dict[str, DeploymentSpec] = {}
    seen: dict[int, str] = {}

    def visit(node: Application) -> str:
        if id(node) in seen:
            return seen[id(node)]
        dep = node.deployment
        if logging_config is not None and dep.config.logging_config is None:
            dep = dep.options(logging_config=logging_config)
        name = dep.name
        n = 1
        while name in specs:
            name = f"{dep.name}_{n}"
            n += 1
        specs[name] = None  # type: ignore[assignment]  # reserve the name while recursing
        seen[id(node)] = name

        def convert(value: Any) -> Any:
            if isinstance(value, Application):
                return DeploymentHandle(visit(value), app_name)
            if isinstance(value, Deployment):
                raise TypeError(
                    f"deployment {value.name!r} was passed unbound: pass {value.name}.bind(...)"
                )
            if isinstance(value, list):
                return [convert(v) for v in value]
            if isinstance(value, tuple):
                return tuple(convert(v) for v in value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        args = convert(node.args)
        kwargs = convert(node.kwargs)
        blob = cloudpickle.dumps((dep.func_or_class, args, kwargs))
        c = dep.config
        if c.version is not None:  # the user says when the code changes
            digest = hashlib.sha256(b"version:" + c.version.encode())
        else:
            digest = hashlib.sha256(blob)
            digest.update(_source_hash(dep.func_or_class))
        # What the replica actors are made with: a change replaces them.
        digest.update(repr(sorted(c.ray_actor_options.items())).encode())
        digest.update(repr((c.placement_group_bundles, c.placement_group_strategy)).encode())
        digest.update(repr(c.logging_config).encode())
        specs[name] = DeploymentSpec(
            name, blob, c, digest.hexdigest()[:16], not inspect.isclass(dep.func_or_class)
        )
        return name

    ingress = visit(app)
    return ingress, list(specs.values())
