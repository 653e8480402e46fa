"""runtime.train.torch: data-parallel PyTorch on a worker group of rank actors.

- :class:`TorchTrainer`: ``DataParallelTrainer`` that sets up ``torch.distributed``.
- :class:`TorchConfig`: the backend's options (gloo/NCCL, timeout).
- :func:`prepare_model`: move to the rank's device and wrap in DDP.
- :func:`prepare_data_loader`: a DistributedSampler per rank, batches on the device.
- :func:`get_device`: the rank's device.

torch itself is imported only when these run, in the rank (and by ``prepare_*``).
"""

from runtime.train.torch._backend import TorchConfig
from runtime.train.torch._prepare import get_device, prepare_data_loader, prepare_model
from runtime.train.torch._trainer import TorchTrainer

__all__ = ["TorchConfig", "TorchTrainer", "get_device", "prepare_data_loader", "prepare_model"]
