"""The Lightning strategy, environment, report callback and ``prepare_trainer``.

A rank has already joined ``torch.distributed`` (the torch backend did it) when the user's
loop builds ``pl.Trainer``; Lightning, told by :class:`RayLightningEnvironment` that the
processes were created outside it, finds the process group initialised and uses it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from typing import Any

from runtime.train import _session
from runtime.train._checkpoint import Checkpoint
from runtime.train.torch._prepare import get_device


def _lightning() -> Any:
    """``lightning.pytorch``, or the older ``pytorch_lightning`` where only it is installed."""
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        return importlib.import_module("pytorch_lightning")


pl: Any = _lightning()
ClusterEnvironment: Any = importlib.import_module(
    f"{pl.__name__}.plugins.environments"
).ClusterEnvironment
DDPStrategy: Any = pl.strategies.DDPStrategy
FSDPStrategy: Any = pl.strategies.FSDPStrategy


class RayLightningEnvironment(ClusterEnvironment):  # type: ignore[misc]
    """Lightning's view of the worker group: ranks from ``train.get_context()``."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))

    @staticmethod
    def detect() -> bool:
        return True

    def world_size(self) -> int:
        return _session.get_context().get_world_size()

    def set_world_size(self, size: int) -> None:
        """Fixed by the worker group; Lightning's value is ignored."""

    def global_rank(self) -> int:
        return _session.get_context().get_world_rank()

    def set_global_rank(self, rank: int) -> None:
        """Fixed by the worker group; Lightning's value is ignored."""

    def local_rank(self) -> int:
        return _session.get_context().get_local_rank()

    def node_rank(self) -> int:
        return _session.get_context().get_node_rank()

    def teardown(self) -> None:
        """The process group belongs to the rank's backend, which ends it."""


class _RankDevice:
    """What both strategies share: the rank's device and sampler arguments."""

    @property
    def root_device(self) -> Any:
        return get_device()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        ctx = _session.get_context()
        return {"num_replicas": ctx.get_world_size(), "rank": ctx.get_world_rank()}


class RayDDPStrategy(_RankDevice, DDPStrategy):  # type: ignore[misc]
    """Lightning's DDP strategy on the rank's device and process group."""


class RayFSDPStrategy(_RankDevice, FSDPStrategy):  # type: ignore[misc]
    """Lightning's FSDP strategy on the rank's device and process group."""


class RayTrainReportCallback(pl.Callback):  # type: ignore[misc]
    """After every training epoch, ``train.report`` the logged metrics (``callback_metrics``,
    plus ``epoch`` and ``step``) with a checkpoint (``checkpoint.ckpt``, saved by
    ``trainer.save_checkpoint`` on every rank, reported by rank 0)."""

    CHECKPOINT_NAME = "checkpoint.ckpt"

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            metrics[key] = value.item() if hasattr(value, "item") else value
        metrics["epoch"] = trainer.current_epoch
        metrics["step"] = trainer.global_step
        tmpdir = tempfile.mkdtemp(prefix="runtime-lightning-")
        try:
            trainer.save_checkpoint(os.path.join(tmpdir, self.CHECKPOINT_NAME), weights_only=False)
            checkpoint = None
            if _session.get_context().get_world_rank() == 0:
                checkpoint = Checkpoint.from_directory(tmpdir)
            _session.report(metrics, checkpoint=checkpoint)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def prepare_trainer(trainer: Any) -> Any:
    """Check that ``trainer`` runs on the worker group: its strategy is a Ray strategy and
    its cluster environment :class:`RayLightningEnvironment`; returns it.

    Raises:
        TypeError: not a Lightning ``Trainer``.
        RuntimeError: another strategy or environment (Lightning would then start or look
            for processes of its own).
    """
    if not isinstance(trainer, pl.Trainer):
        raise TypeError(f"prepare_trainer needs a lightning Trainer, got {type(trainer).__name__}")
    strategy = trainer.strategy
    if not isinstance(strategy, RayDDPStrategy | RayFSDPStrategy):
        raise RuntimeError(
            f"the trainer's strategy is {type(strategy).__name__}; use "
            "strategy=RayDDPStrategy() (or RayFSDPStrategy()) from runtime.train.lightning"
        )
    env = getattr(strategy, "cluster_environment", None)
    if not isinstance(env, RayLightningEnvironment):
        raise RuntimeError(
            f"the trainer's cluster environment is {type(env).__name__}; pass "
            "plugins=[RayLightningEnvironment()] from runtime.train.lightning"
        )
    return trainer
