"""Ray's module path ``ray.train.data_parallel_trainer``."""

from runtime.train._trainer import DataParallelTrainer

__all__ = ["DataParallelTrainer"]
