"""The run's folder: persisted checkpoints, their retention, and the progress log.

Layout::

    storage_path/name/
        checkpoint_000003/     one per report that carried a checkpoint (files of all ranks
                               that passed one, merged; rank 0's win)
        .staging/000004/rank_1 where ranks copy a checkpoint until every rank has reported
        progress.jsonl         one line per report of rank 0
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from ._checkpoint import Checkpoint
from ._config import CheckpointConfig


def default_storage_path() -> str:
    """``$TRAIN_RESULTS_DIR`` or ``~/runtime_results`` (Ray's is ``~/ray_results``)."""
    return os.environ.get("TRAIN_RESULTS_DIR") or os.path.join(
        os.path.expanduser("~"), "runtime_results"
    )


def _copy_if_absent(src: str, dst: str) -> str:
    if not os.path.exists(dst):
        shutil.copy2(src, dst)
    return dst


class RunStorage:
    """Persists checkpoints once, keeps the ones ``CheckpointConfig`` asks for."""

    def __init__(self, path: str, config: CheckpointConfig) -> None:
        self.path = path
        self.config = config
        self.staging = os.path.join(path, ".staging")
        self.kept: list[tuple[int, Checkpoint, dict[str, Any]]] = []
        os.makedirs(path, exist_ok=True)

    def clear_staging(self) -> None:
        """Drop what an attempt staged but never completed (before a restart)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def persist(self, index: int, staged: list[str], metrics: dict[str, Any]) -> Checkpoint:
        """Turn the ranks' staged copies of report ``index`` into ``checkpoint_<index>``."""
        final = os.path.join(self.path, f"checkpoint_{index:06d}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged[0], final)
        for extra in staged[1:]:
            shutil.copytree(extra, final, dirs_exist_ok=True, copy_function=_copy_if_absent)
        shutil.rmtree(os.path.join(self.staging, f"{index:06d}"), ignore_errors=True)
        checkpoint = Checkpoint(final)
        self.kept.append((index, checkpoint, dict(metrics)))
        self._prune()
        return checkpoint

    def _prune(self) -> None:
        keep_n = self.config.num_to_keep
        if keep_n is None or len(self.kept) <= keep_n:
            return
        latest = self.kept[-1]
        attr = self.config.checkpoint_score_attribute
        if attr is None:
            best = self.kept[-keep_n:]
        else:
            sign = 1.0 if self.config.checkpoint_score_order == "max" else -1.0

            def score(entry: tuple[int, Checkpoint, dict[str, Any]]) -> tuple[int, float, int]:
                value = entry[2].get(attr)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return (1, sign * float(value), entry[0])
                return (0, 0.0, entry[0])  # a report without the attribute ranks lowest

            best = sorted(self.kept, key=score, reverse=True)[:keep_n]
        keep = {entry[0] for entry in best} | {latest[0]}
        for index, checkpoint, _ in self.kept:
            if index not in keep:
                shutil.rmtree(checkpoint.path, ignore_errors=True)
        self.kept = [entry for entry in self.kept if entry[0] in keep]

    def latest(self) -> Checkpoint | None:
        return self.kept[-1][1] if self.kept else None

    def log(self, metrics: dict[str, Any]) -> None:
        with open(os.path.join(self.path, "progress.jsonl"), "a") as f:
            f.write(json.dumps(metrics, default=str) + "\n")
