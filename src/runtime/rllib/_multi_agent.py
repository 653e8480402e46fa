"""Multi-agent plumbing: which module acts for which agent, runners for ``MultiAgentEnv`` s,
and the per-module learners seen by the ``Algorithm`` as one.

A ``MultiAgentEnvRunner`` steps ``num_envs`` copies of a ``MultiAgentEnv``; at every step it
groups the agents that act in all copies by their module (``policy_mapping_fn``), acts once
per module with that module's numpy policy, and records each agent's transitions. A round
returns, per module, one batch (arrays ``[T, 1, ...]``, the single-agent batch layout with
one column) whose rows are grouped by trajectory piece, one agent in one episode, in time
order within a piece; ``chunk_ends`` marks a piece's last row. An algorithm's
postprocessing (PPO's GAE) runs over the whole batch at once and stops its recursion at
every piece's end: a piece ends where the agent's episode ended (terminated or truncated)
or where the round ended (then it bootstraps from the true next observation).
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
        #: Episodes finished this round: (return per agent, return per module).
        self._finished: list[tuple[dict[Any, float], dict[str, float]]] = []
        self._traj: list[dict[Any, int]] = [{} for _ in range(num_envs)]
        self._next_traj = 0
        #: Agents that acted without getting their next observation yet: where it goes.
        self._pending: list[dict[Any, tuple[np.ndarray, int]]] = [{} for _ in range(num_envs)]
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
            self.ep_returns: list[dict[Any, float]] = [{} for _ in range(self.num_envs)]
            self.ep_len = np.zeros(self.num_envs, dtype=np.int64)
        for i in indices:
            self.agent_module[i] = {}
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
        """``num_steps`` steps of every env copy; per module, its agents' trajectories.

        Every step acts once per module for the agents of all env copies together. A
        module's transitions come back as one batch (``[T, 1, ...]`` columns) whose rows are
        grouped by trajectory piece (one agent in one episode, within this round) and in
        time order within it; ``chunk_ends`` marks each piece's last row.
        """
        self.set_weights(weights)
        kwargs = act_kwargs or {}
        self._traj = [{} for _ in range(self.num_envs)]  # a round cuts every trajectory
        self._next_traj = 0
        self._pending = [{} for _ in range(self.num_envs)]
        rec: dict[str, dict[str, list[Any]]] = {mid: {} for mid in self.modules}
        returns: list[float] = []
        lengths: list[int] = []
        for _ in range(num_steps):
            self._step_all(explore, kwargs, rec, returns, lengths)
        agent_returns: dict[str, list[float]] = {}
        module_returns: dict[str, list[float]] = {}
        for per_agent, per_module in self._finished:
            for agent, value in per_agent.items():
                agent_returns.setdefault(str(agent), []).append(value)
            for mid, value in per_module.items():
                module_returns.setdefault(mid, []).append(value)
        self._finished = []
        return {
            "modules": {mid: [_trajectories(cols)] for mid, cols in rec.items() if cols},
            "episode_returns": returns,
            "episode_lens": lengths,
            "agent_episode_returns": agent_returns,
            "module_episode_returns": module_returns,
            "env_steps": num_steps * self.num_envs,
        }

    def _traj_id(self, env_index: int, agent: Any) -> int:
        ids = self._traj[env_index]
        if agent not in ids:
            ids[agent] = self._next_traj
            self._next_traj += 1
        return ids[agent]

    def _step_all(
        self,
        explore: bool,
        kwargs: dict[str, Any],
        rec: dict[str, dict[str, list[Any]]],
        returns: list[float],
        lengths: list[int],
    ) -> None:
        """One step of every env copy: act per module for all copies' agents, step, record."""
        # 1. Group the acting agents of all copies by module, and act once per module.
        groups: dict[str, tuple[list[tuple[int, Any]], list[Any]]] = {}
        for i, obs in enumerate(self.obs):
            for agent, value in obs.items():
                mid = self.agent_module[i].get(agent) or self._module_of(i, agent)
                keys, values = groups.setdefault(mid, ([], []))
                keys.append((i, agent))
                values.append(value)
        env_actions: list[dict[Any, Any]] = [{} for _ in range(self.num_envs)]
        acted: list[tuple[str, list[tuple[int, Any]], Any, Any, Any]] = []
        for mid, (keys, values) in groups.items():
            batch = np.asarray(values)
            acts, extra = self.modules[mid].act(batch, explore, self.rng, **kwargs)
            logps = extra.get("action_logp")
            if logps is None:
                logps = np.zeros(len(keys), np.float32)
            if acts.ndim == 1 and np.issubdtype(acts.dtype, np.integer):
                for (i, agent), action in zip(keys, acts.tolist(), strict=True):
                    env_actions[i][agent] = action  # a Discrete action as a Python int
            else:
                for (i, agent), action in zip(keys, acts, strict=True):
                    env_actions[i][agent] = self._env_action(i, agent, action)
            acted.append((mid, keys, batch, acts, logps))
        # 2. Step every copy.
        stepped = [env.step(env_actions[i]) for i, env in enumerate(self.envs)]
        # 3. Record each acting agent's transition under its trajectory piece.
        for mid, keys, batch, acts, logps in acted:
            rewards = np.empty(len(keys), np.float32)
            terms = np.empty(len(keys), bool)
            truncs = np.empty(len(keys), bool)
            traj = np.empty(len(keys), np.int64)
            next_obs: list[Any] = []
            waiting: list[tuple[int, Any, int]] = []
            for j, (i, agent) in enumerate(keys):
                nxt, rew, term, trunc, _info = stepped[i]
                reward = float(rew.get(agent, 0.0))
                self.ep_returns[i][agent] = self.ep_returns[i].get(agent, 0.0) + reward
                rewards[j] = reward
                terms[j] = done_t = bool(term.get(agent, False) or term.get("__all__", False))
                truncated = bool(trunc.get(agent, False) or trunc.get("__all__", False))
                truncs[j] = truncated and not done_t
                if agent in nxt:
                    next_obs.append(nxt[agent])
                else:  # its next observation comes with a later step (until then, its own)
                    next_obs.append(self.obs[i][agent])
                    if not (done_t or truncated):
                        waiting.append((i, agent, j))
                traj[j] = self._traj_id(i, agent)
                if done_t or truncated:  # the agent's piece ends here
                    del self._traj[i][agent]
            cols = rec[mid]
            next_arr = np.asarray(next_obs)
            for i, agent, j in waiting:
                self._pending[i][agent] = (next_arr, j)
            for key, value in (
                ("obs", batch),
                ("actions", acts),
                ("rewards", rewards),
                ("terminateds", terms),
                ("truncateds", truncs),
                ("next_obs", next_arr),
                ("action_logp", np.asarray(logps, np.float32)),
                ("traj", traj),
            ):
                cols.setdefault(key, []).append(value)
        # 4. Who acts next; finished episodes reset.
        for i, (nxt, _rew, term, trunc, _info) in enumerate(stepped):
            self.ep_len[i] += 1
            if term.get("__all__", False) or trunc.get("__all__", False):
                self._end_episode(i, returns, lengths)
                continue
            self.obs[i] = {
                agent: value
                for agent, value in nxt.items()
                if not term.get(agent, False) and not trunc.get(agent, False)
            }
            pending = self._pending[i]
            for agent in pending.keys() & self.obs[i].keys():
                arr, j = pending.pop(agent)
                arr[j] = self.obs[i][agent]  # the observation it acts on next

    def _env_action(self, env_index: int, agent: Any, action: Any) -> Any:
        """The env's action: a Box one clipped to the agent's bounds."""
        from gymnasium import spaces

        space = self.envs[env_index].get_action_space(agent)
        arr = np.asarray(action)
        if isinstance(space, spaces.Box):
            return np.clip(arr, space.low, space.high)
        return int(arr) if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer) else arr

    def _end_episode(self, i: int, returns: list[float], lengths: list[int]) -> None:
        per_agent = dict(self.ep_returns[i])
        returns.append(float(sum(per_agent.values())))
        lengths.append(int(self.ep_len[i]))
        per_module: dict[str, float] = {}
        for agent, value in per_agent.items():
            mid = self._module_of(i, agent)
            per_module[mid] = per_module.get(mid, 0.0) + value
        self._finished.append((per_agent, per_module))
        self._traj[i] = {}
        self._pending[i] = {}
        self.obs[i] = self.envs[i].reset(seed=None)[0]  # later resets: the env's own generator
        self._new_episodes([i])

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


def _trajectories(cols: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """A module's recorded steps as one batch grouped by trajectory piece, in time order
    within each (a stable sort by piece id), with ``chunk_ends`` on each piece's last row."""
    traj = np.concatenate(cols.pop("traj"))
    order = np.argsort(traj, kind="stable")
    traj = traj[order]
    batch = {k: np.concatenate(v)[order][:, None] for k, v in cols.items()}
    ends = np.ones(len(traj), bool)
    ends[:-1] = traj[1:] != traj[:-1]
    batch["chunk_ends"] = ends[:, None]
    return batch
