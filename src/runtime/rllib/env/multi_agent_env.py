"""MultiAgentEnv: an environment in which several agents act (Ray's API), and ``make_multi_agent``.

``reset()`` returns ``(observations, infos)`` and ``step(actions)`` returns ``(observations,
rewards, terminateds, truncateds, infos)``, each a dict keyed by agent id; ``terminateds``
and ``truncateds`` also carry ``"__all__"``, which ends the episode for every agent. An
agent acts at a step when it has an observation in the previous step's (or reset's) dict.
Spaces per agent: ``observation_spaces`` / ``action_spaces`` dicts (or
``get_observation_space(agent_id)`` / ``get_action_space(agent_id)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MultiAgentEnv", "make_multi_agent"]


class MultiAgentEnv:
    """Base class of multi-agent environments (subclass it; set the attributes in ``__init__``)."""

    #: The agents of the env now, and all agents that may ever appear.
    agents: list[Any] = []
    possible_agents: list[Any] = []
    observation_spaces: dict[Any, Any] = {}
    action_spaces: dict[Any, Any] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, Any]]:
        raise NotImplementedError

    def step(self, action_dict: dict[Any, Any]) -> tuple[Any, Any, Any, Any, Any]:
        raise NotImplementedError

    def get_observation_space(self, agent_id: Any) -> Any:
        return self.observation_spaces[agent_id]

    def get_action_space(self, agent_id: Any) -> Any:
        return self.action_spaces[agent_id]

    def close(self) -> None:
        """Release resources (nothing by default)."""


def make_multi_agent(env_name_or_creator: str | Callable[[dict[str, Any]], Any]) -> type:
    """A ``MultiAgentEnv`` class of ``config["num_agents"]`` (default 2) independent copies
    of a single-agent env (a gymnasium id or a creator ``env_config -> Env``), as Ray's.

    Agent ``i`` (an int) acts in copy ``i``; an agent whose copy ended stops acting, and the
    episode ends (``"__all__"``) when every copy has ended.
    """

    class MultiEnv(MultiAgentEnv):
        def __init__(self, config: dict[str, Any] | None = None):
            config = dict(config or {})
            num = int(config.pop("num_agents", 2))
            if isinstance(env_name_or_creator, str):
                import gymnasium as gym

                self.envs = [gym.make(env_name_or_creator, **config) for _ in range(num)]
            else:
                self.envs = [env_name_or_creator(config) for _ in range(num)]
            self.possible_agents = list(range(num))
            self.agents = list(self.possible_agents)
            self.observation_spaces = {i: e.observation_space for i, e in enumerate(self.envs)}
            self.action_spaces = {i: e.action_space for i, e in enumerate(self.envs)}
            self.done: set[int] = set()

        def reset(
            self, *, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[dict[Any, Any], dict[Any, Any]]:
            self.done = set()
            self.agents = list(self.possible_agents)
            obs, infos = {}, {}
            for i, env in enumerate(self.envs):
                obs[i], infos[i] = env.reset(seed=None if seed is None else seed + i)
            return obs, infos

        def step(self, action_dict: dict[Any, Any]) -> tuple[Any, Any, Any, Any, Any]:
            obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
            for i, action in action_dict.items():
                obs[i], rewards[i], terms[i], truncs[i], infos[i] = self.envs[i].step(action)
                if terms[i] or truncs[i]:
                    self.done.add(i)
            self.agents = [i for i in self.possible_agents if i not in self.done]
            terms["__all__"] = truncs["__all__"] = len(self.done) == len(self.envs)
            return obs, rewards, terms, truncs, infos

        def close(self) -> None:
            for env in self.envs:
                env.close()

    name = env_name_or_creator if isinstance(env_name_or_creator, str) else "Env"
    MultiEnv.__name__ = MultiEnv.__qualname__ = f"MultiAgent{name.split('-')[0]}"
    return MultiEnv
