"""SingleAgentEpisode: one episode of one env, as env-runner callbacks see it (Ray's name).

Recorded only when callbacks are configured: the observations (one more than steps: the
first and every next one), actions, rewards and infos, and a ``custom_data`` dict a callback
may fill between ``on_episode_start`` and ``on_episode_end``.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["SingleAgentEpisode"]

_ids = itertools.count()


class SingleAgentEpisode:
    """An episode in progress or finished: ``get_return()``, ``len(episode)``, ``get_*()``."""

    def __init__(self, observation: Any, info: dict[str, Any] | None = None):
        self.id_ = f"{next(_ids)}"
        self.observations: list[Any] = [observation]
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.infos: list[dict[str, Any]] = [info or {}]
        self.is_terminated = False
        self.is_truncated = False
        self.custom_data: dict[str, Any] = {}

    def add_env_step(
        self,
        observation: Any,
        action: Any,
        reward: float,
        *,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.observations.append(observation)
        self.actions.append(action)
        self.rewards.append(float(reward))
        self.infos.append(info or {})
        self.is_terminated, self.is_truncated = bool(terminated), bool(truncated)

    @property
    def is_done(self) -> bool:
        return self.is_terminated or self.is_truncated

    def get_return(self) -> float:
        return float(sum(self.rewards))

    def get_observations(self, indices: int | slice | None = None) -> Any:
        return self.observations if indices is None else self.observations[indices]

    def get_actions(self, indices: int | slice | None = None) -> Any:
        return self.actions if indices is None else self.actions[indices]

    def get_rewards(self, indices: int | slice | None = None) -> Any:
        return self.rewards if indices is None else self.rewards[indices]

    def get_infos(self, indices: int | slice | None = None) -> Any:
        return self.infos if indices is None else self.infos[indices]

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return f"SingleAgentEpisode(id_={self.id_!r}, len={len(self)}, return={self.get_return()})"
