"""CQL: a SAC policy records its transitions as Parquet; CQL learns a continuous-control
task from them offline (behaviour cloning first, then conservative Q-learning) and is
evaluated online; its critics rank the data's actions above random ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.rllib import CQL, CQLConfig, PPOConfig, SACConfig
from runtime.rllib.cql import load_transitions
from tests.rllib.envs import PointToTarget

pytestmark = pytest.mark.usefixtures("cluster")

SMALL = {"fcnet_hiddens": [64, 64]}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1024 transitions of a SAC policy after 1280 env steps of training (exploring)."""
    path = tmp_path_factory.mktemp("cql") / "point"
    algo = (
        SACConfig()
        .environment(PointToTarget)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
        .training(num_steps_sampled_before_learning_starts=200)
        .reporting(min_sample_timesteps_per_iteration=200)
        .rl_module(model_config=SMALL)
        .debugging(seed=0)
        .build()
    )
    try:
        for _ in range(5):
            algo.train()
        algo.config.offline_data(output=str(path))  # record from now on
        for _ in range(4):
            algo.train()
    finally:
        algo.stop()
    return path


@pytest.mark.timeout(300)
def test_cql_learns_a_continuous_task_from_a_trained_policys_recording(recorded: Path) -> None:
    data = load_transitions(str(recorded), gamma=0.99)
    assert data["obs"].shape == (1024, 2) and data["actions"].shape == (1024, 1)
    config = (
        CQLConfig()
        .environment(PointToTarget)
        .offline_data(input_=str(recorded), dataset_num_iters_per_learner=50)
        .training(bc_iters=50)
        .rl_module(model_config=SMALL)
        .evaluation(evaluation_duration=10)
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        assert isinstance(algo, CQL)
        before = algo.evaluate()["env_runners"]["episode_return_mean"]
        for _ in range(4):  # 50 updates of behaviour cloning, then 150 of CQL
            result = algo.train()
        after = algo.evaluate()["env_runners"]["episode_return_mean"]
        # Random actions return about -8, the initial greedy policy about -5.7; going
        # straight to the target about -1.
        assert after >= -1.5 and after > before + 2, (before, after)
        stats = result["learners"]["default_policy"]
        assert stats["num_updates"] == 200
        assert np.isfinite(stats["cql_loss"]) and np.isfinite(stats["qf_loss"])
        assert result["num_env_steps_sampled_lifetime"] == 0  # learned from data only

        # Conservative critics: Q of the data's actions above Q of uniform random actions.
        module = algo.get_module()
        obs = torch.as_tensor(data["obs"])
        with torch.no_grad():
            q_data = module.q(module.q1, obs, module.normalize(torch.as_tensor(data["actions"])))
            q_rand = module.q(module.q1, obs, torch.rand(len(obs), 1) * 2 - 1)
        assert float(q_data.mean()) > float(q_rand.mean())
    finally:
        algo.stop()


def test_cql_needs_its_data_and_refuses_what_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="offline_data"):
        CQLConfig().environment(PointToTarget).build()
    with pytest.raises(NotImplementedError, match="lagrangian"):
        CQLConfig().training(lagrangian=True)
    with pytest.raises(NotImplementedError, match="dataset_num_iters_per_learner"):
        PPOConfig().environment("CartPole-v1").offline_data(dataset_num_iters_per_learner=5).build()
