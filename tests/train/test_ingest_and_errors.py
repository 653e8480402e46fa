"""Bad input rejected before anything starts, a group that can never be placed, and the
warning for a rank that stops reporting."""

from __future__ import annotations

import logging

import pytest

import runtime
from runtime import train
from runtime.train.torch import TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(90)


def test_bad_input_is_rejected_before_anything_starts(cluster, tmp_path):
    with pytest.raises(TypeError, match="train_loop_per_worker"):
        TorchTrainer("not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_workers"):
        train.ScalingConfig(num_workers=0)
    with pytest.raises(TypeError, match="train_loop_config"):
        TorchTrainer(loops.slow_rank, train_loop_config=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Dataset"):
        TorchTrainer(loops.slow_rank, datasets={"train": [1, 2]})
    with pytest.raises(ValueError, match="max_failures"):
        train.FailureConfig(max_failures=-2)
    with pytest.raises(ValueError, match="num_to_keep"):
        train.CheckpointConfig(num_to_keep=0)
    with pytest.raises(RuntimeError, match="only inside train_loop_per_worker"):
        train.report({"x": 1})
    # more ranks than the cluster can ever hold: a clear error at once, not a hang
    for scaling in (
        train.ScalingConfig(num_workers=3),
        train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 3}),
        train.ScalingConfig(num_workers=1, use_gpu=True),
    ):
        trainer = TorchTrainer(
            loops.slow_rank,
            scaling_config=scaling,
            run_config=train.RunConfig(storage_path=str(tmp_path)),
        )
        with pytest.raises(train.WorkerGroupError, match="cluster"):
            trainer.fit()
    # nothing was left reserved
    assert runtime.available_resources().get("CPU") == 2


def test_a_rank_that_stops_reporting_is_named_in_a_warning(cluster, tmp_path, caplog):
    trainer = train.DataParallelTrainer(
        loops.slow_rank,
        train_loop_config={"quiet_s": 3.0},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            storage_path=str(tmp_path),
            failure_config=train.FailureConfig(report_timeout_s=1.0),
            verbose=0,
        ),
    )
    with caplog.at_level(logging.WARNING, logger="runtime.train"):
        result = trainer.fit()
    assert result.error is None
    hung = [r.getMessage() for r in caplog.records if "has not reported" in r.getMessage()]
    assert hung, caplog.text
    assert all(m.startswith("rank 1 (node ") for m in hung)
    assert "pid" in hung[0] and "on host" in hung[0] and " s " in hung[0]
