"""What a torch loop calls in each rank: the device, a DDP-wrapped model, a sharded loader."""

from __future__ import annotations

from typing import Any

from runtime.train._session import get_context


def get_device() -> Any:
    """This rank's ``torch.device``: ``cuda:0`` (its own GPU) with ``use_gpu``, else CPU."""
    import torch

    try:
        use_gpu = get_context().use_gpu
    except RuntimeError:
        use_gpu = False
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def prepare_model(
    model: Any,
    move_to_device: bool = True,
    parallel_strategy: str | None = "ddp",
    parallel_strategy_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Move ``model`` to this rank's device and wrap it in DistributedDataParallel.

    With one rank (or ``parallel_strategy=None``) the model is only moved. ``"fsdp"`` is not
    supported yet.
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if parallel_strategy not in ("ddp", None):
        raise ValueError(f"parallel_strategy must be 'ddp' or None, got {parallel_strategy!r}")
    device = get_device()
    if move_to_device:
        model = model.to(device)
    if parallel_strategy is None or not dist.is_initialized() or dist.get_world_size() < 2:
        return model
    kwargs = dict(parallel_strategy_kwargs or {})
    if device.type == "cuda":
        kwargs.setdefault("device_ids", [device.index])
        kwargs.setdefault("output_device", device.index)
    del torch
    return DistributedDataParallel(model, **kwargs)


class _DeviceLoader:
    """A DataLoader whose batches land on the device and whose sampler follows epochs."""

    def __init__(self, loader: Any, device: Any, move: bool) -> None:
        self.loader = loader
        self.device = device
        self.move = move
        self.epoch = 0
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def _to(self, batch: Any) -> Any:
        if not self.move:
            return batch
        if hasattr(batch, "to"):
            return batch.to(self.device)
        if isinstance(batch, list | tuple):
            return type(batch)(self._to(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to(v) for k, v in batch.items()}
        return batch

    def __iter__(self) -> Any:
        set_epoch = getattr(self.loader.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)  # a new shuffle each epoch, the same on every rank
        self.epoch += 1
        for batch in self.loader:
            yield self._to(batch)


def prepare_data_loader(
    data_loader: Any, add_dist_sampler: bool = True, move_to_device: bool = True
) -> Any:
    """Give each rank a disjoint part of ``data_loader``'s dataset (a DistributedSampler) and
    move its batches to the rank's device.

    The loader is rebuilt with the same batch size, workers and collate function; shuffling
    is kept (the sampler reshuffles every epoch, the same way on every rank).
    """
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if not isinstance(data_loader, DataLoader):
        raise TypeError(f"prepare_data_loader needs a DataLoader, got {type(data_loader).__name__}")
    loader = data_loader
    if add_dist_sampler and dist.is_initialized() and dist.get_world_size() > 1:
        shuffle = isinstance(data_loader.sampler, RandomSampler)
        sampler: DistributedSampler[Any] = DistributedSampler(
            data_loader.dataset,
            num_replicas=dist.get_world_size(),
            rank=dist.get_rank(),
            shuffle=shuffle,
        )
        loader = DataLoader(
            data_loader.dataset,
            batch_size=data_loader.batch_size,
            sampler=sampler,
            num_workers=data_loader.num_workers,
            collate_fn=data_loader.collate_fn,
            pin_memory=data_loader.pin_memory,
            drop_last=data_loader.drop_last,
            timeout=data_loader.timeout,
            worker_init_fn=data_loader.worker_init_fn,
        )
    return _DeviceLoader(loader, get_device(), move_to_device)
