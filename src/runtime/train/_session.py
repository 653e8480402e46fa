"""The rank's side of a run: ``train.report``, ``get_checkpoint``, ``get_context``,
``get_dataset_shard``, backed by the session the rank actor installs in its process.

A rank is one actor in its own node process, so the session is process-global: the user's
loop (and any thread it starts) sees the same one. ``report`` copies a checkpoint into the
run's staging folder and queues the report; the controller in the driver collects the queue,
keeps rank 0's metrics and persists each checkpoint once.
"""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import traceback
from typing import Any

from ._checkpoint import Checkpoint
from ._context import TrainContext
from ._storage import FileSystemCheckpoint, StorageContext

Event = tuple[Any, ...]


class StopRank(BaseException):
    """Raised inside ``train.report`` when the controller tears the group down."""


#: Checkpoints a rank may have waiting for upload before ``report`` waits for one to finish.
MAX_PENDING_UPLOADS = 2


class RankSession:
    """One rank's state for one attempt of a run.

    Reports leave through an outbox thread in order: a report with a checkpoint is sent
    once the rank's files are uploaded to storage, so the loop never waits on storage
    (only on a local copy of the checkpoint directory, which the caller may delete as soon
    as ``report`` returns), and the controller sees a report only when its files are there.
    """

    def __init__(
        self,
        context: TrainContext,
        checkpoint: Checkpoint | None,
        shards: dict[str, Any],
        first_index: int,
        storage: StorageContext,
    ) -> None:
        self.context = context
        self.checkpoint = checkpoint
        self.shards = shards
        self.next_index = first_index
        self.storage = storage
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[Event, str | None] | None] = queue.SimpleQueue()
        self._upload_slots = threading.BoundedSemaphore(MAX_PENDING_UPLOADS)
        self._staging: str | None = None
        self._sender = threading.Thread(
            target=self._send_loop, name=f"train-upload-{context.world_rank}", daemon=True
        )
        self._sender.start()

    def _stage(self, checkpoint: Checkpoint, index: int) -> str:
        if self._staging is None:
            self._staging = tempfile.mkdtemp(prefix="runtime-train-staging-")
        local = os.path.join(self._staging, f"{index:06d}")
        if isinstance(checkpoint, FileSystemCheckpoint):
            checkpoint.to_directory(local)
        else:
            shutil.copytree(checkpoint.path, local)
        return local

    def report(
        self,
        metrics: dict[str, Any],
        checkpoint: Checkpoint | None,
        checkpoint_dir_name: str | None = None,
    ) -> None:
        if self.stopping.is_set():
            raise StopRank
        with self.lock:
            index = self.next_index
            self.next_index += 1
        dirname = None
        local = None
        if checkpoint is not None:
            dirname = checkpoint_dir_name or f"checkpoint_{index:06d}"
            self._upload_slots.acquire()
            try:
                local = self._stage(checkpoint, index)
            except BaseException:
                self._upload_slots.release()
                raise
        event = ("report", index, dict(metrics), dirname, time.time())
        self._outbox.put((event, local))
        if dirname is not None:
            # Restarts resume from what was reported, so later reads see it too.
            self.checkpoint = self.storage.checkpoint(dirname)

    def emit(self, event: Event) -> None:
        """Send an event after every report queued before it."""
        self._outbox.put((event, None))

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            event, local = item
            if local is not None:
                try:
                    if not self.stopping.is_set():
                        self.storage.upload(local, event[3])
                except BaseException as exc:
                    event = error_event(
                        self.context.world_rank,
                        OSError(f"uploading checkpoint {event[3]} to storage failed: {exc}"),
                    )
                finally:
                    shutil.rmtree(local, ignore_errors=True)
                    self._upload_slots.release()
            self.events.put(event)

    def close(self) -> None:
        """Wait until every queued report is uploaded and sent (dropped when stopping)."""
        self._outbox.put(None)
        self._sender.join()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

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


def error_event(rank: int, exc: BaseException) -> Event:
    """An ``error`` event: the traceback text and the pickled exception (if it pickles)."""
    text = "".join(traceback.format_exception(exc))
    blob: bytes | None
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:
        blob = None
    return ("error", rank, text, blob)


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


def report(
    metrics: dict[str, Any],
    *,
    checkpoint: Checkpoint | None = None,
    checkpoint_dir_name: str | None = None,
) -> None:
    """Report this rank's metrics (and optionally a checkpoint) for the current step.

    Every rank should report at the same points; rank 0's metrics are the ones kept. A
    checkpoint is copied to a local staging folder now (the directory may be deleted after
    this returns) and uploaded to ``storage_path/name/checkpoint_NNNNNN`` (or
    ``checkpoint_dir_name``) in the background; it counts once every rank has reported this
    step. When several ranks pass one, their files are merged into one folder (give them
    distinct names, e.g. ``model-rank=R.pt``; for one name, the last upload wins).
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"train.report needs a dict of metrics, got {type(metrics).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a train.Checkpoint, got {type(checkpoint).__name__}")
    if checkpoint_dir_name is not None and (
        not isinstance(checkpoint_dir_name, str)
        or not checkpoint_dir_name
        or "/" in checkpoint_dir_name
        or os.sep in checkpoint_dir_name
        or checkpoint_dir_name in (".", "..")
        or checkpoint_dir_name.startswith(".")
    ):
        raise ValueError(
            f"checkpoint_dir_name must be a plain folder name, got {checkpoint_dir_name!r}"
        )
    _current().report(metrics, checkpoint, checkpoint_dir_name)


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
