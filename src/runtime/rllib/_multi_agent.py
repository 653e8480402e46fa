"""Multi-agent plumbing: which module acts for which agent, runners for ``MultiAgentEnv`` s,
and the per-module learners seen by the ``Algorithm`` as one.

A ``MultiAgentEnvRunner`` steps ``num_envs`` copies of a ``MultiAgentEnv``; at every step it
groups the agents that act by their module (``policy_mapping_fn``), acts for each group
with that module's numpy policy, and records each agent's transitions. A round returns, per
module, one chunk per agent and episode piece (arrays ``[T, 1, ...]``, the single-agent
batch layout with one column), so an algorithm's per-batch postprocessing (PPO's GAE) runs
on each agent's own trajectory: a chunk ends where the agent's episode ended (terminated or
truncated) or where the round ended (then it bootstraps from the true next observation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "ModuleLearners",
    "MultiAgentEnvRunner",
    "MultiModuleActor",
    "default_policy_mapping_fn",
    "module_specs",
]

DEFAULT_MODULE_ID = "default_policy"


def default_policy_mapping_fn(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """Ray's default: every agent acts with the one module ``"default_policy"``."""
    return DEFAULT_MODULE_ID


def module_specs(config: Any, env: Any) -> dict[str, tuple[Any, Any]]:
    """Module id -> (observation space, action space), from ``config.policies`` and the env.

    A module's spaces are those given in ``policies`` (Ray's ``(cls, obs_space, act_space,
    config)`` tuple form), else those of the first of the env's ``possible_agents`` that
    ``policy_mapping_fn`` maps to it.
    """
    mapping = config.policy_mapping_fn or default_policy_mapping_fn
    policies = config.policies
    ids = [DEFAULT_MODULE_ID] if policies is None else list(policies)
    specs: dict[str, tuple[Any, Any]] = {}
    for mid in ids:
        given = policies.get(mid) if isinstance(policies, dict) else None
        if isinstance(given, tuple | list) and len(given) >= 3 and given[1] is not None:
            specs[mid] = (given[1], given[2])
    for agent in getattr(env, "possible_agents", None) or getattr(env, "agents", []):
        mid = mapping(agent, None)
        if mid not in ids:
            raise ValueError(
                f"policy_mapping_fn maps agent {agent!r} to {mid!r}, which is not one of the "
                f"policies {sorted(ids)}"
            )
        if mid not in specs:
            specs[mid] = (env.get_observation_space(agent), env.get_action_space(agent))
    missing = [mid for mid in ids if mid not in specs]
    if missing:
        raise ValueError(
            f"no agent of the env maps to module(s) {missing} and their spaces are not given "
            "in policies={id: (None, obs_space, act_space, {})}"
        )
    return specs


class MultiModuleActor:
    """The runners' numpy policies, one per module; weights arrive nested by module id."""

    def __init__(self, actor_ctors: dict[str, Callable[[], Any]]):
        self.actor_ctors = actor_ctors

    def __call__(self) -> dict[str, Any]:
        return {mid: ctor() for mid, ctor in self.actor_ctors.items()}


