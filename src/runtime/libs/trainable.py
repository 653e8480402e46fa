"""The trainable-factory interface: how a Train trainer or an RLlib algorithm becomes a Tune trial.

Tune runs three kinds of trainables: a function ``fn(config)``, a class with the
:class:`StepTrainable` shape (``cls(config)``, ``step() -> dict``, ``save_checkpoint(dir)``,
``load_checkpoint(checkpoint)``, ``cleanup()``), and any object that is a
:class:`TrainableFactory`: its ``as_trainable()`` returns one of the first two. A library
plugs in by making its trainer a factory, or by registering a name (``tune.run("PPO")``)
with :func:`register_trainable`; neither side imports the other.

Inside a trial, a function trainable that drives another library (a Train trainer fitting
inside a Tune trial) forwards its reports with :func:`report_to_tuner`, which reaches the
running Tune trial through a per-thread hook Tune installs (:func:`set_reporter`), and
finds the resources Tune reserved for it with :func:`current_placement_group`.

Example (what a trainer does to be tunable)::

    class MyTrainer:
        def as_trainable(self):
            def run(config):
                for step in range(10):
                    report_to_tuner({"loss": 1.0 / (step + 1)})
            return run
"""

from __future__ import annotations

import contextvars
import importlib
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "StepTrainable",
    "TrainableFactory",
    "current_placement_group",
    "register_trainable",
    "registered_trainables",
    "report_to_tuner",
    "reset_placement_group",
    "reset_reporter",
    "resolve_trainable",
    "set_placement_group",
    "set_reporter",
]


@runtime_checkable
class StepTrainable(Protocol):
    """The shape of a class trainable (Tune's ``Trainable`` has it)."""

    def step(self) -> dict[str, Any]: ...

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None: ...

    def load_checkpoint(self, checkpoint: Any) -> None: ...

    def cleanup(self) -> None: ...


@runtime_checkable
class TrainableFactory(Protocol):
    """Something that can become a Tune trainable (a Train trainer, an RLlib config)."""

    def as_trainable(self) -> Callable[..., Any] | type:
        """A function trainable ``fn(config)`` or a :class:`StepTrainable` class."""
        ...


Reporter = Callable[[dict[str, Any], str | None], None]

_registry: dict[str, Any] = {
    # Names a Ray user passes to tune.run; resolved lazily so nothing heavy is imported.
    "PPO": "runtime.rllib:PPO",
    "DQN": "runtime.rllib:DQN",
    "SAC": "runtime.rllib.sac:SAC",
    "APPO": "runtime.rllib.appo:APPO",
    "IMPALA": "runtime.rllib.appo:IMPALA",
    "BC": "runtime.rllib.marwil:BC",
    "MARWIL": "runtime.rllib.marwil:MARWIL",
    "CQL": "runtime.rllib.cql:CQL",
}
_lock = threading.Lock()
_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "runtime_tune_reporter", default=None
)
_placement_group: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "runtime_tune_placement_group", default=None
)


def register_trainable(name: str, target: Any) -> None:
    """Register ``target`` (a trainable, a factory, or a ``"module:attr"`` path) as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError("a trainable name must be a non-empty string")
    with _lock:
        _registry[name] = target


def registered_trainables() -> list[str]:
    """The names :func:`resolve_trainable` knows."""
    with _lock:
        return sorted(_registry)


def resolve_trainable(name: str) -> Any:
    """The trainable (or factory) registered as ``name``; imports ``"module:attr"`` lazily.

    Raises:
        ValueError: the name is not registered, or its module cannot be imported.
    """
    with _lock:
        target = _registry.get(name)
    if target is None:
        known = ", ".join(registered_trainables())
        raise ValueError(f"no trainable registered as {name!r}; registered: {known}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"trainable {name!r} is registered as {module}:{attr}, which cannot be "
                f"loaded ({exc}); is that library installed?"
            ) from exc
    return target


def set_reporter(reporter: Reporter) -> contextvars.Token[Reporter | None]:
    """Install the hook :func:`report_to_tuner` calls in this thread (Tune does this)."""
    return _reporter.set(reporter)


def reset_reporter(token: contextvars.Token[Reporter | None]) -> None:
    """Undo :func:`set_reporter`."""
    _reporter.reset(token)


def report_to_tuner(metrics: dict[str, Any], checkpoint_dir: str | None = None) -> bool:
    """Forward one result to the Tune trial running this thread, if any.

    Returns False (and does nothing) outside a Tune trial, so a trainer may always call it.
    """
    reporter = _reporter.get()
    if reporter is None:
        return False
    reporter(metrics, checkpoint_dir)
    return True


def set_placement_group(pg: Any) -> contextvars.Token[Any]:
    """Install the placement group reserved for the trial running in this thread (Tune)."""
    return _placement_group.set(pg)


def reset_placement_group(token: contextvars.Token[Any]) -> None:
    """Undo :func:`set_placement_group`."""
    _placement_group.reset(token)


def current_placement_group() -> Any:
    """The placement group Tune reserved for the trial running in this thread, or None.

    A trainer that starts workers (a Train trainer inside a Tune trial) places them in this
    group's bundles 1..n (bundle 0 holds the trial itself) instead of reserving its own
    resources, so a tuned trainer never asks for resources twice.
    """
    return _placement_group.get()
