"""A PettingZoo ParallelEnv through ParallelPettingZooEnv: PPO, a module per agent, learns it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pettingzoo = pytest.importorskip("pettingzoo")

from gymnasium import spaces  # noqa: E402

from runtime.rllib import PPOConfig, register_env  # noqa: E402
from runtime.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv  # noqa: E402


class EchoGame(pettingzoo.ParallelEnv):  # type: ignore[misc]
    """Each of two agents sees a one-hot target in {0, 1, 2} (its own) and scores 1 for naming
    it; ten rounds, then every agent is truncated. Random play scores about 3.3 an episode."""

    metadata = {"name": "echo_v0"}

    def __init__(self, rounds: int = 10):
        self.possible_agents = ["left", "right"]
        self.agents: list[str] = []
        self.rounds = rounds
        self.rng = np.random.default_rng()
        self.targets: dict[str, int] = {}
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (3,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(3)

    def _obs(self) -> dict[str, np.ndarray]:
        self.targets = {a: int(self.rng.integers(3)) for a in self.agents}
        return {a: np.eye(3, dtype=np.float32)[t] for a, t in self.targets.items()}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> Any:
        rewards = {a: float(int(actions[a]) == self.targets[a]) for a in self.agents}
        self.t += 1
        over = self.t >= self.rounds
        terms = {a: False for a in self.agents}
        truncs = {a: over for a in self.agents}
        obs = self._obs()
        infos = {a: {} for a in self.agents}
        if over:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def test_the_wrapper_adds_all_and_the_space_dicts() -> None:
    env = ParallelPettingZooEnv(EchoGame(rounds=2))
    assert env.possible_agents == ["left", "right"]
    assert env.get_action_space("left") == spaces.Discrete(3)
    obs, _ = env.reset(seed=0)
    _, _, terms, truncs, _ = env.step({a: 0 for a in obs})
    assert not terms["__all__"] and not truncs["__all__"]
    _, rewards, terms, truncs, _ = env.step({a: 0 for a in obs})
    assert set(rewards) == {"left", "right"}
    assert truncs["__all__"] and not terms["__all__"] and env.agents == []
    with pytest.raises(TypeError, match="ParallelEnv"):
        ParallelPettingZooEnv(object())


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_ppo_learns_a_pettingzoo_game_with_a_module_per_agent() -> None:
    register_env("echo", lambda cfg: ParallelPettingZooEnv(EchoGame(**cfg)))
    config = (
        PPOConfig()
        .environment("echo")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        .training(train_batch_size=500, lr=1e-3)
        .multi_agent(
            policies={"left_policy", "right_policy"},
            policy_mapping_fn=lambda agent_id, episode, **kw: f"{agent_id}_policy",
        )
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        per_agent: dict[str, float] = {}
        for _ in range(30):
            per_agent = algo.train()["env_runners"]["agent_episode_returns_mean"]
            if per_agent and min(per_agent.values()) >= 8:
                break
        assert set(per_agent) == {"left", "right"}
        assert min(per_agent.values()) >= 8, per_agent  # random play: about 3.3
        action = algo.compute_single_action(
            np.eye(3, dtype=np.float32)[2], policy_id="left_policy", explore=False
        )
        assert action == 2
    finally:
        algo.stop()
