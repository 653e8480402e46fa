"""RLlibCallback: hooks into training, evaluation and the env runners' episodes (Ray's names).

Subclass it and override the hooks you need; pass the class with
``config.callbacks(MyCallbacks)`` (or a list of classes, called in order). Every hook takes
keyword arguments only, as in Ray's new API stack, and may ignore the ones it does not use
(``**kwargs``). Where each runs:

- in the driver: ``on_algorithm_init``, ``on_train_result`` (may edit ``result``),
  ``on_evaluate_start``, ``on_evaluate_end``, ``on_checkpoint_loaded``,
  ``on_env_runners_recreated``;
- in every env runner (an actor; its own instance of the class): ``on_environment_created``,
  ``on_episode_start``, ``on_episode_step``, ``on_episode_end``, ``on_sample_end``.

``metrics_logger.log_value(key, value, reduce="mean")`` in a runner hook puts the reduced
value in ``result["env_runners"][key]``; in a driver hook, in ``result[key]``.

Example::

    class EpisodeLength(RLlibCallback):
        def on_episode_end(self, *, episode, metrics_logger, **kwargs):
            metrics_logger.log_value("my_len", len(episode), reduce="max")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DefaultCallbacks", "RLlibCallback", "check_callbacks", "make_callbacks", "run_hooks"]

#: Hook names, in the driver and in the runners.
DRIVER_HOOKS = (
    "on_algorithm_init",
    "on_train_result",
    "on_evaluate_start",
    "on_evaluate_end",
    "on_checkpoint_loaded",
    "on_env_runners_recreated",
)
RUNNER_HOOKS = (
    "on_environment_created",
    "on_episode_created",
    "on_episode_start",
    "on_episode_step",
    "on_episode_end",
    "on_sample_end",
)


class RLlibCallback:
    """Base class of callbacks: every hook does nothing until a subclass overrides it."""

    def on_algorithm_init(
        self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any
    ) -> None:
        """The algorithm is built (runners started), before its first iteration."""

    def on_train_result(
        self, *, algorithm: Any, metrics_logger: Any = None, result: dict[str, Any], **kwargs: Any
    ) -> None:
        """An iteration ended; ``result`` is the dict ``train()`` returns (editable)."""

    def on_evaluate_start(
        self, *, algorithm: Any, metrics_logger: Any = None, **kwargs: Any
    ) -> None:
        """An evaluation is about to run."""

    def on_evaluate_end(
        self,
        *,
        algorithm: Any,
        metrics_logger: Any = None,
        evaluation_metrics: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        """An evaluation ran; ``evaluation_metrics`` is what ``evaluate()`` returns."""

    def on_checkpoint_loaded(self, *, algorithm: Any, **kwargs: Any) -> None:
        """``restore`` / ``from_checkpoint`` loaded a checkpoint into ``algorithm``."""

    def on_env_runners_recreated(
        self,
        *,
        algorithm: Any,
        env_runner_group: Any,
        env_runner_indices: list[int],
        is_evaluation: bool,
        **kwargs: Any,
    ) -> None:
        """Runners that failed were replaced by new actors (``env_runner_indices``, 1-based)."""

    def on_environment_created(
        self,
        *,
        env_runner: Any,
        metrics_logger: Any = None,
        env: Any,
        env_context: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        """A runner made its (vector) env; ``env_context`` is the ``env_config``."""

    def on_episode_created(
        self, *, episode: Any, env_runner: Any = None, env_index: int, **kwargs: Any
    ) -> None:
        """A new episode object exists (right before ``on_episode_start``)."""

    def on_episode_start(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """An episode started (its first observation is in ``episode``)."""

    def on_episode_step(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """An episode took a step (not called for the step that ends it)."""

    def on_episode_end(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        env: Any = None,
        env_index: int,
        rl_module: Any = None,
        **kwargs: Any,
    ) -> None:
        """An episode ended (terminated or truncated); ``episode`` holds all of it."""

    def on_sample_end(
        self,
        *,
        env_runner: Any = None,
        metrics_logger: Any = None,
        samples: list[Any],
        **kwargs: Any,
    ) -> None:
        """A runner's sampling round ended; ``samples`` are the episodes it finished in it."""


#: Ray's older name for the same base class.
DefaultCallbacks = RLlibCallback


class _FunctionCallbacks(RLlibCallback):
    """Callbacks given as functions per hook (``config.callbacks(on_train_result=fn)``)."""

    def __init__(self, functions: dict[str, Callable[..., Any] | list[Callable[..., Any]]]):
        self.functions = functions
        for name, fns in functions.items():
            setattr(self, name, _Calls(fns if isinstance(fns, list) else [fns]))


class _Calls:
    def __init__(self, fns: list[Callable[..., Any]]):
        self.fns = fns

    def __call__(self, **kwargs: Any) -> None:
        for fn in self.fns:
            fn(**kwargs)


def check_callbacks(classes: Any, functions: dict[str, Any]) -> None:
    """A ``TypeError`` unless ``classes`` is None, an ``RLlibCallback`` subclass or a list of them
    and ``functions`` maps hook names to callables (or lists of callables)."""
    listed = classes if isinstance(classes, list | tuple) else [] if classes is None else [classes]
    for cls in listed:
        if not (isinstance(cls, type) and issubclass(cls, RLlibCallback)):
            raise TypeError(f"callbacks_class must be an RLlibCallback subclass, got {cls!r}")
    for name, fns in functions.items():
        if name not in DRIVER_HOOKS + RUNNER_HOOKS:
            raise TypeError(f"{name!r} is not a callback hook")
        for fn in fns if isinstance(fns, list) else [fns]:
            if not callable(fn):
                raise TypeError(f"the {name} callback must be callable, got {fn!r}")


def make_callbacks(classes: Any, functions: dict[str, Any]) -> list[RLlibCallback]:
    """Instances of the configured callbacks, in order (the function hooks last)."""
    listed = classes if isinstance(classes, list | tuple) else [] if classes is None else [classes]
    out: list[RLlibCallback] = [cls() for cls in listed]
    if functions:
        out.append(_FunctionCallbacks(functions))
    return out


def run_hooks(callbacks: list[RLlibCallback], hook: str, **kwargs: Any) -> None:
    """Call ``hook`` on every callback, in order."""
    for callback in callbacks:
        getattr(callback, hook)(**kwargs)
