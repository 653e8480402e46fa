"""Ray 2.60's ``ray.air`` names map to Train's and Tune's, each with a deprecation warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import train, tune
from runtime.air import RayDeprecationWarning

from . import air_loops


def test_air_config_names_are_trains_with_a_deprecation_warning() -> None:
    import runtime.air
    import runtime.air.config

    for module in (runtime.air, runtime.air.config):
        for name in ("ScalingConfig", "RunConfig", "CheckpointConfig", "FailureConfig"):
            with pytest.warns(RayDeprecationWarning, match=f"use ray.train.{name} instead"):
                assert getattr(module, name) is getattr(train, name)
    with pytest.warns(RayDeprecationWarning):
        assert runtime.air.Result is train.Result
    assert issubclass(RayDeprecationWarning, DeprecationWarning)
    with pytest.raises(AttributeError):
        runtime.air.Checkpoint  # Ray 2.60 has none either


def test_air_session_outside_a_run_says_where_it_works() -> None:
    from runtime.air import session

    with pytest.warns(RayDeprecationWarning), pytest.raises(RuntimeError, match=r"tune\.report"):
        session.report({"x": 1})


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_air_session_reports_to_a_tune_trial_and_tuner_takes_airs_run_config(
    tmp_path: Path,
) -> None:
    import runtime.air

    with pytest.warns(RayDeprecationWarning):
        run_config = runtime.air.RunConfig(name="air-run", storage_path=str(tmp_path), verbose=0)
    grid = tune.Tuner(
        air_loops.tune_trial,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=run_config,
    ).fit()
    assert sorted(r.metrics["score"] for r in grid) == [2, 4]
    assert {r.metrics["trial"] for r in grid} == {r.trial_id for r in grid}
    assert grid.experiment_path == str(tmp_path / "air-run")


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_air_session_reports_to_a_train_run(tmp_path: Path) -> None:
    trainer = train.DataParallelTrainer(
        air_loops.train_loop,
        scaling_config=train.ScalingConfig(num_workers=2),
        run_config=train.RunConfig(storage_path=str(tmp_path)),
    )
    result = trainer.fit()
    assert result.metrics["rank"] == 0 and result.metrics["size"] == 2
