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


class Staggered(MultiAgentEnv):
    """Agent ``a`` acts at steps 1-3 and is terminated at 3; agent ``b`` acts at steps 1, 3
    and 5 (no agent acts at 4), and the episode ends at 5. An observation is ``[agent, t]``, a
    reward ``t`` (plus 10 for ``b`` at the end)."""

    def __init__(self, config: dict[str, Any] | None = None):
        from gymnasium import spaces

        self.possible_agents = self.agents = ["a", "b"]
        box = spaces.Box(-1e3, 1e3, (2,), np.float32)
        self.observation_spaces = {"a": box, "b": box}
        self.action_spaces = {"a": spaces.Discrete(2), "b": spaces.Discrete(2)}
        self.t = 0

    def obs(self, agent: str) -> np.ndarray:
        return np.array([0.0 if agent == "a" else 1.0, self.t], np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        self.t = 0
        return {"a": self.obs("a"), "b": self.obs("b")}, {}

    def step(self, actions: dict[Any, Any]) -> Any:
        self.t += 1
        obs, rewards, terms = {}, {a: float(self.t) for a in actions}, {}
        if "a" in actions:
            terms["a"] = self.t >= 3
            if not terms["a"]:
                obs["a"] = self.obs("a")
        if self.t % 2 == 0 and self.t <= 4:
            obs["b"] = self.obs("b")
        terms["__all__"] = self.t >= 5
        if terms["__all__"]:
            rewards["b"] = rewards.get("b", 0.0) + 10.0
        return obs, rewards, terms, {"__all__": False}, {}


def test_a_runner_returns_each_modules_agent_trajectories_grouped_and_in_order() -> None:
    import functools

    from runtime.rllib._multi_agent import MultiAgentEnvRunner, MultiModuleActor
    from runtime.rllib._numpy_policy import PPOActor
    from runtime.rllib.ppo import ActorCritic

    env = Staggered()
    spec = (env.observation_spaces["a"], env.action_spaces["a"], PPOConfig().model)
    ctors = {m: functools.partial(PPOActor, *spec) for m in ("pa", "pb")}
    runner = MultiAgentEnvRunner(
        Staggered,
        {},
        2,
        MultiModuleActor(ctors),
        seed=0,
        worker_index=1,
        mapping_fn=lambda agent, episode, **kw: f"p{agent}",
    )
    weights = {k: v.detach().numpy() for k, v in ActorCritic(*spec).state_dict().items()}
    out = runner.sample({"pa": weights, "pb": weights}, 7)  # one episode (5 steps), then 2
    assert out["env_steps"] == 14 and out["episode_returns"] == [6 + 19.0] * 2
    assert out["agent_episode_returns"] == {"a": [6.0, 6.0], "b": [1 + 3 + 15.0] * 2}
    a, b = out["modules"]["pa"][0], out["modules"]["pb"][0]

    def pieces(batch: dict[str, np.ndarray]) -> list[list[tuple[float, float, bool]]]:
        """(t observed, reward, terminated) of each trajectory piece's steps, in row order."""
        rows, out = [], []
        for i in range(len(batch["rewards"])):
            obs_t, reward = batch["obs"][i, 0, 1], batch["rewards"][i, 0]
            rows.append((float(obs_t), float(reward), bool(batch["terminateds"][i, 0])))
            if batch["chunk_ends"][i, 0]:
                out.append(rows)
                rows = []
        assert not rows  # the last row ends a piece
        return out

    # Agent a, per env copy: steps 1-3 of the episode (terminated), then steps 1-2 of the next
    # (cut by the end of the round); b: steps 1, 3 and 5 (the end), then step 1 (cut).
    a_first = [(0.0, 1.0, False), (1.0, 2.0, False), (2.0, 3.0, True)]
    a_next = [(0.0, 1.0, False), (1.0, 2.0, False)]
    assert sorted(pieces(a)) == sorted([a_first, a_first, a_next, a_next])
    b_first = [(0.0, 1.0, False), (2.0, 3.0, False), (4.0, 15.0, True)]
    assert sorted(pieces(b)) == sorted([b_first, b_first, [(0.0, 1.0, False)], [(0.0, 1.0, False)]])
    # Within a piece, a transition's next observation is the next row's observation (b's
    # comes a step after it acted).
    for batch in (a, b):
        same_piece = ~batch["chunk_ends"][:-1, 0]
        np.testing.assert_array_equal(
            batch["next_obs"][:-1][same_piece], batch["obs"][1:][same_piece]
        )
        assert batch["obs"].shape == (len(batch["rewards"]), 1, 2)


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
