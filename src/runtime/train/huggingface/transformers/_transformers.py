"""``prepare_trainer`` and the report callback for ``transformers.Trainer``.

The torch backend has joined the rank's process group and set ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``TrainingArguments`` reads them (via
accelerate) and the Trainer runs distributed data parallel on that group, with its own
DistributedSampler.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from typing import Any

from runtime.train import _session
from runtime.train._checkpoint import Checkpoint

_hf: Any = importlib.import_module("transformers")

CHECKPOINT_NAME = "checkpoint"


class RayTrainReportCallback(_hf.TrainerCallback):  # type: ignore[misc]
    """Reports the metrics logged since the last save, at every save, with the checkpoint
    the Trainer just wrote (copied under ``checkpoint/``; rank 0 reports it)."""

    CHECKPOINT_NAME = CHECKPOINT_NAME

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, Any] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, int | float):
                self.metrics[key] = value

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        metrics = {**self.metrics, "step": state.global_step, "epoch": state.epoch}
        self.metrics = {}
        saved = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if _session.get_context().get_world_rank() != 0 or not os.path.isdir(saved):
            _session.report(metrics)
            return
        tmpdir = tempfile.mkdtemp(prefix="runtime-hf-")
        try:
            shutil.copytree(saved, os.path.join(tmpdir, CHECKPOINT_NAME))
            _session.report(metrics, checkpoint=Checkpoint.from_directory(tmpdir))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def prepare_trainer(trainer: Any) -> Any:
    """Check ``trainer`` (a ``transformers.Trainer``) runs on the worker group; returns it.

    Its datasets are torch datasets (the Trainer shards them with a DistributedSampler).
    Feeding a ``runtime.data`` shard waits for Data's tensor columns (a token sequence per
    row), which Data does not have yet.

    Raises:
        TypeError: not a ``transformers.Trainer``.
        RuntimeError: with several ranks, the Trainer's arguments are not distributed
            (they were made before the rank joined its group, or with a setting that
            forbids it).
    """
    if not isinstance(trainer, _hf.Trainer):
        raise TypeError(
            f"prepare_trainer needs a transformers.Trainer, got {type(trainer).__name__}"
        )
    world = _session.get_context().get_world_size()
    if world > 1 and trainer.args.world_size != world:
        raise RuntimeError(
            f"the Trainer's arguments see a world of {trainer.args.world_size} processes, the "
            f"worker group has {world}: build TrainingArguments inside train_loop_per_worker"
        )
    return trainer
