"""Ray's module path ``ray.train.torch.config``."""

from runtime.train.torch._backend import TorchConfig

__all__ = ["TorchConfig"]
