"""Actor method options: the ``@runtime.method`` decorator, and Ray's per-call options of
``handle.method.options(...)`` that are accepted here without being acted on."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .options import num_returns_option

P = ParamSpec("P")
R = TypeVar("R")

#: Ray's per-call options of an actor method that are not acted on here, and what holds.
_CALL_OPTIONS_NOT_HERE = {
    "name": "calls are named by their method here",
    "enable_task_events": "every call is listed by the state API here",
    "concurrency_group": "a call runs in its method's group (@runtime.method(concurrency_group=))",
    "max_task_retries": "calls are retried as the actor's max_task_retries says",
    "retry_exceptions": "an actor call is not retried when its method raises here",
    "tensor_transport": "values travel through the object store here",
}
_warned_call_options: set[str] = set()


def check_call_options(method_name: str, ignored: dict[str, Any]) -> None:
    """Ray's per-call options not acted on here: a one-time warning each saying what holds
    instead; TypeError for a name Ray does not have either."""
    unknown = sorted(set(ignored) - set(_CALL_OPTIONS_NOT_HERE))
    if unknown:
        raise TypeError(f"actor method options got unknown option(s): {', '.join(unknown)}")
    for name in ignored:
        if name not in _warned_call_options:
            _warned_call_options.add(name)
            warnings.warn(
                f"{method_name}.options({name}=...) is accepted for Ray compatibility and "
                f"not acted on: {_CALL_OPTIONS_NOT_HERE[name]}",
                UserWarning,
                stacklevel=3,
            )


_warned_task_events: list[bool] = []


def method(
    *,
    num_returns: int | str = 1,
    concurrency_group: str | None = None,
    enable_task_events: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an actor method with call options (``num_returns``, ``"streaming"``,
    ``concurrency_group``). ``enable_task_events=False`` (Ray: keep the method's calls out of
    the task events) is accepted with a one-time warning: calls are always listed here."""
    n = num_returns_option(num_returns)
    if not enable_task_events and not _warned_task_events:
        _warned_task_events.append(True)
        warnings.warn(
            "runtime.method(enable_task_events=False) is accepted for Ray compatibility and "
            "has no effect here: every call is listed by the state API",
            UserWarning,
            stacklevel=2,
        )

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        fn.__runtime_num_returns__ = n  # type: ignore[attr-defined]
        if concurrency_group is not None:
            fn.__runtime_concurrency_group__ = concurrency_group  # type: ignore[attr-defined]
        return fn

    return wrap


__all__ = ["check_call_options", "method"]
