"""The option structs of a training run: scaling, run, checkpoints, failures, data ingest.

Each validates itself when built, so bad input fails in the driver before any actor starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _number(name: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


@dataclass
class ScalingConfig:
    """How many ranks, and what each one holds.

    Args:
        num_workers: ranks in the worker group (one actor each, each in its own node process);
            or ``(min, max)`` for an elastic group: each attempt starts as many ranks as the
            cluster can hold now (at least ``min``, at most ``max``); the group grows, from
            its latest checkpoint, when room for more ranks appears, and a restart after a
            node is lost continues with the ranks that still fit.
        use_gpu: give each rank one GPU (unless ``resources_per_worker`` says otherwise),
            set ``CUDA_VISIBLE_DEVICES`` per rank and use NCCL.
        resources_per_worker: the bundle each rank reserves, e.g. ``{"CPU": 1}`` (the default).
        placement_strategy: the placement group's strategy. The default ``"SPREAD"`` puts ranks
            on different nodes where it can; ranks must land in different node processes
            (``torch.distributed`` is per process), which the trainer checks after placing.
    """

    num_workers: int | tuple[int, int] = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "SPREAD"
    trainer_resources: dict[str, float] | None = None  # accepted for Ray compatibility

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, list):
            self.num_workers = tuple(self.num_workers)  # type: ignore[assignment]
        if isinstance(self.num_workers, tuple):
            if len(self.num_workers) != 2 or not all(
                isinstance(n, int) and not isinstance(n, bool) for n in self.num_workers
            ):
                raise TypeError(
                    f"elastic num_workers must be (min, max) ints, got {self.num_workers!r}"
                )
            low, high = self.num_workers
            if not 1 <= low <= high:
                raise ValueError(f"num_workers=(min, max) needs 1 <= min <= max, got {low, high}")
        elif isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise TypeError(f"num_workers must be an int, got {self.num_workers!r}")
        elif self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.placement_strategy not in _STRATEGIES:
            raise ValueError(
                f"placement_strategy must be one of {', '.join(_STRATEGIES)}, "
                f"got {self.placement_strategy!r}"
            )
        if self.resources_per_worker is not None:
            if not isinstance(self.resources_per_worker, dict):
                raise TypeError(
                    "resources_per_worker must be a dict like {'CPU': 1}, "
                    f"got {self.resources_per_worker!r}"
                )
            for key, amount in self.resources_per_worker.items():
                _number(f"resources_per_worker[{key!r}]", amount)

    @property
    def elastic(self) -> bool:
        """Whether ``num_workers`` is a range ``(min, max)``."""
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers

    def sized(self, n: int) -> ScalingConfig:
        """This config with exactly ``n`` workers (one attempt of an elastic run)."""
        return dataclasses.replace(self, num_workers=n)

    def bundle(self) -> dict[str, float]:
        """The resources one rank reserves (names normalised: ``cpu`` -> ``CPU``)."""
        raw = self.resources_per_worker
        if raw is None:
            out = {"CPU": 1.0}
            if self.use_gpu:
                out["GPU"] = 1.0
            return out
        out = {}
        for key, amount in raw.items():
            name = str(key).upper() if str(key).lower() in ("cpu", "gpu") else str(key)
            if amount:
                out[name] = float(amount)
        if self.use_gpu and not out.get("GPU"):
            out["GPU"] = 1.0
        if not out:
            raise ValueError(
                f"resources_per_worker {raw!r} asks for nothing; a rank needs at least some CPU"
            )
        return out


@dataclass
class CheckpointConfig:
    """Which persisted checkpoints to keep, and when trainers that save their own take one.

    Args:
        num_to_keep: keep this many (the best by ``checkpoint_score_attribute``, else the
            latest); None keeps all. The latest checkpoint is always kept as well, because a
            restart resumes from it.
        checkpoint_score_attribute: a metric of the reports that carried a checkpoint.
        checkpoint_score_order: ``"max"`` or ``"min"``.
        checkpoint_frequency: for trainers that checkpoint themselves (``XGBoostTrainer``,
            ``LightGBMTrainer``): a checkpoint every this many boosting rounds; 0 never.
            A train loop decides itself when it passes a checkpoint to ``train.report``, so
            loop trainers warn once and ignore it (as the loop's own choice wins in Ray).
        checkpoint_at_end: for those trainers: a checkpoint after the last round (None: yes).
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: Literal["max", "min"] = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.checkpoint_frequency, bool)
            or not isinstance(self.checkpoint_frequency, int)
            or self.checkpoint_frequency < 0
        ):
            raise ValueError(
                f"checkpoint_frequency must be an int >= 0, got {self.checkpoint_frequency!r}"
            )
        if self.checkpoint_at_end is not None and not isinstance(self.checkpoint_at_end, bool):
            raise TypeError(
                f"checkpoint_at_end must be None or a bool, got {self.checkpoint_at_end!r}"
            )
        if self.num_to_keep is not None and (
            isinstance(self.num_to_keep, bool)
            or not isinstance(self.num_to_keep, int)
            or self.num_to_keep < 1
        ):
            raise ValueError(f"num_to_keep must be None or an int >= 1, got {self.num_to_keep!r}")
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError(
                "checkpoint_score_order must be 'max' or 'min', "
                f"got {self.checkpoint_score_order!r}"
            )


