"""Environments: making them from an id, a registered name or a class, and checking their spaces.

An env runner steps a gymnasium ``SyncVectorEnv`` in same-step autoreset mode: when an
episode ends, ``step`` returns the first observation of the next one and keeps the last
observation of the finished one in ``infos["final_obs"]`` (needed to bootstrap a truncated
episode and for replay transitions).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["UnsupportedSpaceError", "register_env"]

_registry: dict[str, Callable[[dict[str, Any]], Any]] = {}
_lock = threading.Lock()


class UnsupportedSpaceError(ValueError):
    """An environment's observation or action space is one this algorithm cannot handle."""


def register_env(name: str, env_creator: Callable[[dict[str, Any]], Any]) -> None:
    """Register ``env_creator(env_config) -> gymnasium.Env`` under ``name`` (as Ray's does).

    The creator is resolved when the algorithm is built and shipped to the env runners,
    so registering in the driver is enough.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("an env name must be a non-empty string")
    if not callable(env_creator):
        raise TypeError("env_creator must be a callable taking env_config")
    with _lock:
        _registry[name] = env_creator


def resolve_env_creator(env: Any) -> Callable[[dict[str, Any]], Any]:
    """A picklable ``creator(env_config) -> Env`` for ``env`` (id, registered name or class)."""
    if isinstance(env, str):
        with _lock:
            creator = _registry.get(env)
        if creator is not None:
            return creator
        return _GymMaker(env)
    if callable(env):
        return _ClassMaker(env)
    raise TypeError(f"env must be a gymnasium id, a registered name or an env class, got {env!r}")


class _GymMaker:
    """``gymnasium.make(env_id, **env_config)``, picklable."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self, env_config: dict[str, Any]) -> Any:
        import gymnasium as gym

        try:
            return gym.make(self.env_id, **env_config)
        except gym.error.Error as exc:
            raise ValueError(
                f"cannot make environment {self.env_id!r}: {exc}. Pass a gymnasium id, a "
                "name given to runtime.rllib.register_env, or an env class"
            ) from exc


class _ClassMaker:
    """``cls(env_config)``: a user env class takes its config as its one argument."""

    def __init__(self, cls: Callable[..., Any]):
        self.cls = cls

    def __call__(self, env_config: dict[str, Any]) -> Any:
        return self.cls(env_config)


def make_vector_env(
    creator: Callable[[dict[str, Any]], Any], env_config: dict[str, Any], n: int
) -> Any:
    """``n`` copies of the env in a SyncVectorEnv with same-step autoreset."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    def thunk(index: int) -> Callable[[], Any]:
        def make() -> Any:
            env = creator(dict(env_config))
            if not isinstance(env, gym.Env):
                raise TypeError(
                    f"the env creator returned {type(env).__name__}, not a gymnasium.Env"
                )
            return env

        return make

    return SyncVectorEnv([thunk(i) for i in range(n)], autoreset_mode=AutoresetMode.SAME_STEP)


def spaces_of(
    creator: Callable[[dict[str, Any]], Any], env_config: dict[str, Any]
) -> tuple[Any, Any]:
    """(observation_space, action_space) of one env, made and closed at once."""
    env = creator(dict(env_config))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def check_spaces(obs_space: Any, action_space: Any, algo: str, *, box_actions: bool) -> None:
    """Raise :class:`UnsupportedSpaceError` for spaces ``algo`` cannot learn on."""
    from gymnasium import spaces

    if not isinstance(obs_space, spaces.Box | spaces.Discrete):
        raise UnsupportedSpaceError(
            f"{algo} supports Box and Discrete observation spaces, got {obs_space}; flatten it "
            "with .env_runners(env_to_module_connector=lambda env: FlattenObservations()) "
            "(runtime.rllib.connectors.env_to_module)"
        )
    if isinstance(obs_space, spaces.Box) and not obs_space.shape:
        raise UnsupportedSpaceError(f"{algo}: a Box observation space needs a shape")
    if isinstance(action_space, spaces.Discrete):
        return
    if isinstance(action_space, spaces.Box):
        if not box_actions:
            raise UnsupportedSpaceError(
                f"{algo} supports only Discrete action spaces, got {action_space}; use PPO "
                "for continuous (Box) actions"
            )
        if len(action_space.shape) != 1:
            raise UnsupportedSpaceError(
                f"{algo} supports 1-D Box action spaces, got shape {action_space.shape}"
            )
        return
    raise UnsupportedSpaceError(
        f"{algo} supports Discrete{' and Box' if box_actions else ''} action spaces, "
        f"got {action_space}"
    )
