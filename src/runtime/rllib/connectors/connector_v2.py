"""ConnectorV2: a step of an env runner's env-to-module or module-to-env pipeline.

Ray's new stack runs observations through an *env-to-module* pipeline before the module
acts, and the module's actions through a *module-to-env* pipeline before the env steps;
configure them with ``config.env_runners(env_to_module_connector=lambda env: ...,
module_to_env_connector=lambda env: ...)`` (a connector or a list of them), as in Ray.

The interface here is this runtime's own (simpler than Ray's episode-based one): an
env-to-module connector maps a batch of observations ``[num_envs, ...]`` to what the module
sees, told which of them start an episode; a module-to-env connector maps a batch of
actions. The batches the learner trains on hold the transformed observations, so no learner
connector is needed (Ray's frame stacking needs a learner-side twin). A connector with
running statistics (``MeanStdFilter``) keeps them in the driver: runners send what they saw
in each round (``pop_delta``), the driver merges it (``merge_delta``) and sends the merged
state back with the next weights (``get_state``/``set_state``), as Ray syncs filter states.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ConnectorV2"]


class ConnectorV2:
    """Base class: every method leaves things as they are until a subclass overrides it."""

    def recompute_output_observation_space(self, observation_space: Any) -> Any:
        """The observation space after this connector (what the module is built for)."""
        return observation_space

    def transform_observations(self, obs: Any, starts: np.ndarray, *, update: bool = True) -> Any:
        """Env-to-module: the module's view of a batch of observations.

        ``starts[i]``: ``obs[i]`` is the first observation of an episode. ``update=False``
        peeks (a next observation for the learner's batch): no state moves.
        """
        return obs

    def transform_actions(self, actions: np.ndarray) -> np.ndarray:
        """Module-to-env: the env's actions from the module's (the batch keeps the module's)."""
        return actions

    def get_state(self) -> dict[str, Any]:
        """The state the driver broadcasts to the runners."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        del state

    def pop_delta(self) -> Any:
        """What this runner saw since the last pop (None: nothing to merge)."""
        return None

    def merge_delta(self, delta: Any) -> None:
        """Driver side: fold a runner's ``pop_delta`` into the state."""
        del delta


def build_pipeline(factory: Any, env: Any) -> list[ConnectorV2]:
    """The connectors ``factory(env)`` gives (one, a list, or none for ``factory=None``)."""
    if factory is None:
        return []
    made = factory(env)
    pipeline = list(made) if isinstance(made, list | tuple) else [made]
    for connector in pipeline:
        if not isinstance(connector, ConnectorV2):
            raise TypeError(
                f"a connector factory must return ConnectorV2 instances, got {connector!r}"
            )
    return pipeline


def check_connector_factory(name: str, factory: Any) -> None:
    if factory is not None and not callable(factory):
        raise TypeError(f"{name} must be a callable env -> connector(s), got {factory!r}")


def flatten_wrapped(creator: Any) -> Any:
    """``creator`` with every env it makes wrapped in gymnasium's ``FlattenObservation``."""
    return _FlattenedCreator(creator)


class _FlattenedCreator:
    def __init__(self, creator: Any):
        self.creator = creator

    def __call__(self, env_config: dict[str, Any]) -> Any:
        from gymnasium.wrappers import FlattenObservation

        return FlattenObservation(self.creator(env_config))
