"""Chaos under a 2-rank DDP run with checkpoints, on a fresh 3-node mesh per test: the test
SIGKILLs one rank's own process, or the node process that started it, from outside while the
rank waits after its epoch-1 checkpoint. The group restarts from that checkpoint (no epoch
redone) and the loss keeps falling across the restart."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time

import pytest

from runtime import train
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(180)


def _run_and_kill(out: str, tmp_path, victim: str) -> tuple[train.Result, dict[str, int]]:  # type: ignore[no-untyped-def]
    trainer = TorchTrainer(
        loops.ddp_digits,
        train_loop_config={"out": out, "epochs": 4, "kill_at": 1, "kill": "outside"},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            name="chaos",
            storage_path=str(tmp_path),
            failure_config=train.FailureConfig(max_failures=1),
            verbose=0,
        ),
        torch_config=TorchConfig(timeout_s=30),
    )
    box: list[object] = []
    runner = threading.Thread(target=lambda: box.append(trainer.fit()), daemon=True)
    runner.start()
    deadline = time.monotonic() + 90
    doomed = os.path.join(out, "doomed")
    while not os.path.exists(doomed):
        assert runner.is_alive() and time.monotonic() < deadline, "rank 1 never got to epoch 1"
        time.sleep(0.05)
    with open(os.path.join(out, "ctx_r1.json")) as f:
        first = json.load(f)
    os.kill(first[victim], signal.SIGKILL)
    runner.join(100)
    assert not runner.is_alive(), "fit() did not return after the kill"
    result = box[0]
    assert isinstance(result, train.Result)
    return result, first


def _check_resumed(result: train.Result) -> list[float]:
    assert result.error is None, result.error
    # epochs 0 and 1 ran once; the new group loaded the epoch-1 checkpoint and went on at 2
    history = [(m["epoch"], m["start"]) for m in result.metrics_history]
    assert history == [(0, 0), (1, 0), (2, 2), (3, 2)], history
    losses = [float(m["loss"]) for m in result.metrics_history]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert result.checkpoint is not None
    assert result.checkpoint.path.endswith("checkpoint_000004")
    return losses


def test_a_killed_rank_process_resumes_from_the_checkpoint_and_the_loss_keeps_falling(
    mesh, out, tmp_path
):
    result, first = _run_and_kill(out, tmp_path, "pid")
    _check_resumed(result)
    with open(os.path.join(out, "ctx_r1.json")) as f:
        second = json.load(f)
    assert second["pid"] != first["pid"]
    os.kill(first["ppid"], 0)  # only the rank's process died: its node still runs


def test_a_killed_node_resumes_from_the_checkpoint_and_the_loss_keeps_falling(mesh, out, tmp_path):
    result, first = _run_and_kill(out, tmp_path, "ppid")
    _check_resumed(result)
    with open(os.path.join(out, "ctx_r1.json")) as f:
        second = json.load(f)
    ranks_nodes = set()
    for rank in (0, 1):
        with open(os.path.join(out, f"ctx_r{rank}.json")) as f:
            ranks_nodes.add(json.load(f)["node_id"])
    assert first["node_id"] not in ranks_nodes  # placed on the two surviving nodes
    assert second["ppid"] != first["ppid"]
