"""The backend hook: how a framework's process group is set up in each rank.

``DataParallelTrainer`` runs ``Backend.on_start`` in every rank before the user's loop
(with the rendezvous address rank 0 chose) and ``on_shutdown`` after it, in the rank's own
process. Ray calls its backend in the driver with the worker group; ours runs where the
process group lives, which is all a backend needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._context import TrainContext


class Backend:
    """Sets up and tears down a framework's distributed state in a rank (default: nothing)."""

    def on_start(self, context: TrainContext, master_addr: str, master_port: int) -> None:
        """Called in the rank before ``train_loop_per_worker``."""

    def on_shutdown(self, context: TrainContext) -> None:
        """Called in the rank after ``train_loop_per_worker`` ends, however it ends."""


@dataclass
class BackendConfig:
    """The options of a backend; ``make_backend()`` builds the (picklable) hook ranks run."""

    #: Modules a rank's process is forked with, imported once per node (see ``_preload``).
    preload_modules: ClassVar[tuple[str, ...]] = ()

    def make_backend(self) -> Backend:
        return Backend()

    def rank_env(self, context: TrainContext, gpu_ids: list[str] | None) -> dict[str, str]:
        """Environment variables a rank sets before the loop (GPU visibility)."""
        if gpu_ids is None:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)}
