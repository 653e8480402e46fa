"""XGBoostTrainer and LightGBMTrainer on their own collectives (xgboost's tracker,
LightGBM's sockets), fed by runtime.data shards, with per-round reports, checkpoints on
CheckpointConfig's rounds, resume from a checkpoint, Tune over params, and your own loop."""

from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime import train

from . import loops

pytestmark = pytest.mark.timeout(120)


def _rows(n: int, seed: int, with_id: bool = False) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    label = ((x[:, 0] + 0.5 * x[:, 1]) > 0).astype(float)
    rows = []
    for i in range(n):
        row = {f"x{j}": float(x[i, j]) for j in range(4)}
        row["label"] = float(label[i])
        if with_id:
            row["id"] = i
        rows.append(row)
    return rows


def _datasets(**extra: object) -> dict[str, object]:
    # materialised first: the core does not yet run dataset tasks once the ranks hold CPUs
    return {
        "train": runtime.data.from_items(_rows(400, 0), override_num_blocks=8).materialize(),
        "valid": runtime.data.from_items(_rows(100, 1), override_num_blocks=2).materialize(),
        **extra,
    }


class PerRank(train.UserCallback):
    def __init__(self) -> None:
        self.reports: list[list[dict[str, object]]] = []

    def after_report(self, run_context, metrics, checkpoint):
        self.reports.append(metrics)


def test_xgboost_trains_one_model_from_both_shards_and_checkpoints_on_schedule(mesh, tmp_path):
    pytest.importorskip("xgboost")
    from runtime.train.xgboost import XGBoostTrainer

    per_rank = PerRank()
    trainer = XGBoostTrainer(
        label_column="label",
        params={"objective": "binary:logistic", "eval_metric": ["logloss", "error"]},
        num_boost_round=6,
        datasets=_datasets(),
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(
            name="xgb",
            storage_path=str(tmp_path),
            checkpoint_config=train.CheckpointConfig(checkpoint_frequency=2),
            callbacks=[per_rank],
            verbose=0,
        ),
    )
    result = trainer.fit()
    assert result.error is None, result.error
    history = result.metrics_history
    assert [m["boosting_rounds"] for m in history] == [1, 2, 3, 4, 5, 6]
    assert set(history[0]) >= {"train-logloss", "train-error", "valid-logloss", "valid-error"}
    assert history[-1]["train-logloss"] < history[0]["train-logloss"]
    # xgboost's collective joined the ranks: the training metric is over all rows, the
    # same on both ranks, though each rank holds only its shard
    assert all(r[0]["train-logloss"] == r[1]["train-logloss"] for r in per_rank.reports)
    # checkpoints on rounds 2, 4 and 6 (the last is the one at the end)
    assert [m["boosting_rounds"] for _, m in result.best_checkpoints] == [2, 4, 6]
    booster = XGBoostTrainer.get_model(result.checkpoint)
    assert booster.num_boosted_rounds() == 6
    import xgboost

    valid = _rows(100, 1)
    x = np.array([[r[f"x{j}"] for j in range(4)] for r in valid])
    y = np.array([r["label"] for r in valid])
    accuracy = float(((booster.predict(xgboost.DMatrix(x)) > 0.5) == y).mean())
    assert accuracy > 0.85

    # resuming from round 4 boosts only rounds 5 and 6
    resumed = XGBoostTrainer(
        label_column="label",
        params={"objective": "binary:logistic", "eval_metric": ["logloss"]},
        num_boost_round=6,
        datasets=_datasets(),
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(name="xgb-resumed", storage_path=str(tmp_path), verbose=0),
        resume_from_checkpoint=result.best_checkpoints[1][0],
    ).fit()
    assert resumed.error is None, resumed.error
    assert [m["boosting_rounds"] for m in resumed.metrics_history] == [5, 6, 6]
    assert XGBoostTrainer.get_model(resumed.checkpoint).num_boosted_rounds() == 6


