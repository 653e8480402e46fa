"""runtime.train.torch: data-parallel PyTorch on a worker group of rank actors.

- :class:`TorchTrainer`: ``DataParallelTrainer`` that sets up ``torch.distributed``.
- :class:`TorchConfig`: the backend's options (gloo/NCCL, timeout).
- :func:`prepare_model`: move to the rank's device and wrap in DDP or FSDP2.
- :func:`prepare_data_loader`: a DistributedSampler per rank, batches on the device.
- :func:`get_device` / :func:`get_devices`: the rank's device(s).
- :func:`enable_reproducibility`, :func:`accelerate`, :func:`prepare_optimizer`,
  :func:`backward`: seeding and determinism; automatic mixed precision.
- :class:`TorchCheckpoint`: a checkpoint of a model or state dict.

torch itself is imported only when these run, in the rank (and by ``prepare_*``).
"""

from runtime.train.torch._backend import TorchConfig
from runtime.train.torch._checkpoint import TorchCheckpoint
from runtime.train.torch._prepare import (
    accelerate,
    backward,
    enable_reproducibility,
    get_device,
    get_devices,
    prepare_data_loader,
    prepare_model,
    prepare_optimizer,
)
from runtime.train.torch._trainer import TorchTrainer

__all__ = [
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
