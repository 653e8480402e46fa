"""RLlib algorithms as Tune trainables: by name, and from a config object."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.timeout(300)
def test_population_based_training_clones_ppo_checkpoints(tmp_path: Path) -> None:
    # Ranking trials by their learning rate makes the lr=1e-4 trial the bottom one for sure,
    # so PBT clones the top trial's PPO checkpoint into it.
    pbt = tune.PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=1,
        hyperparam_mutations={"lr": [1e-4, 3e-4, 1e-3]},
        quantile_fraction=0.5,
        seed=0,
    )
    results = tune.run(
        "PPO",
        config={**small_ppo().to_dict(), "lr": tune.grid_search([1e-4, 1e-3])},
        # Long enough that the two trials overlap although one actor starts later (a trial
        # actor's start, importing torch, can take seconds on a loaded machine).
        stop={"training_iteration": 150},
        metric="learners/default_policy/curr_lr",
        mode="max",
        scheduler=pbt,
        storage_path=str(tmp_path),
        verbose=0,
        raise_on_failed_trial=False,  # the assertion below shows the errors
    )
    assert len(results) == 2
    assert not results.errors, [str(e) for e in results.errors]
    for result in results:
        assert result.metrics["training_iteration"] == 150
        # The lifetime counter came through every checkpoint restore: 150 iterations x 200.
        assert result.metrics["num_env_steps_sampled_lifetime"] == 30_000
    cloned = list(tmp_path.glob("*/*/checkpoint_pbt_*/algorithm_state.pkl"))
    assert cloned, (
        "PBT cloned no PPO checkpoint",
        pbt.num_perturbations,
        [
            {k: v for k, v in r.metrics.items() if "time" in k or k in ("pid", "date")}
            for r in results
        ],
    )
    algo = Algorithm.from_checkpoint(cloned[0].parent)
    try:
        assert algo.iteration >= 1
    finally:
        algo.stop()


def test_every_algorithm_name_resolves_before_rllib_is_imported() -> None:
    # A fresh process: tune.run("SAC") must not depend on someone importing runtime.rllib.
    code = (
        "import sys\n"
        "from runtime.libs import trainable\n"
        "assert 'runtime.rllib' not in sys.modules\n"
        "print(sorted(trainable.resolve_trainable(n).__name__ for n in "
        "('PPO', 'DQN', 'SAC', 'APPO', 'IMPALA', 'BC', 'MARWIL')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == str(
        sorted(["PPO", "DQN", "SAC", "APPO", "IMPALA", "BC", "MARWIL"])
    )
