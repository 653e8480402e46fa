"""TorchTrainer: DataParallelTrainer with ``torch.distributed`` set up in every rank."""

from __future__ import annotations

from runtime.train._backend import BackendConfig
from runtime.train._trainer import DataParallelTrainer

from ._backend import TorchConfig


class TorchTrainer(DataParallelTrainer):
    """Data-parallel PyTorch: each rank joins a process group (gloo on CPU, NCCL on GPU).

    Example::

        from runtime import train
        from runtime.train.torch import TorchTrainer, prepare_model

        def loop(config):
            model = prepare_model(torch.nn.Linear(4, 1))
            ...
            train.report({"loss": loss})

        result = TorchTrainer(loop, scaling_config=train.ScalingConfig(num_workers=2)).fit()

    Takes the arguments of :class:`~runtime.train.DataParallelTrainer`, with
    ``torch_config`` (a :class:`TorchConfig`) as its backend config.
    """

    _backend_config_cls: type[BackendConfig] = TorchConfig

    def __init__(self, train_loop_per_worker, *, torch_config=None, **kwargs):  # type: ignore[no-untyped-def]
        if torch_config is not None and not isinstance(torch_config, TorchConfig):
            raise TypeError("torch_config must be a train.torch.TorchConfig")
        kwargs.setdefault("backend_config", torch_config)
        super().__init__(train_loop_per_worker, **kwargs)
