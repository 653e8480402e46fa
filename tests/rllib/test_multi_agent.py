"""Multi-agent PPO on a two-agent CartPole: one shared module, separate modules, and a module
that acts without being trained."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from runtime.rllib import DQNConfig, PPOConfig
from runtime.rllib.env.multi_agent_env import MultiAgentEnv, make_multi_agent

MultiAgentCartPole = make_multi_agent("CartPole-v1")


def test_make_multi_agent_steps_independent_copies_until_all_are_done() -> None:
    env = MultiAgentCartPole({"num_agents": 2})
    assert isinstance(env, MultiAgentEnv) and env.possible_agents == [0, 1]
    obs, _ = env.reset(seed=0)
    assert set(obs) == {0, 1} and env.get_observation_space(0).shape == (4,)
    done: set[int] = set()
    for _ in range(500):
        acting = {a: 0 for a in obs if a not in done}
        obs, rewards, terms, truncs, _ = env.step(acting)
        assert set(rewards) == set(acting)
        done |= {a for a in acting if terms[a] or truncs[a]}
        if terms["__all__"]:
            break
    assert done == {0, 1} and terms["__all__"]


def two_agents(**multi_agent: Any) -> PPOConfig:
    config = PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
    config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
    config.training(train_batch_size=1000).debugging(seed=0)
    return config.multi_agent(**multi_agent) if multi_agent else config


def test_bad_multi_agent_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not one of the policies"):
        two_agents(policies={"p0"}, policy_mapping_fn=lambda aid, ep, **kw: f"p{aid}").build()
    with pytest.raises(ValueError, match="needs a MultiAgentEnv"):
        PPOConfig().environment("CartPole-v1").multi_agent(policies={"p0"}).build()
    with pytest.raises(NotImplementedError, match="PPO does"):
        DQNConfig().environment(MultiAgentCartPole).build()
    with pytest.raises(NotImplementedError, match="policy_map_capacity"):
        PPOConfig().multi_agent(policy_map_capacity=3)


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_two_agents_sharing_one_module_both_learn_cartpole() -> None:
    algo = two_agents().build()
    try:
        assert set(algo.modules) == {"default_policy"}
        per_agent: dict[str, float] = {}
        for _ in range(40):
            result = algo.train()
            per_agent = result["env_runners"]["agent_episode_returns_mean"]
            if per_agent and min(per_agent.values()) >= 100:
                break
        assert set(per_agent) == {"0", "1"} and min(per_agent.values()) >= 100, per_agent
        runners = result["env_runners"]
        # The episode return is the agents' sum (Ray's), over the episodes of the iteration.
        assert runners["episode_return_mean"] >= 200 or np.isnan(runners["episode_return_mean"])
        assert set(result["learners"]) == {"default_policy"}
        assert result["learners"]["default_policy"]["num_env_steps_trained"] > 0
        obs = np.array([0.0, 0.0, 0.05, 0.0], np.float32)
        assert algo.compute_single_action(obs, explore=False) in (0, 1)
    finally:
        algo.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_separate_modules_and_a_module_that_is_not_trained() -> None:
    config = two_agents(
        policies={"p0", "p1"},
        policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}",
        policies_to_train=["p0"],
    )
    algo = config.evaluation(evaluation_duration=2).build()
    try:
        frozen = {k: v.copy() for k, v in algo.get_weights()["p1"].items()}
        per_agent: dict[str, float] = {}
        for _ in range(40):
            result = algo.train()
            per_agent = result["env_runners"]["agent_episode_returns_mean"]
            if per_agent.get("0", 0) >= 100:
                break
        assert per_agent["0"] >= 100, per_agent
        assert per_agent["1"] < 60  # p1 acts, untrained
        assert set(result["learners"]) == {"p0"}
        modules = result["env_runners"]["module_episode_returns_mean"]
        assert set(modules) == {"p0", "p1"}
        for key, value in algo.get_weights()["p1"].items():
            np.testing.assert_array_equal(value, frozen[key])
        assert algo.get_module("p0") is not algo.get_module("p1")
        with pytest.raises(KeyError):
            algo.get_module("p2")
        evaluation = algo.evaluate()["env_runners"]
        assert evaluation["num_episodes"] == 2 and evaluation["episode_return_mean"] > 100
    finally:
        algo.stop()
