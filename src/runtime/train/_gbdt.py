"""Gradient-boosted trees on a worker group: what XGBoostTrainer and LightGBMTrainer share.

Each rank reads its shard of every dataset (all are split, as in Ray) into numpy arrays,
the framework's own collective joins the ranks (xgboost's tracker, LightGBM's socket
network), and the framework trains: every boosting round is a ``train.report`` of the
evaluation metrics (named ``<dataset>-<metric>``, Ray's names), with a checkpoint of the
model every ``CheckpointConfig.checkpoint_frequency`` rounds and after the last one
(``checkpoint_at_end``, default on). A restarted group resumes from the latest model and
boosts only the rounds still missing.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from typing import Any

from . import _session
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, DataConfig
from ._controller import WORKER_ADDRS_ENV
from ._trainer import DataParallelTrainer

__all__ = ["WORKER_ADDRS_ENV", "GBDTTrainer", "RoundReporter", "load_shards"]

_GBDT_KEYS = ("params", "num_boost_round", "label_column")


def load_shards(label_column: str) -> dict[str, tuple[Any, Any]]:
    """This rank's part of every dataset as ``name -> (features, labels)`` numpy arrays.

    Feature columns are every column but the label, in the dataset's column order.
    """
    import numpy as np

    out: dict[str, tuple[Any, Any]] = {}
    for name, iterator in _session._current().shards.items():
        xs: list[Any] = []
        ys: list[Any] = []
        columns: list[str] | None = None
        for batch in iterator.iter_batches(batch_size=4096, batch_format="numpy"):
            if label_column not in batch:
                raise KeyError(
                    f"dataset {name!r} has no label column {label_column!r} "
                    f"(columns: {', '.join(batch)})"
                )
            if columns is None:
                columns = [c for c in batch if c != label_column]
            xs.append(np.column_stack([np.asarray(batch[c], dtype=np.float64) for c in columns]))
            ys.append(np.asarray(batch[label_column]))
        if xs:
            out[name] = (np.concatenate(xs), np.concatenate(ys))
        else:
            width = len(columns or [])
            out[name] = (np.empty((0, width)), np.empty((0,)))
    return out


class RoundReporter:
    """Reports each boosting round; checkpoints on the configured rounds (rank 0 saves)."""

    def __init__(self, frequency: int, at_end: bool, filename: str, save: Callable[..., None]):
        self.frequency = frequency
        self.at_end = at_end
        self.filename = filename
        self.save = save  # save(model, path)
        self.last_metrics: dict[str, Any] = {}
        self.last_checkpointed = -1

    def after_round(self, model: Any, done_rounds: int, metrics: dict[str, Any]) -> None:
        self.last_metrics = metrics
        due = self.frequency > 0 and done_rounds % self.frequency == 0
        self._report(model, done_rounds, metrics, with_checkpoint=due)

    def after_training(self, model: Any, done_rounds: int) -> None:
        if self.at_end and self.last_checkpointed != done_rounds:
            self._report(model, done_rounds, self.last_metrics, with_checkpoint=True)

    def _report(self, model: Any, rounds: int, metrics: dict[str, Any], with_checkpoint: bool):  # type: ignore[no-untyped-def]
        metrics = {**metrics, "boosting_rounds": rounds}
        if not with_checkpoint:
            _session.report(metrics)
            return
        self.last_checkpointed = rounds
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if _session.get_context().get_world_rank() == 0:
                self.save(model, os.path.join(d, self.filename))
                checkpoint = Checkpoint.from_directory(d)
            _session.report(metrics, checkpoint=checkpoint)


class GBDTTrainer(DataParallelTrainer):
    """The shared constructor and Tune hooks of the boosted-tree trainers.

    Subclasses set ``_loop`` (the per-rank function), ``_backend_config_cls`` and
    ``_default_rounds``.
    """

    _saves_own_checkpoints = True
    _loop: Callable[[dict[str, Any]], None]

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any] | None = None,
        *,
        datasets: dict[str, Any] | None = None,
        label_column: str | None = None,
        params: dict[str, Any] | None = None,
        num_boost_round: int = 10,
        train_loop_config: dict[str, Any] | None = None,
        dataset_config: DataConfig | None = None,
        **kwargs: Any,
    ) -> None:
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in _TRAINER_KWARGS}
        if train_loop_per_worker is not None:
            # Ray's newer form: your own loop calls xgboost.train / lightgbm.train; the
            # trainer sets up the framework's collective.
            super().__init__(
                train_loop_per_worker,
                train_loop_config=train_loop_config,
                datasets=datasets,
                dataset_config=dataset_config,
                **kwargs,
            )
            self._gbdt = False
            return
        if not isinstance(label_column, str) or not label_column:
            raise ValueError("label_column (the name of the label column) is required")
        if not datasets or "train" not in datasets:
            raise ValueError("datasets={'train': ds, ...} is required (more are evaluated)")
        if params is not None and not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        if (
            isinstance(num_boost_round, bool)
            or not isinstance(num_boost_round, int)
            or num_boost_round < 1
        ):
            raise ValueError(f"num_boost_round must be an int >= 1, got {num_boost_round!r}")
        config = {
            "label_column": label_column,
            "params": dict(params or {}),
            "num_boost_round": num_boost_round,
            "train_kwargs": extra,
        }
        super().__init__(
            type(self)._loop,
            train_loop_config=config,
            datasets=datasets,
            dataset_config=dataset_config or DataConfig(datasets_to_split="all"),
            **kwargs,
        )
        self._gbdt = True

    def _fit(self, on_report: Any, in_tune: bool = False) -> Any:
        if self._gbdt:
            ckpt = self.run_config.checkpoint_config or CheckpointConfig()
            config = dict(self.train_loop_config or {})
            config["frequency"] = ckpt.checkpoint_frequency
            config["at_end"] = ckpt.checkpoint_at_end is not False
            trainer = copy.copy(self)
            trainer.train_loop_config = config
            return DataParallelTrainer._fit(trainer, on_report, in_tune)
        return super()._fit(on_report, in_tune)

    def _with_param_space(self, config: dict[str, Any]) -> DataParallelTrainer:
        config = dict(config)
        gbdt = {k: config.pop(k) for k in _GBDT_KEYS if k in config}
        trainer = super()._with_param_space(config)
        if gbdt:
            if not self._gbdt:
                raise ValueError(f"{sorted(gbdt)} apply only without train_loop_per_worker")
            loop_config = dict(trainer.train_loop_config or {})
            if "params" in gbdt:
                loop_config["params"] = {**loop_config.get("params", {}), **gbdt["params"]}
            for key in ("num_boost_round", "label_column"):
                if key in gbdt:
                    loop_config[key] = gbdt[key]
            trainer.train_loop_config = loop_config
        return trainer


_TRAINER_KWARGS = frozenset(
    {
        "backend_config",
        "scaling_config",
        "run_config",
        "resume_from_checkpoint",
        "metadata",
    }
)
