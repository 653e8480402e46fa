"""Ray's module path ``ray.train.torch.torch_trainer``."""

from runtime.train.torch._trainer import TorchTrainer

__all__ = ["TorchTrainer"]
