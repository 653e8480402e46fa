"""XGBoostTrainer: distributed XGBoost on a worker group, over xgboost's own collective.

Rank 0 runs xgboost's tracker (``xgboost.tracker.RabitTracker``) on the rendezvous port;
every rank joins with ``xgboost.collective.init`` before the loop and leaves after it, so
``xgboost.train`` in each rank builds one model from all shards (histograms all-reduced).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from runtime.train import _session
from runtime.train._backend import Backend, BackendConfig
from runtime.train._checkpoint import Checkpoint
from runtime.train._context import TrainContext
from runtime.train._gbdt import GBDTTrainer, RoundReporter, load_shards

CHECKPOINT_NAME = "model.ubj"


#: How long a rank waits for rank 0's tracker to listen before it tries to join anyway.
_TRACKER_WAIT_S = 60.0


def _listening(port: int) -> bool | None:
    """Whether a socket of this host listens on ``port`` (from /proc/net/tcp and tcp6), or
    None where neither can be read."""
    readable = False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            # "local_address rem_address st ...": 0A is LISTEN; the port is hex after ":"
            if len(fields) > 3 and fields[3] == "0A":
                with contextlib.suppress(ValueError):
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
    return False if readable else None


def _wait_for_tracker(addr: str, port: int, timeout: float) -> None:
    """On this host, wait until rank 0's tracker listens: xgboost retries a refused join only
    after 1 s, then 2 s, ... (3-6 s lost on a first group whose rank 0 imports more slowly).
    Elsewhere, or where the table cannot be read, xgboost's own retries do."""
    if not (addr.startswith("127.") or addr == "localhost"):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port) is not False:
            return
        time.sleep(0.01)


class _XGBoostBackend(Backend):
    def __init__(self, config: XGBoostConfig) -> None:
        self.config = config
        self._tracker: Any = None
        self._joined = False

    def on_start(self, context: TrainContext, master_addr: str, master_port: int) -> None:
        if context.world_size < 2:
            return
        from xgboost import collective

        if context.world_rank == 0:
            from xgboost.tracker import RabitTracker

            self._tracker = RabitTracker(
                n_workers=context.world_size, host_ip=master_addr, port=master_port, sortby="task"
            )
            self._tracker.start()
        else:
            _wait_for_tracker(master_addr, master_port, min(_TRACKER_WAIT_S, self.config.timeout_s))
        collective.init(
            dmlc_tracker_uri=master_addr,
            dmlc_tracker_port=master_port,
            dmlc_task_id=str(context.world_rank),
            dmlc_retry=self.config.retries,
            dmlc_timeout=int(self.config.timeout_s),
        )
        self._joined = True

    def on_shutdown(self, context: TrainContext) -> None:
        if self._joined:
            from xgboost import collective

            with contextlib.suppress(Exception):
                collective.finalize()
            self._joined = False
        if self._tracker is not None:
            with contextlib.suppress(Exception):
                self._tracker.wait_for(10)
            with contextlib.suppress(Exception):
                self._tracker.free()
            self._tracker = None


@dataclass
class XGBoostConfig(BackendConfig):
    """Options of xgboost's collective in the ranks.

    Args:
        timeout_s: how long a rank waits for the others in a collective step.
        retries: connection attempts to the tracker.
    """

    timeout_s: float = 300.0
    retries: int = 10
    preload_modules = ("xgboost",)

    def make_backend(self) -> Backend:
        return _XGBoostBackend(self)


