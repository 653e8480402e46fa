"""What Ray Train programs use that the first version lacked: stop criteria, named
checkpoint folders, the workers' runtime_env, callbacks, checkpoint_frequency on loop
trainers, Ray's module paths, and the torch helpers (devices, reproducibility,
TorchCheckpoint) — each by its behaviour."""

from __future__ import annotations

import logging
import os

import pytest

from runtime import train

from . import loops

pytestmark = pytest.mark.timeout(120)


def _run(storage: str, loop=loops.counting, **kwargs: object) -> train.Result:
    config = kwargs.pop("config", {})
    run_config = train.RunConfig(storage_path=storage, verbose=0, **kwargs)  # type: ignore[arg-type]
    return train.DataParallelTrainer(
        loop,
        train_loop_config=config,  # type: ignore[arg-type]
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=run_config,
    ).fit()


def test_stop_criteria_end_the_run_after_the_report_that_meets_them(cluster, tmp_path):
    result = _run(str(tmp_path), name="by-dict", stop={"training_iteration": 2})
    assert result.error is None
    assert [m["step"] for m in result.metrics_history] == [0, 1]
    calls = []

    def by_score(trial_id: str, metrics: dict[str, object]) -> bool:
        calls.append((trial_id, metrics["step"]))
        return metrics["score"] >= 3  # type: ignore[operator]

    result = _run(str(tmp_path), name="by-callable", stop=by_score)
    assert [m["step"] for m in result.metrics_history] == [0, 1, 2, 3]
    assert calls == [("by-callable", s) for s in range(4)]
    assert result.checkpoint is not None and result.checkpoint.to_dict()["step"] == 3
    with pytest.raises(TypeError, match="stop"):
        train.RunConfig(stop=3)


def test_checkpoint_dir_name_names_the_persisted_folder(cluster, tmp_path):
    result = _run(
        str(tmp_path),
        name="named",
        config={"steps": 3, "names": "epoch"},
        checkpoint_config=train.CheckpointConfig(num_to_keep=2),
    )
    assert result.error is None
    folders = sorted(d for d in os.listdir(result.path) if os.path.isdir(f"{result.path}/{d}"))
    assert folders == ["epoch-1", "epoch-2"]
    assert result.checkpoint is not None
    assert os.path.basename(result.checkpoint.path) == "epoch-2"
    # both ranks' files went into the one folder; one name, so one of them
    assert result.checkpoint.to_dict()["step"] == 2
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="checkpoint_dir_name"):
            train.report({"x": 1}, checkpoint_dir_name=bad)


def test_worker_runtime_env_vars_stay_set_while_the_loop_runs(cluster, tmp_path):
    result = _run(
        str(tmp_path),
        name="env",
        config={"steps": 2, "checkpoint": False},
        worker_runtime_env={"env_vars": {"TRAIN_TEST_FLAG": "on"}},
    )
    assert result.error is None
    assert [m["env"] for m in result.metrics_history] == ["on", "on"]
    with pytest.raises(TypeError, match="worker_runtime_env"):
        train.RunConfig(worker_runtime_env=["env_vars"])  # type: ignore[arg-type]


class Recorder(train.UserCallback):
    def __init__(self) -> None:
        self.reports: list[tuple[list[dict[str, object]], object]] = []
        self.errors: list[dict[int, Exception]] = []

    def after_report(self, run_context, metrics, checkpoint):
        self.reports.append(([m["step"] for m in metrics], checkpoint))

    def after_exception(self, run_context, worker_exceptions):
        self.errors.append(worker_exceptions)


def test_user_callback_sees_every_ranks_metrics_and_each_failure(cluster, tmp_path, out):
    recorder = Recorder()
    result = _run(
        str(tmp_path),
        name="callbacks",
        config={"steps": 3, "fail_at": 1, "out": out},
        callbacks=[recorder],
        failure_config=train.FailureConfig(max_failures=1),
    )
    assert result.error is None
    assert [steps for steps, _ in recorder.reports] == [[0, 0], [1, 1], [2, 2]]
    assert all(isinstance(c, train.Checkpoint) for _, c in recorder.reports)
    assert len(recorder.errors) == 1 and list(recorder.errors[0]) == [1]
    assert "injected failure" in str(recorder.errors[0][1])


def test_checkpoint_frequency_on_a_loop_trainer_is_accepted_with_a_warning(
    cluster, tmp_path, caplog
):
    config = train.CheckpointConfig(checkpoint_frequency=1, checkpoint_at_end=True)
    with caplog.at_level(logging.WARNING, logger="runtime.train"):
        result = _run(str(tmp_path), name="freq", config={"steps": 1}, checkpoint_config=config)
    assert result.error is None
    assert "checkpoint_frequency" in caplog.text and "ignored" in caplog.text
    with pytest.raises(ValueError, match="checkpoint_frequency"):
        train.CheckpointConfig(checkpoint_frequency=-1)
    with pytest.raises(TypeError, match="checkpoint_at_end"):
        train.CheckpointConfig(checkpoint_at_end="yes")  # type: ignore[arg-type]


def test_rays_module_paths_give_the_same_objects() -> None:
    from runtime.train.data_parallel_trainer import DataParallelTrainer
    from runtime.train.torch import TorchConfig, TorchTrainer, get_devices
    from runtime.train.torch.config import TorchConfig as TorchConfig2
    from runtime.train.torch.torch_trainer import TorchTrainer as TorchTrainer2
    from runtime.train.torch.train_loop_utils import get_devices as get_devices2

    assert DataParallelTrainer is train.DataParallelTrainer
    assert TorchTrainer2 is TorchTrainer and TorchConfig2 is TorchConfig
    assert get_devices2 is get_devices


def test_enable_reproducibility_repeats_a_run_exactly(cluster, tmp_path):
    first = _run(str(tmp_path), loop=loops.reproducible, name="r1", config={"seed": 3})
    again = _run(str(tmp_path), loop=loops.reproducible, name="r2", config={"seed": 3})
    other = _run(str(tmp_path), loop=loops.reproducible, name="r3", config={"seed": 4})
    assert first.error is None and again.error is None and other.error is None
    assert first.metrics["deterministic"] is True
    assert first.metrics["devices"] == ["cpu"]
    assert first.metrics["params"] == again.metrics["params"]
    assert first.metrics["params"] != other.metrics["params"]


def test_torch_checkpoint_round_trips_a_state_dict_and_a_model() -> None:
    import torch

    from runtime.train.torch import TorchCheckpoint, get_device, get_devices

    model = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # as DDP names them
    ckpt = TorchCheckpoint.from_state_dict(wrapped)
    assert isinstance(ckpt, train.Checkpoint) and os.listdir(ckpt.path) == ["model.pt"]
    restored = ckpt.get_model(torch.nn.Linear(3, 2))
    assert torch.equal(restored(x), model(x))
    with pytest.raises(ValueError, match="state dict"):
        ckpt.get_model()
    whole = TorchCheckpoint.from_model(model).get_model()
    assert torch.equal(whole(x), model(x))
    # outside a rank, the devices are the process's own
    assert get_devices() == [torch.device("cpu")] and get_device() == torch.device("cpu")
