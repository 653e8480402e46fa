"""Wrapping a trainable: :func:`with_parameters` (large objects through the object store)
and :func:`with_resources` (what each trial reserves), as Ray's ``tune.with_*``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import runtime

from ._resources import PlacementGroupFactory, resource_request

#: The attribute a wrapped trainable carries its resource request in.
RESOURCES_ATTR = "_tune_resources"


def with_parameters(trainable: Any, **kwargs: Any) -> Any:
    """The trainable, called with extra keyword arguments that go through the object store.

    Each value is put once (``runtime.put``) when this is called, and every trial fetches
    it from the store instead of having it pickled into each trial's config. A function
    trainable is called as ``trainable(config, **kwargs)``; a class trainable's ``setup``
    as ``setup(config, **kwargs)``.

    Raises:
        TypeError: ``trainable`` is neither a function nor a class, or no values are given.

    Example::

        data = np.random.rand(100_000)

        def train(config, data):
            tune.report({"score": float(data.mean()) * config["x"]})

        tune.Tuner(tune.with_parameters(train, data=data), param_space={"x": 1}).fit()
    """
    if not kwargs:
        raise TypeError("with_parameters needs the values to pass, as keyword arguments")
    if not callable(trainable):
        raise TypeError(f"with_parameters takes a function or a Trainable class, got {trainable!r}")
    if not runtime.is_initialized():
        runtime.init()
    refs = {name: runtime.put(value) for name, value in kwargs.items()}

    def fetch() -> dict[str, Any]:
        values = runtime.get(list(refs.values()))
        return dict(zip(refs, values, strict=True))

    if inspect.isclass(trainable):
        base: type = trainable

        class WithParameters(base):  # type: ignore[misc, valid-type]
            def setup(self, config: dict[str, Any]) -> None:
                super().setup(config, **fetch())

        WithParameters.__name__ = base.__name__
        WithParameters.__qualname__ = base.__qualname__
        _copy_resources(trainable, WithParameters)
        return WithParameters

    @functools.wraps(trainable)
    def with_values(config: dict[str, Any]) -> Any:
        return trainable(config, **fetch())

    _copy_resources(trainable, with_values)
    return with_values


def with_resources(trainable: Any, resources: Mapping[str, float] | PlacementGroupFactory) -> Any:
    """The trainable, with what each of its trials reserves (``{"cpu": 2, "gpu": 1}`` or a
    :class:`PlacementGroupFactory`); ``resources_per_trial`` / ``Tuner(_resources=)``
    still win when given.

    Raises:
        TypeError: ``resources`` is a function of the config (Ray allows one; here a trial's
            request is fixed per experiment) or not a resource request.

    Example::

        tuner = tune.Tuner(tune.with_resources(train, {"cpu": 2}), param_space=space)
    """
    if callable(resources) and not isinstance(resources, PlacementGroupFactory):
        raise TypeError(
            "with_resources takes a dict or a PlacementGroupFactory; a function of the "
            "config is not supported here (every trial of an experiment reserves the same)"
        )
    request = resource_request(resources)
    if inspect.isclass(trainable):
        wrapped: Any = type(trainable.__name__, (trainable,), {RESOURCES_ATTR: request})
        wrapped.__qualname__ = trainable.__qualname__
        wrapped.__module__ = trainable.__module__
        return wrapped
    if not callable(trainable):
        raise TypeError(f"with_resources takes a function or a Trainable class, got {trainable!r}")

    @functools.wraps(trainable)
    def with_request(*args: Any, **kw: Any) -> Any:
        return trainable(*args, **kw)

    setattr(with_request, RESOURCES_ATTR, request)
    return with_request


def attached_resources(trainable: Any) -> PlacementGroupFactory | None:
    """The request :func:`with_resources` attached to ``trainable``, if any."""
    request = getattr(trainable, RESOURCES_ATTR, None)
    return request if isinstance(request, PlacementGroupFactory) else None


def _copy_resources(src: Callable[..., Any] | type, dst: Any) -> None:
    request = attached_resources(src)
    if request is not None:
        setattr(dst, RESOURCES_ATTR, request)
