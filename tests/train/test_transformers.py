"""transformers.Trainer on two ranks: a tiny GPT-2 built from a config (no download) trains
with DDP over the rank's process group, reports at each save with the checkpoint."""

from __future__ import annotations

import json
import os

import pytest

from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def test_transformers_trainer_runs_data_parallel_and_reports_its_checkpoints(
    cluster, tmp_path, out
):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import torch

    result = TorchTrainer(
        loops.transformers_loop,
        train_loop_config={"epochs": 2, "out": out},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
        torch_config=TorchConfig(timeout_s=60),
    ).fit()
    assert result.error is None, result.error
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [1.0, 2.0]
    assert history[-1]["loss"] < history[0]["loss"]
    ranks = []
    for rank in (0, 1):
        with open(os.path.join(out, f"hf_r{rank}.json")) as f:
            ranks.append(json.load(f))
    # each rank saw half of the 64 rows per epoch: 4 steps of 8, 2 epochs
    assert ranks == [{"world_size": 2, "steps": 8}] * 2
    p0 = torch.load(os.path.join(out, "hf_params_r0.pt"))
    p1 = torch.load(os.path.join(out, "hf_params_r1.pt"))
    assert torch.equal(p0, p1)  # gradients were averaged across the ranks
    assert result.checkpoint is not None
    files = os.listdir(os.path.join(result.checkpoint.path, "checkpoint"))
    assert "model.safetensors" in files and "trainer_state.json" in files


def test_prepare_trainer_needs_a_transformers_trainer() -> None:
    pytest.importorskip("transformers")
    from runtime.train.huggingface.transformers import prepare_trainer

    with pytest.raises(TypeError, match=r"transformers\.Trainer"):
        prepare_trainer(object())
