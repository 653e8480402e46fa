"""runtime.train: distributed data-parallel training on a gang-scheduled group of rank actors.

``TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2)).fit()`` reserves one
bundle per rank in a placement group, starts a rank actor in each (each in its own node
process), sets up ``torch.distributed`` and runs ``loop`` in every rank. Ranks call
``train.report``; a controller in the driver keeps rank 0's metrics, persists checkpoints
once under ``storage_path/name/checkpoint_NNNNNN`` and restarts the whole group from the
latest checkpoint when a rank fails (``FailureConfig(max_failures)``).

Example::

    from runtime import train
    from runtime.train.torch import TorchTrainer, prepare_model

    def loop(config):
        model = prepare_model(make_model())
        for epoch in range(config["epochs"]):
            ...
            train.report({"epoch": epoch, "loss": loss})

    result = TorchTrainer(loop, train_loop_config={"epochs": 3},
                          scaling_config=train.ScalingConfig(num_workers=2)).fit()
"""

from runtime.train import _preload
from runtime.train._backend import Backend, BackendConfig
from runtime.train._callback import UserCallback
from runtime.train._checkpoint import Checkpoint
from runtime.train._config import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from runtime.train._context import TrainContext
from runtime.train._errors import TrainingFailedError, WorkerGroupError
from runtime.train._result import Result
from runtime.train._session import get_checkpoint, get_context, get_dataset_shard, report
from runtime.train._trainer import DataParallelTrainer

# nodes started after this import (runtime.init()'s) import torch in their zygotes at once
_preload.warm_nodes_started_later()

__all__ = [
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