def _metrics(evals_log: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for data, per_metric in evals_log.items():
        for metric, values in per_metric.items():
            value = values[-1]
            out[f"{data}-{metric}"] = float(value[0] if isinstance(value, tuple) else value)
    return out


def _xgboost_loop(config: dict[str, Any]) -> None:
    """Each rank: its shards into DMatrix, then xgboost.train with a report per round."""
    import xgboost

    shards = load_shards(config["label_column"])
    matrices = {name: xgboost.DMatrix(x, label=y) for name, (x, y) in shards.items()}
    params = {"nthread": 1, **config["params"]}
    total = int(config["num_boost_round"])
    booster = None
    if (checkpoint := _session.get_checkpoint()) is not None:
        booster = XGBoostTrainer.get_model(checkpoint)
    done = booster.num_boosted_rounds() if booster is not None else 0

    def save(model: Any, path: str) -> None:
        model.save_model(path)

    reporter = RoundReporter(config["frequency"], config["at_end"], CHECKPOINT_NAME, save)

    class _Report(xgboost.callback.TrainingCallback):  # type: ignore[misc]
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            reporter.after_round(model, model.num_boosted_rounds(), _metrics(evals_log))
            return False

    evals = [(matrices["train"], "train")] + [(m, n) for n, m in matrices.items() if n != "train"]
    model = booster
    if total > done:
        model = xgboost.train(
            params,
            matrices["train"],
            num_boost_round=total - done,
            evals=evals,
            xgb_model=booster,
            callbacks=[_Report()],
            verbose_eval=False,
            **config.get("train_kwargs", {}),
        )
    if model is not None:
        reporter.after_training(model, model.num_boosted_rounds())


class XGBoostTrainer(GBDTTrainer):
    """Distributed XGBoost: every rank trains on its shard, xgboost's collective joins them.

    Example::

        trainer = XGBoostTrainer(
            label_column="target",
            params={"objective": "binary:logistic", "eval_metric": ["logloss", "error"]},
            num_boost_round=20,
            datasets={"train": train_ds, "valid": valid_ds},
            scaling_config=train.ScalingConfig(num_workers=2),
        )
        result = trainer.fit()          # metrics: train-logloss, valid-error, ...
        booster = XGBoostTrainer.get_model(result.checkpoint)

    Args:
        train_loop_per_worker: optional: your own loop calling ``xgboost.train`` (the
            collective is set up around it); without it, the trainer's loop below runs.
        datasets: ``"train"`` and any evaluation sets (all are split across the ranks).
        label_column: the label column; every other column is a feature.
        params: ``xgboost.train`` parameters (``nthread`` defaults to 1 per rank).
        num_boost_round: boosting rounds in all (a restart boosts only the missing ones).
        xgboost_config: :class:`XGBoostConfig`.
        **kwargs: the ``DataParallelTrainer`` arguments (``scaling_config``, ``run_config``,
            ``resume_from_checkpoint``, ...); unknown ones go to ``xgboost.train``.

    Checkpoints (``model.ubj``) follow ``CheckpointConfig(checkpoint_frequency,
    checkpoint_at_end)``; every round is a report.
    """

    _backend_config_cls = XGBoostConfig
    _loop = staticmethod(_xgboost_loop)

    def __init__(
        self,
        train_loop_per_worker: Any = None,
        *,
        xgboost_config: XGBoostConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if xgboost_config is not None and not isinstance(xgboost_config, XGBoostConfig):
            raise TypeError("xgboost_config must be a train.xgboost.XGBoostConfig")
        kwargs.setdefault("backend_config", xgboost_config)
        super().__init__(train_loop_per_worker, **kwargs)

    @staticmethod
    def get_model(checkpoint: Checkpoint) -> Any:
        """The ``xgboost.Booster`` saved in a checkpoint of this trainer."""
        import xgboost

        booster = xgboost.Booster()
        with checkpoint.as_directory() as d:
            booster.load_model(os.path.join(d, CHECKPOINT_NAME))
        return booster


class RayTrainReportCallback:
    """For your own loop: ``xgboost.train(..., callbacks=[RayTrainReportCallback()])``
    reports every round's metrics and checkpoints the model (``model.ubj``) every
    ``frequency`` rounds (0: only at the end) and at the end (Ray's name)."""

    CHECKPOINT_NAME = CHECKPOINT_NAME

    def __new__(cls, frequency: int = 0, checkpoint_at_end: bool = True) -> Any:  # type: ignore[misc]
        import xgboost

        reporter = RoundReporter(
            frequency, checkpoint_at_end, CHECKPOINT_NAME, lambda m, p: m.save_model(p)
        )

        class _Callback(xgboost.callback.TrainingCallback):  # type: ignore[misc]
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                reporter.after_round(model, model.num_boosted_rounds(), _metrics(evals_log))
                return False

            def after_training(self, model: Any) -> Any:
                reporter.after_training(model, model.num_boosted_rounds())
                return model

        return _Callback()

    @staticmethod
    def get_model(checkpoint: Checkpoint) -> Any:
        return XGBoostTrainer.get_model(checkpoint)
