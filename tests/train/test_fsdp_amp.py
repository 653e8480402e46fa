"""FSDP2 through prepare_model(parallel_strategy="fsdp") on CPU with gloo: parameters are
sharded across the ranks, the loss falls, and the gathered full state dict a rank
checkpoints loads into a plain model. AMP: accelerate(amp=True) runs forwards under
autocast (bfloat16 on CPU) and training still converges."""

from __future__ import annotations

import os

import pytest

from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def _fit(loop, tmp_path, **config):  # type: ignore[no-untyped-def]
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
        torch_config=TorchConfig(timeout_s=60),
    ).fit()


def test_fsdp_shards_parameters_across_ranks_and_trains(cluster, tmp_path):
    import torch

    result = _fit(loops.fsdp_regression, tmp_path, steps=40)
    assert result.error is None, result.error
    history = result.metrics_history
    assert all(m["sharded"] for m in history)
    # 4*32 + 32 + 32 + 1 = 193 parameters; each rank holds about half
    assert history[0]["local_numel"] < 193 * 0.75
    assert history[-1]["loss"] < history[0]["loss"] * 0.2
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "model.pt"))
    plain = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    plain.load_state_dict(state)  # full tensors, plain names
    x = torch.randn(256, 4)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    with torch.no_grad():
        mse = float(((plain(x).squeeze(-1) - x @ w) ** 2).mean())
    assert mse < history[0]["loss"] * 0.2


def test_accelerate_amp_runs_forwards_in_bfloat16_on_cpu_and_still_trains(cluster, tmp_path):
    result = _fit(loops.amp_loop, tmp_path)
    assert result.error is None, result.error
    assert result.metrics["dtype"] == "torch.bfloat16"
    assert result.metrics["last"] < result.metrics["first"] * 0.5


def test_an_unknown_parallel_strategy_is_a_value_error() -> None:
    import torch

    from runtime.train.torch import prepare_model

    with pytest.raises(ValueError, match="parallel_strategy"):
        prepare_model(torch.nn.Linear(2, 1), parallel_strategy="deepspeed")