class ModuleLearners:
    """Each module's learner, seen as one: weights and state are dicts by module id."""

    def __init__(self, learners: dict[str, Any]):
        self.learners = learners

    def set_lr(self, lr: float) -> None:
        for learner in self.learners.values():
            learner.set_lr(lr)

    def get_weights(self) -> dict[str, Any]:
        return {mid: learner.get_weights() for mid, learner in self.learners.items()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        for mid, module_weights in weights.items():
            self.learners[mid].set_weights(module_weights)

    def get_state(self) -> dict[str, Any]:
        return {mid: learner.get_state() for mid, learner in self.learners.items()}

    def set_state(self, state: dict[str, Any]) -> None:
        for mid, learner_state in state.items():
            self.learners[mid].set_state(learner_state)


class _AgentChunk:
    """One agent's transitions in one episode, since the chunk began."""

    def __init__(self, module_id: str):
        self.module_id = module_id
        self.cols: dict[str, list[Any]] = {}

    def add(self, **values: Any) -> None:
        for key, value in values.items():
            self.cols.setdefault(key, []).append(value)

    def batch(self) -> dict[str, np.ndarray]:
        return {k: np.stack(v)[:, None] for k, v in self.cols.items()}


class MultiAgentEnvRunner:
    """Steps ``num_envs`` copies of a ``MultiAgentEnv`` with one numpy policy per module.

    The interface is the single-agent ``EnvRunner`` 's (``sample``, ``sample_episodes``,
    ``evaluate``, ``set_weights``, ``ping``, ``has_imported``, ``stop``), so the same
    ``EnvRunnerGroup`` runs it.
    """

    def __init__(
        self,
        env_creator: Callable[[dict[str, Any]], Any] | bytes,
        env_config: dict[str, Any],
        num_envs: int,
        actor_ctor: Callable[[], Any] | bytes,
        *,
        seed: int | None,
        worker_index: int,
        mapping_fn: Callable[..., str] | bytes | None = None,
        callbacks: bytes | None = None,
        connectors: bytes | None = None,
    ):
        import pickle

        if isinstance(env_creator, bytes):
            env_creator = pickle.loads(env_creator)
        if isinstance(actor_ctor, bytes):
            actor_ctor = pickle.loads(actor_ctor)
        mapping: Any = pickle.loads(mapping_fn) if isinstance(mapping_fn, bytes) else mapping_fn
        assert callable(env_creator) and callable(actor_ctor)
        if callbacks or connectors:
            raise NotImplementedError("runner callbacks and connectors with multi-agent envs")
        self.envs = [env_creator(dict(env_config)) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.modules: dict[str, Any] = actor_ctor()
        self.mapping_fn: Callable[..., str] = mapping or default_policy_mapping_fn
        self.seed = seed
        self.worker_index = worker_index
        self.rng = np.random.default_rng(None if seed is None else [seed, worker_index])
        self._finished: list[tuple[int, float, int, dict[Any, float]]] = []
        self._finished_modules: list[dict[str, float]] = []
        self._reset_all()

    def _reset_all(self) -> None:
        self.obs: list[dict[Any, Any]] = []
        for i, env in enumerate(self.envs):
            seed = None if self.seed is None else self.seed * 10_007 + self.worker_index * 101 + i
            self.obs.append(env.reset(seed=seed)[0])
        self._new_episodes(range(self.num_envs))

    def _new_episodes(self, indices: Any) -> None:
        if not hasattr(self, "agent_module"):
            self.agent_module: list[dict[Any, str]] = [{} for _ in range(self.num_envs)]
            self.chunks: list[dict[Any, _AgentChunk]] = [{} for _ in range(self.num_envs)]
            self.ep_returns: list[dict[Any, float]] = [{} for _ in range(self.num_envs)]
            self.ep_len = np.zeros(self.num_envs, dtype=np.int64)
        for i in indices:
            self.agent_module[i] = {}
            self.chunks[i] = {}
            self.ep_returns[i] = {}
            self.ep_len[i] = 0

    def ping(self) -> bool:
        return True

    def has_imported(self, module: str) -> bool:
        import sys

        return module in sys.modules

    def set_weights(self, weights: dict[str, Any] | None) -> None:
        if weights is not None:
            for mid, module_weights in weights.items():
                if mid in self.modules:
                    self.modules[mid].set_weights(module_weights)

    def _module_of(self, env_index: int, agent: Any) -> str:
        known = self.agent_module[env_index]
        if agent not in known:
            known[agent] = self.mapping_fn(agent, None)
            if known[agent] not in self.modules:
                raise ValueError(f"policy_mapping_fn mapped agent {agent!r} to {known[agent]!r}")
        return known[agent]

    def sample(
        self,
        weights: dict[str, Any] | None,
        num_steps: int,
        explore: bool = True,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``num_steps`` steps of every env copy; per module, each agent's chunks."""
        self.set_weights(weights)
        kwargs = act_kwargs or {}
        out: dict[str, list[dict[str, np.ndarray]]] = {mid: [] for mid in self.modules}
        returns: list[float] = []
        lengths: list[int] = []
        agent_returns: dict[str, list[float]] = {}
        module_returns: dict[str, list[float]] = {}
        for _ in range(num_steps):
            for i, env in enumerate(self.envs):
                self._step_env(
                    i,
                    env,
                    explore=explore,
                    kwargs=kwargs,
                    out=out,
                    returns=returns,
                    lengths=lengths,
                )
        for i in range(self.num_envs):  # cut the open chunks at the end of the round
            for agent, chunk in list(self.chunks[i].items()):
                if chunk.cols:
                    out[chunk.module_id].append(chunk.batch())
                self.chunks[i][agent] = _AgentChunk(chunk.module_id)
        for i, ret, length, per_agent in self._finished:
            del i, ret, length
            for agent, value in per_agent.items():
                agent_returns.setdefault(str(agent), []).append(value)
        for mid_returns in self._finished_modules:
            for mid, value in mid_returns.items():
                module_returns.setdefault(mid, []).append(value)
        self._finished, self._finished_modules = [], []
        return {
            "modules": out,
            "episode_returns": returns,
            "episode_lens": lengths,
            "agent_episode_returns": agent_returns,
            "module_episode_returns": module_returns,
            "env_steps": num_steps * self.num_envs,
        }

    def _step_env(
        self,
        i: int,
        env: Any,
        *,
        explore: bool,
        kwargs: dict[str, Any],
        out: dict[str, list[dict[str, np.ndarray]]],
        returns: list[float],
        lengths: list[int],
    ) -> None:
        obs = self.obs[i]
        by_module: dict[str, list[Any]] = {}
        for agent in obs:
            by_module.setdefault(self._module_of(i, agent), []).append(agent)
        actions: dict[Any, Any] = {}
        logps: dict[Any, Any] = {}
        for mid, agents in by_module.items():
            batch = np.stack([np.asarray(obs[a]) for a in agents])
            acts, extra = self.modules[mid].act(batch, explore, self.rng, **kwargs)
            for j, agent in enumerate(agents):
                actions[agent] = acts[j]
                logps[agent] = extra.get("action_logp", np.zeros(len(agents), np.float32))[j]
        next_obs, rewards, terms, truncs, _infos = env.step(
            {a: _env_action(act, env.get_action_space(a)) for a, act in actions.items()}
        )
        all_done = bool(terms.get("__all__", False) or truncs.get("__all__", False))
        self.ep_len[i] += 1
        acting_next: dict[Any, Any] = {}
        for agent, action in actions.items():
            reward = float(rewards.get(agent, 0.0))
            self.ep_returns[i][agent] = self.ep_returns[i].get(agent, 0.0) + reward
            terminated = bool(terms.get(agent, False) or terms.get("__all__", False))
            truncated = bool(truncs.get(agent, False) or truncs.get("__all__", False))
            nxt = next_obs.get(agent, obs[agent])
            mid = self._module_of(i, agent)
            chunk = self.chunks[i].setdefault(agent, _AgentChunk(mid))
            chunk.add(
                obs=np.asarray(obs[agent]),
                actions=np.asarray(action),
                rewards=np.float32(reward),
                terminateds=terminated,
                truncateds=truncated and not terminated,
                next_obs=np.asarray(nxt),
                action_logp=np.float32(logps[agent]),
            )
            if terminated or truncated:
                out[mid].append(chunk.batch())
                self.chunks[i][agent] = _AgentChunk(mid)
            elif agent in next_obs and not all_done:
                acting_next[agent] = next_obs[agent]
        # Agents that did not act this step but got an observation act next.
        for agent, value in next_obs.items():
            if agent not in actions and not all_done and not terms.get(agent, False):
                acting_next[agent] = value
        if all_done:
            per_agent = dict(self.ep_returns[i])
            returns.append(float(sum(per_agent.values())))
            lengths.append(int(self.ep_len[i]))
            self._finished = [*self._finished, (i, returns[-1], lengths[-1], per_agent)]
            per_module: dict[str, float] = {}
            for agent, value in per_agent.items():
                mid = self._module_of(i, agent)
                per_module[mid] = per_module.get(mid, 0.0) + value
            self._finished_modules = [*self._finished_modules, per_module]
            for chunk in self.chunks[i].values():
                if chunk.cols:
                    out[chunk.module_id].append(chunk.batch())
            seed = None  # later resets draw from the env's own generator
            self.obs[i] = env.reset(seed=seed)[0]
            self._new_episodes([i])
        else:
            self.obs[i] = acting_next

    def sample_episodes(
        self,
        weights: dict[str, Any] | None,
        num_episodes: int,
        explore: bool = False,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Whole episodes from fresh resets (evaluation): their returns and lengths."""
        self.set_weights(weights)
        self._reset_all()
        returns: list[float] = []
        lengths: list[int] = []
        while len(returns) < num_episodes:
            out = self.sample(None, 1, explore, act_kwargs)
            returns += out["episode_returns"]
            lengths += out["episode_lens"]
        return {"episode_returns": returns[:num_episodes], "episode_lens": lengths[:num_episodes]}

    def evaluate(
        self,
        weights: dict[str, Any] | None,
        duration: int,
        unit: str,
        explore: bool = False,
        act_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if unit == "episodes":
            return self.sample_episodes(weights, duration, explore, act_kwargs)
        self.sample_episodes(weights, 0, explore)
        out = self.sample(None, -(-duration // self.num_envs), explore, act_kwargs)
        return {"episode_returns": out["episode_returns"], "episode_lens": out["episode_lens"]}

    def stop(self) -> None:
        for env in self.envs:
            env.close()


def _env_action(action: Any, space: Any) -> Any:
    """The env's action: a Box one clipped to its bounds, a Discrete one a Python int."""
    from gymnasium import spaces

    arr = np.asarray(action)
    if isinstance(space, spaces.Box):
        return np.clip(arr, space.low, space.high)
    return int(arr) if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer) else arr