def test_lightgbm_trainer_reports_rounds_and_its_checkpoint_predicts(mesh, tmp_path):
    pytest.importorskip("lightgbm")
    from runtime.train.lightgbm import LightGBMTrainer

    result = LightGBMTrainer(
        label_column="label",
        params={"objective": "binary", "metric": ["binary_logloss", "binary_error"]},
        num_boost_round=8,
        datasets=_datasets(),
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(name="lgbm", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert result.error is None, result.error
    history = result.metrics_history
    assert [m["boosting_rounds"] for m in history] == [*range(1, 9), 8]  # + the one at the end
    assert history[-2]["valid-binary_logloss"] < history[0]["valid-binary_logloss"]
    booster = LightGBMTrainer.get_model(result.checkpoint)
    assert booster.current_iteration() == 8
    valid = _rows(100, 1)
    x = np.array([[r[f"x{j}"] for j in range(4)] for r in valid])
    y = np.array([r["label"] for r in valid])
    assert float(((booster.predict(x) > 0.5) == y).mean()) > 0.85


def test_lightgbm_network_joins_your_own_loop_into_one_model(mesh, tmp_path):
    pytest.importorskip("lightgbm")
    from runtime.train.lightgbm import LightGBMTrainer

    per_rank = PerRank()
    ds = runtime.data.from_items(_rows(400, 2, with_id=True), override_num_blocks=8)
    result = LightGBMTrainer(
        loops.lightgbm_own_loop,
        datasets={"train": ds.materialize()},
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path), callbacks=[per_rank], verbose=0),
    ).fit()
    assert result.error is None, result.error
    ((r0, r1),) = per_rank.reports
    assert r0["rows"] + r1["rows"] == 400 and not set(r0["ids"]) & set(r1["ids"])
    assert r0["model"] == r1["model"]  # different rows, one model: the network joined them


def test_tune_searches_xgboost_params_one_worker_group_per_trial(mesh, tmp_path):
    pytest.importorskip("xgboost")
    from runtime import tune
    from runtime.train.xgboost import XGBoostTrainer

    trainer = XGBoostTrainer(
        label_column="label",
        params={"objective": "binary:logistic", "eval_metric": ["logloss"]},
        num_boost_round=3,
        datasets=_datasets(),
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path / "train")),
    )
    grid = (
        tune.Tuner(
            trainer,
            param_space={"params": {"max_depth": tune.grid_search([1, 4])}, "num_boost_round": 4},
            tune_config=tune.TuneConfig(
                metric="train-logloss", mode="min", max_concurrent_trials=1
            ),
            run_config=tune.RunConfig(name="xgb", storage_path=str(tmp_path / "tune")),
        )
        .with_resources({"cpu": 0})
        .fit()
    )
    assert len(grid) == 2 and not grid.errors
    for result in grid:
        assert result.metrics["boosting_rounds"] == 4
    best = grid.get_best_result()
    assert best.config["params"]["max_depth"] == 4  # deeper trees fit the training set closer


def test_gbdt_trainers_reject_bad_input() -> None:
    from runtime.train.xgboost import XGBoostTrainer

    with pytest.raises(ValueError, match="label_column"):
        XGBoostTrainer(datasets={"train": runtime.data.range(3)})
    with pytest.raises(ValueError, match="datasets"):
        XGBoostTrainer(label_column="y")
    with pytest.raises(ValueError, match="num_boost_round"):
        XGBoostTrainer(
            label_column="y", num_boost_round=0, datasets={"train": runtime.data.range(3)}
        )


def test_xgboost_ranks_wait_for_the_tracker_to_listen_instead_of_backing_off():
    import socket
    import time

    from runtime.train.xgboost._trainer import _listening, _wait_for_tracker

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert _listening(port) is False  # bound, not listening yet
        server.listen()
        assert _listening(port) is True
        start = time.monotonic()
        _wait_for_tracker("127.0.0.1", port, 30.0)
        assert time.monotonic() - start < 5.0
    assert _listening(port) is False
    start = time.monotonic()
    _wait_for_tracker("127.0.0.1", port, 0.3)  # nobody listens: gives up at its bound
    assert 0.3 <= time.monotonic() - start < 5.0
