"""DataParallelTrainer: run ``train_loop_per_worker`` on a gang-scheduled group of ranks.

The base for framework trainers (``TorchTrainer`` adds the torch backend). ``fit()`` runs
the controller in the calling thread; the trainer is also a Tune trainable (it implements
``as_trainable()`` of ``runtime.libs.trainable``), so ``tune.Tuner(trainer, param_space=
{"train_loop_config": {...}})`` runs one worker group per trial.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import runtime
from runtime.libs import trainable as libs_trainable

from ._backend import BackendConfig
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
from ._controller import Controller, OnReport, RunSpec, check_fits
from ._result import Result
from ._storage import (
    TRAINER_FILE,
    RunStorage,
    StorageContext,
    default_storage_path,
    resolve_filesystem,
)

_TUNABLE_KEYS = ("train_loop_config", "scaling_config", "datasets")
logger = logging.getLogger("runtime.train")
_warned_frequency: list[bool] = []  # warn once per process


def _ensure_runtime() -> None:
    """``runtime.init()`` as Ray's ``fit()`` does, unless this process is already in a
    cluster: the driver after ``init``, or a task or actor (a Tune trial), where
    ``is_initialized()`` is False but the runtime context answers."""
    if runtime.is_initialized():
        return
    try:
        runtime.get_runtime_context().get_node_id()
    except RuntimeError:
        runtime.init()


def _local_fs() -> type:
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem


def _warn_if_no_cpu_for_data(scaling: ScalingConfig) -> None:
    """Dataset tasks need CPUs the ranks' bundles do not hold (as in Ray); say so early."""
    total = runtime.cluster_resources().get("CPU", 0.0)
    held = scaling.bundle().get("CPU", 0.0) * scaling.min_workers
    if total - held < 1.0:
        logger.warning(
            "the ranks reserve %g of the cluster's %g CPUs, leaving less than one for the "
            "dataset's tasks: ingest will wait for CPUs that never free up. Use fewer or "
            "smaller workers, or a bigger cluster.",
            held,
            total,
        )


