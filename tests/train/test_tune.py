"""A trainer is a Tune trainable: one worker group per trial, reports and checkpoints reach
Tune as results."""

from __future__ import annotations

import os

import pytest

from runtime import train, tune
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def test_tuner_over_two_learning_rates_runs_a_worker_group_per_trial(cluster, tmp_path):
    trainer = TorchTrainer(
        loops.linear,
        train_loop_config={"steps": 3},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path / "train")),
        torch_config=TorchConfig(timeout_s=30),
    )
    tuner = tune.Tuner(
        trainer,
        param_space={"train_loop_config": {"lr": tune.grid_search([0.001, 0.05])}},
        tune_config=tune.TuneConfig(metric="loss", mode="min", max_concurrent_trials=1),
        run_config=tune.RunConfig(name="lrs", storage_path=str(tmp_path / "tune")),
    ).with_resources({"cpu": 0})  # the trial only drives the group; its ranks hold the CPUs
    grid = tuner.fit()
    assert len(grid) == 2 and not grid.errors
    by_lr = {r.config["train_loop_config"]["lr"]: r for r in grid}
    assert set(by_lr) == {0.001, 0.05}
    for result in grid:
        assert result.metrics["step"] == 2 and result.metrics["training_iteration"] == 3
        assert result.checkpoint is not None
        assert os.path.isdir(result.checkpoint.path)
        assert train.Checkpoint(result.checkpoint.path).to_dict() == {"step": 2}
    # the larger learning rate fits the linear target faster
    assert by_lr[0.05].metrics["loss"] < by_lr[0.001].metrics["loss"]
    assert grid.get_best_result().config["train_loop_config"]["lr"] == 0.05


def test_param_space_keys_that_are_not_trainer_arguments_are_rejected(cluster, tmp_path):
    trainer = TorchTrainer(loops.linear, run_config=train.RunConfig(storage_path=str(tmp_path)))
    with pytest.raises(ValueError, match="train_loop_config"):
        trainer._with_param_space({"lr": 0.1})
