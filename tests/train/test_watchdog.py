"""The watchdog names the rank that hangs a collective: by its stack (not in
torch.distributed while the others wait there), with its host and pid, both while the run
is quiet (report_timeout_s) and in the error when the collective times out."""

from __future__ import annotations

import logging

import pytest

from runtime import train
from runtime.train._watchdog import diagnose, in_collective
from runtime.train.torch import TorchConfig, TorchTrainer

from . import loops

pytestmark = pytest.mark.timeout(120)

WAITING = """  File "/x/loop.py", line 3, in loop
    dist.all_reduce(t)
  File "/venv/torch/distributed/c10d_logger.py", line 81, in wrapper
    return func(*args, **kwargs)
  File "/venv/torch/distributed/distributed_c10d.py", line 2810, in all_reduce
    work.wait()
"""
SLEEPING = """  File "/x/loop.py", line 2, in loop
    time.sleep(30)
"""


def test_stacks_inside_torch_distributed_are_waiting_in_a_collective() -> None:
    assert in_collective(WAITING) and not in_collective(SLEEPING) and not in_collective("")
    importing = SLEEPING + '  File "<frozen importlib._bootstrap>", line 1, in _find_and_load\n'
    importing += '  File "/venv/torch/distributed/__init__.py", line 9, in <module>\n'
    assert not in_collective(importing)
    message = diagnose(
        [0, 1],
        {0: WAITING, 1: SLEEPING},
        {0: "rank 0 (node a, pid 1)", 1: "rank 1 (node b, pid 2)"},
        {0: "h0", 1: "h1"},
        {0: 5.0, 1: 5.0},
        2.0,
    )
    assert message.startswith("rank 1 (node b, pid 2) on host h1 has not reported for 5.0 s")
    assert "is not in a collective while rank(s) 0 wait in one" in message
    assert "time.sleep(30)" in message and "rank 0 (node a, pid 1) waits in:" in message


def test_a_quiet_rank_outside_the_collective_is_named_with_its_stack(cluster, tmp_path, caplog):
    trainer = TorchTrainer(
        loops.hangs_a_collective,
        train_loop_config={"sleep_s": 5.0},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            storage_path=str(tmp_path),
            failure_config=train.FailureConfig(report_timeout_s=1.5),
            verbose=0,
        ),
        torch_config=TorchConfig(timeout_s=60),
    )
    with caplog.at_level(logging.WARNING, logger="runtime.train"):
        result = trainer.fit()
    assert result.error is None and result.metrics == {"sum": 2.0}
    # (while rank 0 still imports torch, the watchdog may first name rank 0 as the one
    # rank 1 waits for at the rendezvous; once rank 0 is in the all-reduce, rank 1 is named)
    named = [
        m
        for r in caplog.records
        if "hangs them" in (m := r.getMessage())
        and m.startswith("rank 1 (node ")
        and "all_reduce" in m
    ]
    assert named, caplog.text
    assert "on host" in named[0] and "pid" in named[0]
    assert "while rank(s) 0 wait in one" in named[0]
    assert "time.sleep(config" in named[0]  # rank 1's own stack, down to the line
    assert "rank 0 (node" in named[0] and "all_reduce" in named[0]


def test_a_collective_timeout_error_names_the_rank_that_never_joined(cluster, tmp_path):
    trainer = TorchTrainer(
        loops.hangs_a_collective,
        train_loop_config={"sleep_s": 8.0},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path), verbose=0),
        torch_config=TorchConfig(timeout_s=2),
    )
    result = trainer.fit()
    assert isinstance(result.error, train.TrainingFailedError)
    text = str(result.error)
    assert "rank 0 (node" in text  # the rank whose all_reduce timed out
    assert "rank 1 (node " in text and "was not in a collective when rank 0" in text
    assert "time.sleep(config" in text
