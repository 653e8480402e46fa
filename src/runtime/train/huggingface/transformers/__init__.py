"""runtime.train.huggingface.transformers: ``transformers.Trainer`` on a worker group
(needs the ``transformers`` extra), as Ray's module of the same path.

Inside ``train_loop_per_worker`` of a ``TorchTrainer``::

    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds)
    trainer.add_callback(RayTrainReportCallback())
    trainer = prepare_trainer(trainer)
    trainer.train()

- :func:`prepare_trainer`: checks the Trainer runs distributed over the rank's process
  group.
- :class:`RayTrainReportCallback`: a ``train.report`` at every save, with the saved
  checkpoint (under ``checkpoint/``) from rank 0.
"""

from runtime.train.huggingface.transformers._transformers import (
    RayTrainReportCallback,
    prepare_trainer,
)

__all__ = ["RayTrainReportCallback", "prepare_trainer"]
