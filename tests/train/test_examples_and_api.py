"""The examples run to the end; the public names are exactly the documented ones; importing
runtime.train (or runtime.train.torch) does not import torch; the GPU path (skipped without
CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from runtime import train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run_example(name: str, tmp_path: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(tmp_path / "storage")],
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.timeout(120)
def test_train_mlp_example_trains_checkpoints_and_evaluates(tmp_path: Path) -> None:
    stdout = _run_example("train_mlp.py", tmp_path)
    assert "report 4: epoch=3" in stdout
    assert "checkpoints kept: ['checkpoint_000003', 'checkpoint_000004']" in stdout
    accuracy = float(stdout.rsplit("checkpoint (epoch", 1)[1].split(":")[1])
    assert accuracy > 0.6, stdout


@pytest.mark.timeout(120)
def test_train_tune_example_tunes_the_learning_rate(tmp_path: Path) -> None:
    stdout = _run_example("train_tune.py", tmp_path)
    assert "lr=0.005: accuracy" in stdout and "lr=0.05: accuracy" in stdout
    assert "best lr: 0.05" in stdout, stdout


def test_public_names_are_the_documented_ones() -> None:
    assert sorted(train.__all__) == [
        "Backend",
        "BackendConfig",
        "Checkpoint",
        "CheckpointConfig",
        "DataConfig",
        "DataParallelTrainer",
        "FailureConfig",
        "Result",
        "RunConfig",
        "ScalingConfig",
        "TrainContext",
        "TrainingFailedError",
        "UserCallback",
        "WorkerGroupError",
        "get_checkpoint",
        "get_context",
        "get_dataset_shard",
        "report",
    ]
    import runtime.train.torch as rt

    assert sorted(rt.__all__) == [
        "TorchCheckpoint",
        "TorchConfig",
        "TorchTrainer",
        "accelerate",
        "backward",
        "enable_reproducibility",
        "get_device",
        "get_devices",
        "prepare_data_loader",
        "prepare_model",
        "prepare_optimizer",
    ]
    assert runtime.train is train


def test_importing_train_does_not_import_torch() -> None:
    code = (
        "import sys, runtime, runtime.train, runtime.train.torch, runtime.train.xgboost, "
        "runtime.train.lightgbm, runtime.train.data_parallel_trainer; "
        "print([m for m in ('torch', 'pandas', 'sklearn', 'xgboost', 'lightgbm', 'pyarrow') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_checkpoint_round_trips_dicts_and_directories(tmp_path: Path) -> None:
    ckpt = train.Checkpoint.from_dict({"a": 1, "b": [2, 3]})
    assert ckpt.to_dict() == {"a": 1, "b": [2, 3]}
    copy = ckpt.to_directory(str(tmp_path / "copy"))
    assert train.Checkpoint.from_directory(copy).to_dict() == {"a": 1, "b": [2, 3]}
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "w.txt").write_text("x")
    plain = train.Checkpoint.from_directory(tmp_path / "plain")
    with plain.as_directory() as d:
        assert os.listdir(d) == ["w.txt"]
    with pytest.raises(ValueError, match="from_dict"):
        plain.to_dict()
    with pytest.raises(FileNotFoundError):
        train.Checkpoint.from_directory(tmp_path / "missing")


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpu_loop(config: dict[str, object]) -> None:
    import torch

    from runtime.train.torch import get_device, prepare_model

    device = get_device()
    model = prepare_model(torch.nn.Linear(4, 1))
    x = torch.randn(8, 4, device=device)
    model(x).sum().backward()
    train.report(
        {
            "device": str(device),
            "param_device": str(next(model.parameters()).device),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "backend": torch.distributed.get_backend(),
        }
    )


@pytest.mark.gpu
@pytest.mark.timeout(120)
@pytest.mark.skipif(_gpu_count() < 1, reason="needs a CUDA GPU")
def test_use_gpu_gives_each_rank_its_gpu_and_nccl(tmp_path: Path) -> None:
    workers = min(2, _gpu_count())
    runtime.init(num_cpus=workers, num_gpus=_gpu_count())
    try:
        from runtime.train.torch import TorchTrainer

        result = TorchTrainer(
            _gpu_loop,
            scaling_config=train.ScalingConfig(num_workers=workers, use_gpu=True),
            run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
        ).fit()
    finally:
        runtime.shutdown()
    assert result.error is None, result.error
    assert result.metrics["device"] == "cuda:0" and result.metrics["param_device"] == "cuda:0"
    assert result.metrics["visible"] == "0" and result.metrics["backend"] == "nccl"
