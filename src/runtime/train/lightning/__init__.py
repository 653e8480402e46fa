"""runtime.train.lightning: PyTorch Lightning on a worker group (needs the ``lightning``
extra), as Ray's ``ray.train.lightning``.

Inside ``train_loop_per_worker`` of a ``TorchTrainer``::

    trainer = pl.Trainer(
        devices="auto", accelerator="auto",
        strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()],
        callbacks=[RayTrainReportCallback()],
    )
    trainer = prepare_trainer(trainer)
    trainer.fit(model, datamodule=dm)

- :class:`RayDDPStrategy`: Lightning's DDP on the process group the rank already joined.
- :class:`RayFSDPStrategy`: the same for Lightning's FSDP.
- :class:`RayLightningEnvironment`: ranks and world size from ``train.get_context()``.
- :class:`RayTrainReportCallback`: a ``train.report`` (metrics + a checkpoint) per epoch.
- :func:`prepare_trainer`: checks the trainer uses the two above.
"""

from runtime.train.lightning._lightning import (
    RayDDPStrategy,
    RayFSDPStrategy,
    RayLightningEnvironment,
    RayTrainReportCallback,
    prepare_trainer,
)

__all__ = [
    "RayDDPStrategy",
    "RayFSDPStrategy",
    "RayLightningEnvironment",
    "RayTrainReportCallback",
    "prepare_trainer",
]
