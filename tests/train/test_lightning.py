"""PyTorch Lightning on the worker group: RayDDPStrategy on the rank's process group,
RayLightningEnvironment's ranks, a report with a checkpoint per epoch, and resuming a run
from that checkpoint."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def _fit(tmp_path, out, epochs, name, resume=None):  # type: ignore[no-untyped-def]
    return TorchTrainer(
        loops.lightning_loop,
        train_loop_config={"epochs": epochs, "out": out},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
        torch_config=TorchConfig(timeout_s=60),
        resume_from_checkpoint=resume,
    ).fit()


def test_lightning_trains_with_ray_ddp_strategy_and_resumes_from_its_checkpoint(
    cluster, tmp_path, out
):
    pytest.importorskip("lightning")
    result = _fit(tmp_path, out, 3, "first")
    assert result.error is None, result.error
    history = result.metrics_history
    assert [m["epoch"] for m in history] == [0, 1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.5
    for rank in (0, 1):
        with open(os.path.join(out, f"world_r{rank}.json")) as f:
            # one torch thread per rank (its one CPU): Lightning would set every core of the
            # host for each rank where OMP_NUM_THREADS is unset (Ray sets it too)
            assert json.load(f) == {"world_size": 2, "rank": rank, "threads": 1}
    assert result.checkpoint is not None
    assert os.listdir(result.checkpoint.path) == ["checkpoint.ckpt"]

    resumed = _fit(tmp_path, out, 5, "resumed", resume=result.checkpoint)
    assert resumed.error is None, resumed.error
    assert [m["epoch"] for m in resumed.metrics_history] == [3, 4]
    assert resumed.metrics["train_loss"] <= history[-1]["train_loss"]


def test_prepare_trainer_refuses_a_trainer_lightning_would_distribute_itself() -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from runtime.train.lightning import prepare_trainer

    with warnings.catch_warnings():  # Lightning's hints about this machine (srun, workers)
        warnings.simplefilter("ignore")
        plain = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    with pytest.raises(RuntimeError, match="RayDDPStrategy"):
        prepare_trainer(plain)
    with pytest.raises(TypeError, match="lightning Trainer"):
        prepare_trainer(object())
