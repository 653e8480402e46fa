"""Tune trials and Train ranks of 2 CPUs on a 2-CPU local mesh (two processes, one host)."""

from __future__ import annotations

import os
from typing import Any

import pytest

import runtime
from runtime import train, tune


def trial(config: dict[str, Any]) -> None:
    tune.report({"score": config["x"], "pid": os.getpid()})


def rank_loop(config: dict[str, Any]) -> None:
    train.report({"rank": train.get_context().get_world_rank(), "pid": os.getpid()})


@pytest.mark.timeout(180)
def test_tune_trials_and_train_ranks_of_two_cpus_run_on_a_two_cpu_mesh(tmp_path):
    runtime.init(num_cpus=2)
    try:
        grid = tune.run(
            trial,
            config={"x": tune.grid_search([1, 2])},
            resources_per_trial={"cpu": 2},
            storage_path=str(tmp_path / "tune"),
            verbose=0,
        )
        assert sorted(r.metrics["score"] for r in grid) == [1, 2]
        assert [r.error for r in grid] == [None, None]

        pytest.importorskip("torch")
        from runtime.train.torch import TorchTrainer

        result = TorchTrainer(
            rank_loop,
            scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 2}),
            run_config=train.RunConfig(storage_path=str(tmp_path / "train"), verbose=0),
        ).fit()
        assert result.error is None
        assert result.metrics["rank"] == 0
    finally:
        runtime.shutdown()
