"""DQN on a real local mesh: a user grid-world class with env_config, solved to its optimal
greedy path; the epsilon schedule, target updates and checkpoints of the extra state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.rllib import DQN, DQNConfig, register_env
from tests.rllib.envs import GridWorld

pytestmark = pytest.mark.usefixtures("cluster")


def grid_config(size: int = 4) -> DQNConfig:
    config = DQNConfig().environment(GridWorld, env_config={"size": size, "max_steps": 20})
    config.env_runners(num_env_runners=2, rollout_fragment_length=16)
    config.training(
        lr=1e-3,
        num_steps_sampled_before_learning_starts=200,
        epsilon_timesteps=1500,
        target_network_update_freq=100,
        training_intensity=8,
        model={"fcnet_hiddens": [32]},
    )
    # One sampling round per iteration (Ray's DQN default samples >= 1000 env steps per
    # iteration), so that the test evaluates often.
    config.reporting(min_sample_timesteps_per_iteration=0)
    return config.evaluation(evaluation_duration=1).debugging(seed=0)


@pytest.mark.timeout(300)
def test_dqn_finds_the_shortest_path_in_a_grid_world(tmp_path: Path) -> None:
    algo = grid_config().build()
    try:
        optimal = 2 * (4 - 1)
        evaluation: dict[str, Any] = {}
        for i in range(1, 121):
            result = algo.train()
            if i % 10 == 0:
                evaluation = algo.evaluate()["env_runners"]
                if evaluation["episode_len_mean"] == optimal:
                    break
        assert evaluation["episode_len_mean"] == optimal, (i, evaluation)
        assert evaluation["episode_return_mean"] == pytest.approx(1.0 - 0.01 * (optimal - 1))
        stats = result["learners"]["default_policy"]
        assert stats["epsilon"] < 1.0
        assert stats["num_target_updates"] >= 1
        assert stats["replay_buffer_size"] == result["num_env_steps_sampled_lifetime"]
        assert result["num_env_steps_trained_lifetime"] > 0

        # The checkpoint keeps the greedy path (online and target networks).
        path = algo.save(tmp_path / "dqn").checkpoint.path
        restored = DQN.from_checkpoint(path)
        try:
            assert restored.evaluate()["env_runners"]["episode_len_mean"] == optimal
            assert restored.num_target_updates == algo.num_target_updates
        finally:
            restored.stop()
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_a_registered_env_name_reaches_the_runners() -> None:
    register_env("grid3", lambda cfg: GridWorld({"size": 3, **cfg}))
    config = DQNConfig().environment("grid3", env_config={"max_steps": 5})
    config.env_runners(num_env_runners=1, rollout_fragment_length=8).debugging(seed=1)
    algo = config.build()
    try:
        result = algo.train()
        # Rounds of 8 steps until min_sample_timesteps_per_iteration (DQN's default: 1000).
        assert result["num_env_steps_sampled_lifetime"] == 1000
        assert result["env_runners"]["num_env_steps_sampled"] == 1000
        assert 0.9 < result["learners"]["default_policy"]["epsilon"] < 1.0  # 1 -> 0.05 over 10k
        assert algo.compute_single_action(0, explore=False) in range(4)
    finally:
        algo.stop()
