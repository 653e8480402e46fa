"""The rank's side of a run: ``train.report``, ``get_checkpoint``, ``get_context``,
``get_dataset_shard``, backed by the session the rank actor installs in its process.

A rank is one actor in its own node process, so the session is process-global: the user's
loop (and any thread it starts) sees the same one. ``report`` copies a checkpoint into the
run's staging folder and queues the report; the controller in the driver collects the queue,
keeps rank 0's metrics and persists each checkpoint once.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from typing import Any

from ._checkpoint import Checkpoint
from ._context import TrainContext

Event = tuple[Any, ...]


class StopRank(BaseException):
    """Raised inside ``train.report`` when the controller tears the group down."""


class RankSession:
    """One rank's state for one attempt of a run."""

    def __init__(
        self,
        context: TrainContext,
        checkpoint: Checkpoint | None,
        shards: dict[str, Any],
        first_index: int,
        staging_root: str,
    ) -> None:
        self.context = context
        self.checkpoint = checkpoint
        self.shards = shards
        self.next_index = first_index
        self.staging_root = staging_root
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if self.stopping.is_set():
            raise StopRank
        with self.lock:
            index = self.next_index
            self.next_index += 1
        staged = None
        if checkpoint is not None:
            staged = os.path.join(
                self.staging_root, f"{index:06d}", f"rank_{self.context.world_rank}"
            )
            shutil.copytree(checkpoint.path, staged, dirs_exist_ok=True)
        self.events.put(("report", index, dict(metrics), staged, time.time()))
        if staged is not None:
            # Restarts resume from what was reported, so later reports see it too.
            self.checkpoint = checkpoint

    def drain(self, timeout: float) -> list[Event]:
        """The queued events; waits up to ``timeout`` for the first one."""
        try:
            out = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


_session: RankSession | None = None


def install(session: RankSession | None) -> None:
    global _session
    _session = session


def _current() -> RankSession:
    if _session is None:
        raise RuntimeError(
            "train.report/get_checkpoint/get_context/get_dataset_shard work only inside "
            "train_loop_per_worker while a trainer runs it (trainer.fit())"
        )
    return _session


def report(metrics: dict[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Report this rank's metrics (and optionally a checkpoint) for the current step.

    Every rank should report at the same points; rank 0's metrics are the ones kept. A
    checkpoint is copied now (the directory may be deleted after this returns) and persisted
    once as ``storage_path/name/checkpoint_NNNNNN`` when every rank has reported this step;
    when several ranks pass one, their files are merged (rank 0's win).
    """
    session = _current()
    if not isinstance(metrics, dict):
        raise TypeError(f"train.report needs a dict of metrics, got {type(metrics).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a train.Checkpoint, got {type(checkpoint).__name__}")
    session.report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The latest checkpoint of this run (after a restart: the one to resume from), or None."""
    return _current().checkpoint


def get_context() -> TrainContext:
    """This rank's :class:`TrainContext` (world rank, local rank, world size, node rank)."""
    return _current().context


def get_dataset_shard(name: str = "train") -> Any:
    """This rank's ``DataIterator`` over dataset ``name`` (a shard of it if it is split)."""
    shards = _current().shards
    if name not in shards:
        known = ", ".join(sorted(shards)) or "none"
        raise KeyError(
            f"no dataset named {name!r} was given to the trainer (datasets: {known}); "
            "pass datasets={name: ds} to the trainer"
        )
    return shards[name]
