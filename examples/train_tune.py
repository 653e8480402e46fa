"""Tuning a trainer: `tune.Tuner(trainer)` runs one 2-rank worker group per trial, here over
two learning rates of the digits MLP from `train_mlp.py`.

Run it with `python examples/train_tune.py`. The trial itself only drives its group, so it
asks for no CPU (`with_resources({"cpu": 0})`); the ranks hold the CPUs.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_mlp import train_loop

import runtime
from runtime import train, tune
from runtime.train.torch import TorchConfig, TorchTrainer


def main() -> None:
    storage = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="train-tune-")
    runtime.init(num_cpus=2)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"epochs": 2},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=os.path.join(storage, "train")),
        torch_config=TorchConfig(timeout_s=60),
    )
    grid = (
        tune.Tuner(
            trainer,
            param_space={"train_loop_config": {"lr": tune.grid_search([0.005, 0.05])}},
            tune_config=tune.TuneConfig(metric="accuracy", mode="max", max_concurrent_trials=1),
            run_config=tune.RunConfig(name="digits_lr", storage_path=storage),
        )
        .with_resources({"cpu": 0})
        .fit()
    )
    for result in grid:
        lr = result.config["train_loop_config"]["lr"]
        print(f"lr={lr}: accuracy {result.metrics['accuracy']:.3f} after 2 epochs")
    best = grid.get_best_result()
    print(f"best lr: {best.config['train_loop_config']['lr']}")
    runtime.shutdown()


if __name__ == "__main__":
    main()
