"""TorchTrainer with 2 ranks on a real 2-node mesh: DDP really synchronises gradients, the
loss falls, checkpoints persist and reload, and a failed rank restarts the group from the
latest checkpoint."""

from __future__ import annotations

import json
import os

import pytest

from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def _trainer(out: str, storage: str, **config: object) -> TorchTrainer:
    failure = train.FailureConfig(max_failures=int(config.pop("max_failures", 0)))  # type: ignore[call-overload]
    return TorchTrainer(
        loops.ddp_digits,
        train_loop_config={"out": out, **config},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            name="digits",
            storage_path=storage,
            checkpoint_config=train.CheckpointConfig(num_to_keep=2),
            failure_config=failure,
            verbose=0,
        ),
        torch_config=TorchConfig(timeout_s=30),
    )


def test_two_ranks_train_in_step_and_checkpoint_reloads(cluster, out, tmp_path):
    import torch

    result = _trainer(out, str(tmp_path / "storage"), epochs=3).fit()
    assert result.error is None
    # every rank in its own node process, with its own rank and one torch thread
    ctx = []
    for r in (0, 1):
        with open(os.path.join(out, f"ctx_r{r}.json")) as f:
            ctx.append(json.load(f))
    assert [c["world_rank"] for c in ctx] == [0, 1]
    assert {c["world_size"] for c in ctx} == {2}
    assert ctx[0]["node_id"] != ctx[1]["node_id"] and ctx[0]["pid"] != ctx[1]["pid"]
    assert [c["local_rank"] for c in ctx] == [0, 1] and {c["node_rank"] for c in ctx} == {0}
    assert {c["threads"] for c in ctx} == {1} and {c["device"] for c in ctx} == {"cpu"}
    # the distributed sampler halves each rank's batches (1797 rows, 64 per batch)
    assert {c["batches"] for c in ctx} == {15}
    # gradients are averaged across ranks: parameters are identical after every epoch
    for epoch in range(3):
        p0 = torch.load(os.path.join(out, f"params_r0_e{epoch}.pt"))
        p1 = torch.load(os.path.join(out, f"params_r1_e{epoch}.pt"))
        assert torch.equal(p0, p1), f"ranks diverged at epoch {epoch}"
    # rank 0's metrics are kept, one per report; the loss falls
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [0, 1, 2]
    assert {m["rank"] for m in history} == {0}
    assert history[-1]["loss"] < history[0]["loss"] * 0.8
    assert result.metrics == history[-1]
    assert list(result.metrics_dataframe["epoch"]) == [0, 1, 2]
    # checkpoints persisted once each under storage/name, keeping the latest 2
    assert result.path == str(tmp_path / "storage" / "digits")
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_"))
    assert kept == ["checkpoint_000002", "checkpoint_000003"]
    assert result.checkpoint is not None
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000003")
    assert os.listdir(result.checkpoint.path) == ["model.pt"]
    # the checkpoint reloads into a fresh model and reproduces its predictions
    model = loops.make_model()
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "model.pt"))
    assert state["epoch"] == 2
    model.load_state_dict(state["model"])
    x, _ = loops.digits()
    with torch.no_grad():
        assert torch.allclose(model(x[:50]), torch.load(os.path.join(out, "predictions.pt")))


def test_a_rank_that_raises_restarts_the_group_from_the_latest_checkpoint(cluster, out, tmp_path):
    result = _trainer(out, str(tmp_path), epochs=3, fail_at=1, max_failures=1).fit()
    assert result.error is None
    assert os.path.exists(os.path.join(out, "failed_once"))
    # epochs 0 and 1 ran, the group restarted from the epoch-1 checkpoint and ran epoch 2
    assert [(m["epoch"], m["start"]) for m in result.metrics_history] == [(0, 0), (1, 0), (2, 2)]
    assert result.checkpoint is not None and result.checkpoint.path.endswith("checkpoint_000003")


def test_failures_past_max_failures_are_in_the_result(cluster, tmp_path):
    trainer = TorchTrainer(
        loops.always_fails,
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            storage_path=str(tmp_path), failure_config=train.FailureConfig(max_failures=1)
        ),
        torch_config=TorchConfig(timeout_s=30),
    )
    result = trainer.fit()
    assert isinstance(result.error, train.TrainingFailedError)
    assert "rank 1" in str(result.error) and "rank 1 always fails" in str(result.error)
    assert "2 time(s)" in str(result.error)
    assert isinstance(result.error.__cause__, ValueError)
    assert result.metrics == {"step": 0}
