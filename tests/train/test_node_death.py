"""On a fresh 3-node mesh per test: a rank's process is killed with SIGKILL mid-run (the
group is torn down, placed again and resumes from the latest
checkpoint), and dataset shards (the third node's CPU runs the data tasks)."""

from __future__ import annotations

import json
import os

import pytest

import runtime
from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)


def test_killed_rank_process_restarts_group_from_checkpoint(mesh, out, tmp_path):
    trainer = TorchTrainer(
        loops.ddp_digits,
        train_loop_config={"out": out, "epochs": 3, "kill_at": 0},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            name="killed",
            storage_path=str(tmp_path),
            failure_config=train.FailureConfig(max_failures=1),
            verbose=0,
        ),
        torch_config=TorchConfig(timeout_s=30),
    )
    first_pids = set()
    result = trainer.fit()
    assert result.error is None, result.error
    assert os.path.exists(os.path.join(out, "failed_once"))
    # epoch 0 ran once; the restarted group loaded the epoch-0 checkpoint and went on at 1
    assert [(m["epoch"], m["start"]) for m in result.metrics_history] == [(0, 0), (1, 1), (2, 1)]
    for r in (0, 1):
        with open(os.path.join(out, f"ctx_r{r}.json")) as f:
            first_pids.add(json.load(f)["pid"])
    assert len(first_pids) == 2  # the second group again had one process per rank
    assert result.checkpoint is not None and result.checkpoint.path.endswith("checkpoint_000003")


def test_train_shards_are_disjoint_and_cover_each_epoch_valid_is_whole(mesh, out, tmp_path):
    # Materialized before the ranks hold their CPUs: core does not yet run 1-CPU tasks once
    # CPU-holding actors exist (reported to core), which a lazy pipeline would need here.
    ds = runtime.data.range(200, override_num_blocks=10).materialize()
    valid = runtime.data.range(30).materialize()
    trainer = train.DataParallelTrainer(
        loops.read_shards,
        train_loop_config={"out": out, "epochs": 2},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
        datasets={"train": ds, "valid": valid},
    )
    result = trainer.fit()
    assert result.error is None, result.error
    shards = []
    for r in (0, 1):
        with open(os.path.join(out, f"shard_r{r}.json")) as f:
            shards.append(json.load(f))
    for epoch in range(2):
        a, b = shards[0]["epochs"][epoch], shards[1]["epochs"][epoch]
        assert a and b, "both ranks got rows"
        assert not set(a) & set(b), "shards overlap"
        assert sorted(a + b) == list(range(200)), "shards do not cover the dataset"
        assert len(a) == len(b) == 100  # equal=True by default keeps DDP ranks in step
    assert [sorted(s["valid"]) for s in shards] == [list(range(30))] * 2
    assert [s["torch_rows"] for s in shards] == [100, 100]