class DataParallelTrainer:
    """Data-parallel training: one rank actor per worker, each in its own node process.

    Args:
        train_loop_per_worker: ``fn(config)`` or ``fn()``, run by every rank; it calls
            ``train.report``, ``train.get_checkpoint``, ``train.get_context`` and
            ``train.get_dataset_shard``.
        train_loop_config: the dict passed to it.
        backend_config: sets up the framework in each rank (the base does nothing).
        scaling_config: ranks and their resources.
        run_config: name, storage, checkpoint and failure handling.
        datasets: ``runtime.data`` datasets by name; see ``dataset_config``.
        dataset_config: which datasets are split across ranks (default: ``"train"``).
        resume_from_checkpoint: the checkpoint ``train.get_checkpoint()`` gives at the start.
        metadata: a dict every rank sees as ``get_context().get_metadata()``.

    Raises:
        TypeError / ValueError: bad arguments (before anything starts).
    """

    _backend_config_cls: type[BackendConfig] = BackendConfig

    def __init__(
        self,
        train_loop_per_worker: Callable[..., Any],
        *,
        train_loop_config: dict[str, Any] | None = None,
        backend_config: BackendConfig | None = None,
        scaling_config: ScalingConfig | None = None,
        run_config: RunConfig | None = None,
        datasets: dict[str, Any] | None = None,
        dataset_config: DataConfig | None = None,
        resume_from_checkpoint: Checkpoint | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not callable(train_loop_per_worker):
            raise TypeError(
                "train_loop_per_worker must be a function fn(config) or fn(), got "
                f"{type(train_loop_per_worker).__name__}"
            )
        if train_loop_config is not None and not isinstance(train_loop_config, dict):
            raise TypeError(
                f"train_loop_config must be a dict, got {type(train_loop_config).__name__}"
            )
        scaling_config = ScalingConfig() if scaling_config is None else scaling_config
        if not isinstance(scaling_config, ScalingConfig):
            raise TypeError("scaling_config must be a train.ScalingConfig")
        run_config = RunConfig() if run_config is None else run_config
        if not isinstance(run_config, RunConfig):
            raise TypeError("run_config must be a train.RunConfig")
        backend_config = self._backend_config_cls() if backend_config is None else backend_config
        if not isinstance(backend_config, BackendConfig):
            raise TypeError("backend_config must be a train.BackendConfig")
        datasets = dict(datasets or {})
        for name, ds in datasets.items():
            if not isinstance(name, str) or not callable(getattr(ds, "streaming_split", None)):
                raise TypeError(
                    f"datasets[{name!r}] must be a runtime.data Dataset, got {type(ds).__name__}"
                )
        dataset_config = DataConfig() if dataset_config is None else dataset_config
        if not isinstance(dataset_config, DataConfig):
            raise TypeError("dataset_config must be a train.DataConfig")
        if resume_from_checkpoint is not None and not isinstance(
            resume_from_checkpoint, Checkpoint
        ):
            raise TypeError("resume_from_checkpoint must be a train.Checkpoint")
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.backend_config = backend_config
        self.scaling_config = scaling_config
        self.run_config = run_config
        self.datasets = datasets
        self.dataset_config = dataset_config
        self.resume_from_checkpoint = resume_from_checkpoint
        self.metadata = metadata

    def fit(self) -> Result:
        """Train to the end; the Result's ``error`` is set if failures ran past max_failures.

        Raises:
            WorkerGroupError: the cluster can never hold the worker group (raised before
                any rank starts).
        """
        return self._fit(on_report=None)

    def _fit(self, on_report: OnReport | None, in_tune: bool = False) -> Result:
        _ensure_runtime()
        check_fits(self.scaling_config)
        if self.datasets:
            _warn_if_no_cpu_for_data(self.scaling_config)
        rc = self.run_config
        name = rc.name or f"{type(self).__name__}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        fs, base = resolve_filesystem(
            rc.storage_path or default_storage_path(), rc.storage_filesystem
        )
        if isinstance(fs, _local_fs()):
            run_path = os.path.join(base, name)
        else:
            run_path = f"{base.rstrip('/')}/{name}"
        assert rc.checkpoint_config is not None and rc.failure_config is not None
        self._check_checkpoint_config(rc.checkpoint_config)
        spec = RunSpec(
            fn=self.train_loop_per_worker,
            config=self.train_loop_config,
            scaling=self.scaling_config,
            backend_config=self.backend_config,
            failure=rc.failure_config,
            storage=RunStorage(StorageContext(fs, run_path), rc.checkpoint_config),
            name=name,
            datasets=self.datasets,
            data_config=self.dataset_config,
            resume_from=self.resume_from_checkpoint,
            metadata=self.metadata,
            verbose=rc.verbose,
            on_report=on_report,
            in_tune=in_tune,
            run_config=rc,
            restoring=self._restoring,
        )
        if not in_tune:
            self._save(spec.storage.context)
        return Controller(spec).run()

    _restoring = False

    def _save(self, context: StorageContext) -> None:
        """Write this trainer, without its datasets, for :meth:`restore`."""
        import cloudpickle

        saved = copy.copy(self)
        saved.datasets = dict.fromkeys(self.datasets)  # names only: Datasets are not durable
        saved._restoring = False
        try:
            blob = cloudpickle.dumps(saved)
        except Exception as exc:  # an unpicklable callback, say: restore will say so
            logger.warning("the trainer cannot be saved for restore(): %s", exc)
            return
        context.write_bytes(context.join(TRAINER_FILE), blob)

    @classmethod
    def can_restore(cls, path: str, storage_filesystem: Any = None) -> bool:
        """Whether ``path`` holds a run of a trainer that :meth:`restore` can continue."""
        fs, run_path = resolve_filesystem(os.fspath(path), storage_filesystem)
        context = StorageContext(fs, run_path)
        return context.exists(context.join(TRAINER_FILE))

    @classmethod
    def restore(
        cls,
        path: str,
        *,
        datasets: dict[str, Any] | None = None,
        train_loop_per_worker: Callable[..., Any] | None = None,
        train_loop_config: dict[str, Any] | None = None,
        storage_filesystem: Any = None,
        **kwargs: Any,
    ) -> DataParallelTrainer:
        """The trainer of the run at ``path`` (``storage_path/name``), to ``fit()`` again: it
        continues that run in the same folder, from its latest checkpoint, with its metrics
        history and kept checkpoints (after a crash of the driver, say).

        Args:
            datasets: the datasets again, by the same names (they are not saved).
            train_loop_per_worker / train_loop_config: replace the saved ones.
            **kwargs: other trainer attributes to replace (``scaling_config``, ...).

        Raises:
            FileNotFoundError: no restorable run at ``path``.
            ValueError: a dataset the run had is missing from ``datasets``.
            TypeError: the run was made by another trainer class.
        """
        import cloudpickle

        fs, run_path = resolve_filesystem(os.fspath(path), storage_filesystem)
        context = StorageContext(fs, run_path)
        blob = context.read_bytes(context.join(TRAINER_FILE))
        if blob is None:
            raise FileNotFoundError(f"no restorable Train run at {path!r} ({TRAINER_FILE})")
        trainer = cloudpickle.loads(blob)
        if not isinstance(trainer, cls):
            raise TypeError(
                f"the run at {path!r} was made by {type(trainer).__name__}, not {cls.__name__}"
            )
        missing = sorted(set(trainer.datasets) - set(datasets or {}))
        if missing:
            raise ValueError(f"restore needs datasets={{...}} again, with {missing}")
        trainer.datasets = dict(datasets or {})
        if train_loop_per_worker is not None:
            trainer.train_loop_per_worker = train_loop_per_worker
        if train_loop_config is not None:
            trainer.train_loop_config = train_loop_config
        for key, value in kwargs.items():
            if not hasattr(trainer, key):
                raise TypeError(f"restore() got an unexpected argument {key!r}")
            setattr(trainer, key, value)
        base, name = os.path.split(run_path.rstrip("/"))
        if not isinstance(fs, _local_fs()):
            base, _, name = run_path.rstrip("/").rpartition("/")
        trainer.run_config = dataclasses.replace(
            trainer.run_config, name=name, storage_path=base, storage_filesystem=storage_filesystem
        )
        latest = Result.from_path(os.fspath(path), storage_filesystem).checkpoint
        if latest is not None:
            trainer.resume_from_checkpoint = latest
        trainer._restoring = True
        return trainer

    #: Whether this trainer takes checkpoints itself (then checkpoint_frequency applies).
    _saves_own_checkpoints = False

    def _check_checkpoint_config(self, config: CheckpointConfig) -> None:
        if self._saves_own_checkpoints or _warned_frequency:
            return
        if config.checkpoint_frequency or config.checkpoint_at_end:
            _warned_frequency.append(True)
            logger.warning(
                "CheckpointConfig(checkpoint_frequency=%s, checkpoint_at_end=%s) applies to "
                "trainers that checkpoint themselves (XGBoostTrainer, LightGBMTrainer); %s "
                "runs your loop, which decides when to pass a checkpoint to train.report, so "
                "they are ignored",
                config.checkpoint_frequency,
                config.checkpoint_at_end,
                type(self).__name__,
            )

    # --- Tune -----------------------------------------------------------------------------

    def _with_param_space(self, config: dict[str, Any]) -> DataParallelTrainer:
        """A copy with a trial's config applied (the keys of Tune's ``param_space``)."""
        unknown = sorted(set(config) - set(_TUNABLE_KEYS))
        if unknown:
            raise ValueError(
                f"param_space keys {unknown} are not trainer arguments; a trainer takes "
                f"{', '.join(_TUNABLE_KEYS)} (put loop settings under 'train_loop_config')"
            )
        trainer = copy.copy(self)
        if "train_loop_config" in config:
            trainer.train_loop_config = {
                **(self.train_loop_config or {}),
                **dict(config["train_loop_config"]),
            }
        scaling = config.get("scaling_config")
        if isinstance(scaling, dict):
            scaling = dataclasses.replace(self.scaling_config, **scaling)
        if scaling is not None:
            if not isinstance(scaling, ScalingConfig):
                raise TypeError("param_space['scaling_config'] must be a ScalingConfig or dict")
            trainer.scaling_config = scaling
        if "datasets" in config:
            trainer.datasets = {**self.datasets, **dict(config["datasets"])}
        base = self.run_config.name or type(self).__name__
        trainer.run_config = dataclasses.replace(
            self.run_config, name=f"{base}_trial_{uuid.uuid4().hex[:8]}", verbose=0
        )
        return trainer

    def as_trainable(self) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        """A Tune function trainable: one worker group per trial, every report forwarded."""
        trainer = self

        def train_trial(config: dict[str, Any]) -> dict[str, Any] | None:
            trial = trainer._with_param_space(dict(config or {}))

            def forward(metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
                libs_trainable.report_to_tuner(
                    metrics, None if checkpoint is None else checkpoint.path
                )

            result = trial._fit(on_report=forward, in_tune=True)
            if result.error is not None:
                raise result.error
            return None

        train_trial.__name__ = type(self).__name__
        return train_trial

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_workers={self.scaling_config.num_workers})"
