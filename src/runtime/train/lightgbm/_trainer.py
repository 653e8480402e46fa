"""LightGBMTrainer: distributed LightGBM on a worker group, over LightGBM's socket network.

The trainer asks every rank for a free port before the loop; each rank passes
``machines`` (every rank's ``host:port``), its own ``local_listen_port`` and
``num_machines`` to ``lightgbm.train``, which connects the ranks itself (``tree_learner``
defaults to ``"data"``: each rank holds a part of the rows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from runtime.train import _session
from runtime.train._backend import Backend, BackendConfig
from runtime.train._checkpoint import Checkpoint
from runtime.train._context import TrainContext
from runtime.train._gbdt import WORKER_ADDRS_ENV, GBDTTrainer, RoundReporter, load_shards

CHECKPOINT_NAME = "model.txt"


@dataclass
class LightGBMConfig(BackendConfig):
    """Options of LightGBM's network in the ranks.

    Args:
        timeout_s: LightGBM's socket ``time_out`` (it counts in minutes; rounded up).
        tree_learner: ``"data"`` (default), ``"feature"`` or ``"voting"``.
    """

    timeout_s: float = 300.0
    tree_learner: str = "data"
    needs_worker_ports = True
    preload_modules = ("lightgbm",)

    def __post_init__(self) -> None:
        if self.tree_learner not in ("data", "feature", "voting"):
            raise ValueError(
                f"tree_learner must be 'data', 'feature' or 'voting', got {self.tree_learner!r}"
            )

    def make_backend(self) -> Backend:
        return _LightGBMBackend(self)


class _LightGBMBackend(Backend):
    def __init__(self, config: LightGBMConfig) -> None:
        self.config = config

    def on_start(self, context: TrainContext, master_addr: str, master_port: int) -> None:
        _network_params.clear()
        if context.world_size < 2:
            return
        machines = os.environ[WORKER_ADDRS_ENV]
        own = machines.split(",")[context.world_rank]
        _network_params.update(
            {
                "machines": machines,
                "local_listen_port": int(own.rsplit(":", 1)[1]),
                "num_machines": context.world_size,
                "tree_learner": self.config.tree_learner,
                "pre_partition": True,
                "time_out": max(1, int((self.config.timeout_s + 59) // 60)),
            }
        )


_network_params: dict[str, Any] = {}  # this rank's, set by the backend before the loop


def network_params() -> dict[str, Any]:
    """The ``lightgbm.train`` parameters that join this rank to the others (for your own
    loop: ``lightgbm.train({**params, **network_params()}, ...)``)."""
    return dict(_network_params)


def _lightgbm_loop(config: dict[str, Any]) -> None:
    """Each rank: its shards into lightgbm Datasets, then lightgbm.train, a report per round."""
    import lightgbm

    shards = load_shards(config["label_column"])
    train_set = lightgbm.Dataset(*shards["train"], free_raw_data=False)
    names = ["train"] + [n for n in shards if n != "train"]
    sets = [train_set] + [
        lightgbm.Dataset(*shards[n], reference=train_set, free_raw_data=False) for n in names[1:]
    ]
    params = {"num_threads": 1, "verbose": -1, **config["params"], **network_params()}
    total = int(config["num_boost_round"])
    booster = None
    if (checkpoint := _session.get_checkpoint()) is not None:
        booster = LightGBMTrainer.get_model(checkpoint)
    done = booster.current_iteration() if booster is not None else 0

    def save(model: Any, path: str) -> None:
        model.save_model(path)

    reporter = RoundReporter(config["frequency"], config["at_end"], CHECKPOINT_NAME, save)

    def report_round(env: Any) -> None:
        metrics = {
            f"{data}-{name}": float(value) for data, name, value, *_ in env.evaluation_result_list
        }
        reporter.after_round(env.model, env.iteration + 1, metrics)

    model = booster
    if total > done:
        model = lightgbm.train(
            params,
            train_set,
            num_boost_round=total - done,
            valid_sets=sets,
            valid_names=names,
            init_model=booster,
            callbacks=[report_round],
            **config.get("train_kwargs", {}),
        )
    if model is not None:
        reporter.after_training(model, model.current_iteration())


class LightGBMTrainer(GBDTTrainer):
    """Distributed LightGBM: every rank trains on its shard, LightGBM's network joins them.

    Example::

        trainer = LightGBMTrainer(
            label_column="target",
            params={"objective": "binary", "metric": ["binary_logloss"]},
            num_boost_round=20,
            datasets={"train": train_ds, "valid": valid_ds},
            scaling_config=train.ScalingConfig(num_workers=2),
        )
        booster = LightGBMTrainer.get_model(trainer.fit().checkpoint)

    Takes the arguments of :class:`~runtime.train.xgboost.XGBoostTrainer` (with
    ``lightgbm_config``); checkpoints hold ``model.txt``. Metrics are each rank's
    evaluation on its own shard; rank 0's are kept.
    """

    _backend_config_cls = LightGBMConfig
    _loop = staticmethod(_lightgbm_loop)

    def __init__(
        self,
        train_loop_per_worker: Any = None,
        *,
        lightgbm_config: LightGBMConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if lightgbm_config is not None and not isinstance(lightgbm_config, LightGBMConfig):
            raise TypeError("lightgbm_config must be a train.lightgbm.LightGBMConfig")
        kwargs.setdefault("backend_config", lightgbm_config)
        super().__init__(train_loop_per_worker, **kwargs)

    @staticmethod
    def get_model(checkpoint: Checkpoint) -> Any:
        """The ``lightgbm.Booster`` saved in a checkpoint of this trainer."""
        import lightgbm

        with checkpoint.as_directory() as d:
            return lightgbm.Booster(model_file=os.path.join(d, CHECKPOINT_NAME))
