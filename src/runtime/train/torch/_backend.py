"""The torch backend: ``torch.distributed`` set up in every rank (gloo on CPU, NCCL on GPU).

Rank 0 chose a free port on its node's address; every rank joins with ``init_method=tcp://`` and a
timeout, so a rank that never arrives fails the group instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from dataclasses import dataclass

from runtime.train._backend import Backend, BackendConfig
from runtime.train._context import TrainContext
from runtime.train._preload import TORCH_MODULES


def _loopback_interface() -> str | None:
    for _, name in socket.if_nameindex():
        if name.startswith("lo"):
            return name
    return None


def _wait_until_listening(addr: str, port: int, timeout_s: float) -> None:
    """Until rank 0's rendezvous store accepts connections (or ``timeout_s``: the join then
    fails with torch's own error). A rank that reaches the store before it listens is refused,
    and torch's store client waits 0.3-0.7 s before it tries again: every group whose rank 0
    started a few milliseconds after another rank paid that on its first step."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)


class TorchBackend(Backend):
    """Joins (and leaves) the default process group in each rank."""

    def __init__(self, config: TorchConfig) -> None:
        self.config = config
        self._group: object = None  # the default process group this rank created

    def on_start(self, context: TrainContext, master_addr: str, master_port: int) -> None:
        import torch
        import torch.distributed as dist

        # a rank holds its bundle's CPUs (OMP_NUM_THREADS, set by the controller); torch would
        # use every core of the host
        try:
            threads = max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
        except ValueError:
            threads = 1
        torch.set_num_threads(threads)
        if dist.is_available() and dist.is_initialized():
            # left by an earlier group in this node process whose loop is still stuck in a
            # collective (it fails there at its timeout and exits on its own)
            dist.destroy_process_group()
        backend = self.config.backend or ("nccl" if context.use_gpu else "gloo")
        if context.use_gpu:
            torch.cuda.set_device(0)  # CUDA_VISIBLE_DEVICES holds this rank's GPU(s)
        if master_addr.startswith("127.") and "GLOO_SOCKET_IFNAME" not in os.environ:
            name = _loopback_interface()
            if name is not None:
                os.environ["GLOO_SOCKET_IFNAME"] = name
        os.environ["MASTER_ADDR"] = master_addr
        os.environ["MASTER_PORT"] = str(master_port)
        os.environ["RANK"] = str(context.world_rank)
        os.environ["WORLD_SIZE"] = str(context.world_size)
        os.environ["LOCAL_RANK"] = str(context.local_rank)
        os.environ["LOCAL_WORLD_SIZE"] = str(context.local_world_size)
        if context.world_rank != 0:
            _wait_until_listening(master_addr, master_port, self.config.timeout_s)
        dist.init_process_group(
            backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=context.world_rank,
            world_size=context.world_size,
            timeout=datetime.timedelta(seconds=self.config.timeout_s),
        )
        self._group = dist.distributed_c10d._get_default_group()

    def on_shutdown(self, context: TrainContext) -> None:
        import torch.distributed as dist

        # Only the group this rank made: a loop of an earlier group that outlived its
        # teardown (stuck in a collective) must not destroy the next group's.
        if dist.is_initialized() and dist.distributed_c10d._get_default_group() is self._group:
            dist.destroy_process_group()
        self._group = None


@dataclass
class TorchConfig(BackendConfig):
    """Options of the torch backend.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None picks NCCL with GPUs, else gloo.
        timeout_s: bound for joining the group and for each collective (Ray: 1800 s).
    """

    backend: str | None = None
    timeout_s: float = 300.0
    # DDP's constructor imports torch._dynamo (sympy, inductor): seconds, once per node
    preload_modules = TORCH_MODULES

    def __post_init__(self) -> None:
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {self.backend!r}")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float):
            raise TypeError(f"timeout_s must be a number, got {self.timeout_s!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    def make_backend(self) -> Backend:
        return TorchBackend(self)
