"""What a torch loop calls in each rank: its devices, a DDP- or FSDP-wrapped model, a
sharded loader, reproducibility, and automatic mixed precision (``accelerate``)."""

from __future__ import annotations

import functools
import os
import random
from typing import Any

from runtime.train._session import get_context

_STRATEGIES = ("ddp", "fsdp", None)
_amp: dict[str, Any] = {"enabled": False, "scaler": None}


def _use_gpu() -> bool:
    try:
        return get_context().use_gpu
    except RuntimeError:
        return False


def get_device() -> Any:
    """This rank's ``torch.device``: ``cuda:0`` (its own GPU) with ``use_gpu``, else CPU.

    With several GPUs per rank, the first of them (see :func:`get_devices`).
    """
    return get_devices()[0]


def get_devices() -> list[Any]:
    """Every device of this rank: its GPUs (``cuda:0``, ``cuda:1``, ...: the rank sees only
    its own through ``CUDA_VISIBLE_DEVICES``) with ``use_gpu``, else ``[cpu]``."""
    import torch

    if _use_gpu() and torch.cuda.is_available():
        count = torch.cuda.device_count()
        first = torch.cuda.current_device()
        return [torch.device("cuda", first)] + [
            torch.device("cuda", i) for i in range(count) if i != first
        ]
    return [torch.device("cpu")]


def enable_reproducibility(seed: int = 0) -> None:
    """Make this rank's training repeatable: seed Python, numpy and torch with ``seed``,
    make torch use deterministic algorithms (an op without one raises), and turn off
    cuDNN's benchmark autotuning. Call it first in the loop, before building the model.

    Deterministic algorithms can be slower; a ``DataLoader`` with workers also needs
    ``worker_init_fn``/``generator`` seeded to repeat its order.
    """
    import numpy as np
    import torch

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to repeat
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def accelerate(amp: bool = False) -> None:
    """Turn on automatic mixed precision for what ``prepare_model`` / ``prepare_optimizer``
    return later in this rank: forwards run under ``torch.autocast`` (float16 on GPU,
    bfloat16 on CPU), and on GPU the optimizer scales the loss (``torch.amp.GradScaler``);
    call :func:`backward` instead of ``loss.backward()`` so the scale applies."""
    import torch

    _amp["enabled"] = bool(amp)
    _amp["scaler"] = None
    if amp and get_device().type == "cuda":
        _amp["scaler"] = torch.amp.GradScaler("cuda")


def _autocast_forward(forward: Any, device_type: str, *args: Any, **kwargs: Any) -> Any:
    import torch

    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    with torch.autocast(device_type=device_type, dtype=dtype):
        return forward(*args, **kwargs)


class _ScaledOptimizer:
    """An optimizer whose ``step`` goes through a GradScaler (AMP on GPU)."""

    def __init__(self, optimizer: Any, scaler: Any) -> None:
        self.optimizer = optimizer
        self.scaler = scaler

    def step(self, closure: Any = None) -> Any:
        out = self.scaler.step(self.optimizer, *(() if closure is None else (closure,)))
        self.scaler.update()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def prepare_optimizer(optimizer: Any) -> Any:
    """The optimizer to use in the loop: as given, or, with ``accelerate(amp=True)`` on a
    GPU, one that steps through the loss scaler."""
    scaler = _amp["scaler"]
    if scaler is None:
        return optimizer
    return _ScaledOptimizer(optimizer, scaler)


def backward(tensor: Any) -> None:
    """``tensor.backward()``, scaled when ``accelerate(amp=True)`` uses a GradScaler."""
    scaler = _amp["scaler"]
    if scaler is None:
        tensor.backward()
    else:
        scaler.scale(tensor).backward()


def _fully_shard(model: Any, kwargs: dict[str, Any]) -> Any:
    """torch's FSDP2: shard every child module with parameters (or every module of the
    classes in ``shard_modules``), then the root."""
    from torch.distributed.fsdp import fully_shard

    classes = tuple(kwargs.pop("shard_modules", ()) or ())
    if classes:
        targets = [m for m in model.modules() if isinstance(m, classes) and m is not model]
    else:
        targets = [
            child for child in model.children() if any(True for _ in child.parameters(recurse=True))
        ]
    for module in targets:
        fully_shard(module, **kwargs)
    return fully_shard(model, **kwargs)


def prepare_model(
    model: Any,
    move_to_device: bool = True,
    parallel_strategy: str | None = "ddp",
    parallel_strategy_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Move ``model`` to this rank's device and wrap it for data-parallel training.

    ``parallel_strategy``: ``"ddp"`` (DistributedDataParallel, the default), ``"fsdp"``
    (torch's FSDP2 ``fully_shard``: each child module with parameters is sharded across the
    ranks, then the root; ``parallel_strategy_kwargs`` go to ``fully_shard``, plus
    ``shard_modules=(Block,)`` to shard those classes instead of the children; works on
    CPU with gloo), or None (only moved). With one rank the model is only moved. With
    ``accelerate(amp=True)`` its forward runs under autocast.

    An FSDP model's ``state_dict()`` holds shards (DTensors); for a checkpoint of full
    tensors use ``torch.distributed.checkpoint.state_dict.get_model_state_dict(model,
    options=StateDictOptions(full_state_dict=True, cpu_offload=True))`` on every rank.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if parallel_strategy not in _STRATEGIES:
        raise ValueError(
            f"parallel_strategy must be 'ddp', 'fsdp' or None, got {parallel_strategy!r}"
        )
    device = get_device()
    if move_to_device:
        model = model.to(device)
    if _amp["enabled"]:
        model.forward = functools.partial(_autocast_forward, model.forward, device.type)
    if parallel_strategy is None or not dist.is_initialized() or dist.get_world_size() < 2:
        return model
    kwargs = dict(parallel_strategy_kwargs or {})
    if parallel_strategy == "fsdp":
        return _fully_shard(model, kwargs)
    if device.type == "cuda":
        kwargs.setdefault("device_ids", [device.index])
        kwargs.setdefault("output_device", device.index)
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
