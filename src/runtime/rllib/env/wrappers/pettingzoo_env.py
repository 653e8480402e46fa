"""ParallelPettingZooEnv: a PettingZoo ``ParallelEnv`` as a ``MultiAgentEnv`` (Ray's name).

PettingZoo's parallel API already speaks in dicts keyed by agent; the wrapper adds what
``MultiAgentEnv`` has and PettingZoo does not: ``"__all__"`` in ``terminateds`` /
``truncateds`` (true once no agent is left), and the per-agent space dicts. The ``pettingzoo``
package is needed only to make the env you wrap (the ``rllib`` extra lists it).

Example::

    register_env("my_game", lambda cfg: ParallelPettingZooEnv(my_game.parallel_env(**cfg)))
    config = PPOConfig().environment("my_game").multi_agent(
        policies={"p0", "p1"}, policy_mapping_fn=lambda agent, episode, **kw: ...)
"""

from __future__ import annotations

from typing import Any

from runtime.rllib.env.multi_agent_env import MultiAgentEnv

__all__ = ["ParallelPettingZooEnv"]


class ParallelPettingZooEnv(MultiAgentEnv):
    """Wraps ``env`` (a ``pettingzoo.ParallelEnv``)."""

    def __init__(self, env: Any):
        for method in ("reset", "step", "observation_space", "action_space"):
            if not callable(getattr(env, method, None)):
                raise TypeError(f"not a PettingZoo ParallelEnv (no {method}()): {env!r}")
        self.par_env = env
        self.possible_agents = list(env.possible_agents)
        self.agents = list(env.possible_agents)
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, Any]]:
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return dict(obs), dict(infos)

    def step(self, action_dict: dict[Any, Any]) -> tuple[Any, Any, Any, Any, Any]:
        obs, rewards, terms, truncs, infos = self.par_env.step(action_dict)
        self.agents = list(self.par_env.agents)
        terms, truncs = dict(terms), dict(truncs)
        everyone_done = not self.agents
        terms["__all__"] = everyone_done and any(terms.values())
        truncs["__all__"] = everyone_done and not terms["__all__"]
        return dict(obs), dict(rewards), terms, truncs, dict(infos)

    def close(self) -> None:
        self.par_env.close()