@dataclass
class FailureConfig:
    """What to do when a rank fails.

    Args:
        max_failures: how many times the whole group may be torn down and restarted from the
            latest checkpoint; ``-1`` without limit. Past it, ``Result.error`` carries the error.
        report_timeout_s: a rank that has not reported for this long is named in a warning
            (logger ``runtime.train``: which rank, on which node, for how long); None: never.
    """

    max_failures: int = 0
    report_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < -1
        ):
            raise ValueError(f"max_failures must be an int >= -1, got {self.max_failures!r}")
        if self.report_timeout_s is not None:
            _number("report_timeout_s", self.report_timeout_s, minimum=0.001)


@dataclass
class RunConfig:
    """Where results go and how failures, checkpoints and stopping are handled.

    Args:
        name: the run's folder under ``storage_path`` (default: trainer class + time).
        storage_path: where the run's folder goes: a local directory, or a URI a
            ``pyarrow.fs`` filesystem understands (``file://``, ``s3://``, ``gs://``, ...).
            Default: ``$TRAIN_RESULTS_DIR`` or ``~/runtime_results``.
        storage_filesystem: a ``pyarrow.fs.FileSystem`` or an ``fsspec`` filesystem to write
            through; ``storage_path`` is then a path on it. Ranks upload their checkpoints to
            it directly, in the background.
        stop: when to end the run early: a dict ``{metric: threshold}`` (stop once a report of
            rank 0 has ``metric >= threshold``; ``training_iteration`` counts reports), or a
            callable ``(trial_id, metrics) -> bool`` (a Tune ``Stopper`` works).
        worker_runtime_env: the ``runtime_env`` of every rank actor (``env_vars``,
            ``working_dir``, ``py_modules``); its ``env_vars`` stay set while the loop runs.
        callbacks: objects with ``after_report(run_context, metrics, checkpoint)`` (rank
            metrics, one dict per rank) and/or ``after_exception(run_context, errors)``
            (Ray Train's ``UserCallback``).
        verbose: 1 prints one line per report of rank 0 on the driver; 0 is quiet.
    """

    name: str | None = None
    storage_path: str | None = None
    checkpoint_config: CheckpointConfig | None = None
    failure_config: FailureConfig | None = None
    verbose: int = 1
    callbacks: list[Any] = field(default_factory=list)
    stop: Any = None
    storage_filesystem: Any = None
    worker_runtime_env: dict[str, Any] | None = None
    sync_config: Any = None  # accepted for Ray compatibility (uploads are always async here)
    log_to_file: bool = False  # accepted for Ray compatibility (rank output reaches the driver)

    def __post_init__(self) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.name is not None and (os.sep in self.name or self.name in (".", "..")):
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        if self.storage_path is not None:
            self.storage_path = os.fspath(self.storage_path)
        if self.checkpoint_config is None:
            self.checkpoint_config = CheckpointConfig()
        if self.failure_config is None:
            self.failure_config = FailureConfig()
        if not isinstance(self.checkpoint_config, CheckpointConfig):
            raise TypeError("checkpoint_config must be a train.CheckpointConfig")
        if not isinstance(self.failure_config, FailureConfig):
            raise TypeError("failure_config must be a train.FailureConfig")
        if self.stop is not None and not isinstance(self.stop, dict) and not callable(self.stop):
            raise TypeError(
                "stop must be a dict {metric: threshold} or a callable (trial_id, metrics) -> "
                f"bool, got {type(self.stop).__name__}"
            )
        if isinstance(self.stop, dict):
            for key, value in self.stop.items():
                if not isinstance(key, str):
                    raise TypeError(f"stop criteria are keyed by metric name, got {key!r}")
                _number(f"stop[{key!r}]", value, minimum=float("-inf"))
        if self.worker_runtime_env is not None and not isinstance(self.worker_runtime_env, dict):
            raise TypeError(
                "worker_runtime_env must be a dict like {'env_vars': {...}}, "
                f"got {type(self.worker_runtime_env).__name__}"
            )
        if self.callbacks is None:
            self.callbacks = []
        for callback in self.callbacks:
            if not any(hasattr(callback, h) for h in ("after_report", "after_exception")):
                logging.getLogger("runtime.train").warning(
                    "RunConfig callback %r has neither after_report nor after_exception; "
                    "Train never calls it (Tune callbacks belong in tune.RunConfig)",
                    callback,
                )

    def should_stop(self, metrics: dict[str, Any]) -> bool:
        """Whether ``stop`` says the run ends after a report with ``metrics``."""
        if self.stop is None:
            return False
        if isinstance(self.stop, dict):
            for key, threshold in self.stop.items():
                value = metrics.get(key)
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                if is_number and value >= threshold:
                    return True
            return False
        return bool(self.stop(self.name or "", metrics))


@dataclass
class DataConfig:
    """How the ``datasets`` of a trainer reach the ranks.

    Args:
        datasets_to_split: the names streamed and split across ranks (disjoint shards that
            together cover the set each epoch); the others go whole to every rank.
            ``"all"`` splits every dataset. Default: only ``"train"`` (Ray splits all).
        equal: give every rank the same number of rows per epoch (up to ``num_workers - 1``
            rows are dropped), which keeps DDP ranks in step; False hands blocks to whichever
            rank asks next (every row used, shard sizes may differ).
    """

    datasets_to_split: str | Sequence[str] = ("train",)
    equal: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.datasets_to_split, str) and self.datasets_to_split != "all":
            raise ValueError(
                "datasets_to_split must be 'all' or a list of names, "
                f"got {self.datasets_to_split!r}"
            )

    def split(self, name: str) -> bool:
        return self.datasets_to_split == "all" or name in self.datasets_to_split
