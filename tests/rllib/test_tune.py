"""RLlib algorithms as Tune trainables: by name, and from a config object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime import tune
from runtime.rllib import Algorithm, PPOConfig

pytestmark = pytest.mark.usefixtures("cluster")


def small_ppo() -> PPOConfig:
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
    return config.training(train_batch_size=200, num_epochs=1)


@pytest.mark.timeout(240)
def test_tune_runs_ppo_by_name_with_flat_stop_keys(tmp_path: Path) -> None:
    results = tune.run(
        "PPO",
        config=small_ppo().to_dict(),
        stop={"training_iteration": 2},
        metric="env_runners/episode_return_mean",
        mode="max",
        storage_path=str(tmp_path),
        verbose=0,
    )
    assert len(results) == 1
    result = results[0]
    assert result.error is None
    assert result.metrics["training_iteration"] == 2
    assert result.metrics["num_env_steps_sampled_lifetime"] == 400
    assert result.metrics["env_runners/episode_return_mean"] > 0


@pytest.mark.timeout(240)
def test_tuner_takes_a_config_object_and_checkpoints_restore(tmp_path: Path) -> None:
    tuner = tune.Tuner(
        small_ppo(),
        param_space={"lr": tune.grid_search([1e-3, 3e-4])},
        tune_config=tune.TuneConfig(metric="env_runners/episode_return_mean", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            stop={"training_iteration": 1},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
        ),
    )
    grid = tuner.fit()
    assert len(grid) == 2
    assert not grid.errors
    lrs = sorted(r.config["lr"] for r in grid)
    assert lrs == [3e-4, 1e-3]
    best: Any = grid.get_best_result()
    assert best.checkpoint is not None
    algo = Algorithm.from_checkpoint(best.checkpoint.path)
    try:
        assert algo.config.lr == best.config["lr"]
        assert algo.iteration == 1
        assert algo.config.env == "CartPole-v1"  # the config object's settings came along
    finally:
        algo.stop()
