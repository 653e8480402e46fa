"""tune.run and Tuner.fit end to end on a real local mesh: trainables, grids, stopping,
resources, results, storage, callbacks, loggers, progress and bad input."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from runtime import tune

from . import trainables as tr

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]


def test_a_grid_runs_its_cross_product_times_num_samples(storage: str) -> None:
    grid = tune.run(
        tr.quadratic,
        config={"x": tune.grid_search([1, 3]), "y": tune.grid_search([-1, 0]), "iters": 2},
        num_samples=2,
        metric="loss",
        mode="min",
        storage_path=storage,
        verbose=0,
    )
    assert len(grid) == 8
    assert sorted((r.config["x"], r.config["y"]) for r in grid) == sorted(
        [(x, y) for x in (1, 3) for y in (-1, 0)] * 2
    )
    assert all(r.metrics["training_iteration"] == 2 for r in grid)
    assert grid.best_config["x"] == 3 and grid.best_config["y"] == -1
    assert grid.best_result["loss"] == pytest.approx(0.5)
    best = grid.get_best_result("loss", "max")
    assert best.metrics["loss"] == pytest.approx(4 + 1 + 0.5)


def test_a_function_that_returns_a_dict_reports_it_once(storage: str) -> None:
    grid = tune.Tuner(
        tr.returns_dict,
        param_space={"a": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    assert sorted(r.metrics["score"] for r in grid) == [10, 20]
    assert all(r.metrics["done"] and r.metrics["training_iteration"] == 1 for r in grid)


def test_a_class_trainable_steps_until_stopped_and_checkpoints(storage: str) -> None:
    grid = tune.run(
        tr.Halving,
        config={"v": tune.grid_search([8.0, 16.0])},
        stop={"training_iteration": 4},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=2, num_to_keep=1),
        storage_path=storage,
        verbose=0,
    )
    assert sorted(r.metrics["v"] for r in grid) == [0.5, 1.0]
    for result in grid:
        assert result.checkpoint is not None
        assert os.path.basename(result.checkpoint.path) == "checkpoint_000004"
        kept = [d for d in os.listdir(result.path) if d.startswith("checkpoint_")]
        assert kept == ["checkpoint_000004"]  # num_to_keep=1 deleted checkpoint_000002


def test_a_class_trainable_ends_itself_with_done_and_saves_at_end(storage: str) -> None:
    grid = tune.run(
        tr.DirCheckpointing,
        config={},
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
        storage_path=storage,
        verbose=0,
    )
    (result,) = list(grid)
    assert result.metrics["n"] == 3
    assert result.checkpoint is not None
    with open(os.path.join(result.checkpoint.path, "n.txt")) as f:
        assert f.read() == "3"


def test_stop_accepts_a_function_and_a_stopper(storage: str) -> None:
    config = {"q": tune.grid_search([1, 2]), "iters": 50}
    by_fn = tune.run(
        tr.curve,
        config=config,
        stop=lambda trial_id, result: result["score"] >= 10,
        storage_path=storage,
        verbose=0,
    )
    assert sorted(r.metrics["training_iteration"] for r in by_fn) == [5, 10]

    class StopAllAt(tune.Stopper):
        def __init__(self) -> None:
            self.seen = 0

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.seen += 1
            return False

        def stop_all(self) -> bool:
            return self.seen >= 6

    by_stopper = tune.run(
        tr.curve, config=config, stop=StopAllAt(), storage_path=storage, verbose=0
    )
    assert all(r.metrics["training_iteration"] < 50 for r in by_stopper)


def test_nested_metrics_are_named_outer_slash_inner(storage: str) -> None:
    """As in Ray: stop criteria, schedulers and best-result queries read a nested metric by
    its flattened name; the reported result itself stays nested."""
    grid = tune.run(
        tr.nested_curve,
        config={"q": tune.grid_search([1, 2]), "iters": 50},
        stop={"runners/score": 10},
        metric="runners/score",
        mode="max",
        scheduler=tune.schedulers.ASHAScheduler(max_t=50, grace_period=50),
        storage_path=storage,
        verbose=0,
    )
    assert sorted(r.metrics["runners"]["steps"] for r in grid) == [5, 10]
    assert grid.get_best_result("runners/steps", "max").config["q"] == 1
    assert grid.get_best_result("runners/steps", "min", scope="last").config["q"] == 2
    assert "runners/score" not in grid[0].metrics  # callbacks and results see it nested


def _max_overlap(grid: tune.ResultGrid) -> int:
    events = []
    for r in grid:
        events += [(r.metrics["start"], 1), (r.metrics["end"], -1)]
    events.sort()
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize(
    ("resources", "max_concurrent", "allowed"),
    [
        ({"cpu": 1}, None, 2),  # two one-CPU nodes
        ({"cpu": 0, "custom": 2}, None, 1),  # one node has 2 units of "custom"
        ({"cpu": 1}, 1, 1),
    ],
)
def test_trials_never_oversubscribe_resources(
    storage: str, resources: dict[str, float], max_concurrent: int | None, allowed: int
) -> None:
    grid = tune.run(
        tr.timed,
        config={"i": tune.grid_search(list(range(6)))},
        resources_per_trial=resources,
        max_concurrent_trials=max_concurrent,
        storage_path=storage,
        verbose=0,
    )
    assert grid.num_terminated == 6
    assert _max_overlap(grid) <= allowed


def test_a_trial_that_raises_is_an_error_and_the_rest_finish(storage: str) -> None:
    grid = tune.Tuner(
        tr.failing,
        param_space={"fail": tune.grid_search([False, True, False]), "x": 7},
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    assert grid.num_terminated == 2 and grid.num_errors == 1
    (error,) = grid.errors
    assert "ValueError: bad config 7" in str(error)
    failed = next(r for r in grid if r.error is not None)
    with open(os.path.join(failed.path, "error.txt")) as f:
        assert "bad config 7" in f.read()
    with pytest.raises(tune.TuneError, match="did not complete"):
        tune.run(tr.failing, config={"fail": True, "x": 1}, storage_path=storage, verbose=0)


def test_storage_layout_has_params_results_progress_and_state(storage: str) -> None:
    grid = tune.run(
        tr.quadratic,
        config={"x": tune.grid_search([0, 1]), "iters": 3},
        name="layout",
        storage_path=storage,
        verbose=0,
    )
    root = os.path.join(storage, "layout")
    assert grid.experiment_path == root
    with open(os.path.join(root, "experiment_state.json")) as f:
        state = json.load(f)
    assert sorted(t["status"] for t in state["trials"]) == ["TERMINATED", "TERMINATED"]
    for result in grid:
        assert os.path.dirname(result.path) == root
        with open(os.path.join(result.path, "params.json")) as f:
            assert json.load(f) == result.config
        with open(os.path.join(result.path, "result.json")) as f:
            lines = [json.loads(line) for line in f]
        assert [r["training_iteration"] for r in lines] == [1, 2, 3]
        df = result.metrics_dataframe
        assert list(df["training_iteration"]) == [1, 2, 3]
    frame = grid.get_dataframe()
    assert sorted(frame["config/x"]) == [0, 1] and "loss" in frame


def test_callbacks_see_every_trial_event(storage: str) -> None:
    events: list[tuple[str, str]] = []

    class Recorder(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events.append(("start", trial.trial_id))

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            events.append(("result", trial.trial_id))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events.append(("complete", trial.trial_id))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events.append(("error", trial.trial_id))

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            events.append(("end", str(len(trials))))

    grid = tune.run(
        tr.failing,
        config={"fail": tune.grid_search([False, True]), "x": 0},
        callbacks=[Recorder()],
        storage_path=storage,
        verbose=0,
        raise_on_failed_trial=False,
    )
    ok = next(r.trial_id for r in grid if r.error is None)
    bad = next(r.trial_id for r in grid if r.error is not None)
    assert [e for e in events if e[1] == ok] == [("start", ok), ("result", ok), ("complete", ok)]
    assert [e for e in events if e[1] == bad] == [("start", bad), ("error", bad)]
    assert events[-1] == ("end", "2")


def test_the_tensorboard_logger_writes_event_files(storage: str) -> None:
    pytest.importorskip("tensorboardX")
    grid = tune.run(
        tr.quadratic,
        config={"x": 1, "iters": 2},
        callbacks=[tune.TBXLoggerCallback()],
        storage_path=storage,
        verbose=0,
    )
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(grid[0].path))


def test_the_progress_table_shows_trials_and_metrics(storage: str) -> None:
    out = io.StringIO()
    tune.run(
        tr.quadratic,
        config={"x": tune.grid_search([1, 2]), "iters": 2},
        metric="loss",
        mode="min",
        callbacks=[tune.ProgressReporter(metric="loss", out=out)],
        storage_path=storage,
        verbose=0,
    )
    text = out.getvalue()
    assert "Trials: 2 (2 TERMINATED)" in text
    assert "| trial" in text and "loss" in text and "quadratic_" in text


def test_reading_results_by_a_metric_never_reported_names_it(storage: str) -> None:
    grid = tune.run(tr.quadratic, config={"x": 1}, storage_path=storage, verbose=0)
    with pytest.raises(tune.MetricNotReportedError, match=r"'accuracy'.*loss"):
        grid.get_best_result("accuracy", "max")
    with pytest.raises(ValueError, match="metric and a mode"):
        grid.get_best_result()


def test_the_context_names_the_trial(storage: str) -> None:
    def whoami(config: dict[str, Any]) -> dict[str, Any]:
        ctx = tune.get_context()
        return {"id": ctx.get_trial_id(), "dir": ctx.get_trial_dir()}

    grid = tune.run(whoami, config={}, storage_path=storage, verbose=0)
    assert grid[0].metrics["id"] == grid[0].trial_id
    assert grid[0].metrics["dir"] == grid[0].path


def test_report_outside_a_trial_says_where_it_works() -> None:
    with pytest.raises(RuntimeError, match="inside a function trainable"):
        tune.report({"x": 1})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "best", "metric": "loss"}, ValueError, "'min' or 'max'"),
        ({"scheduler": tune.ASHAScheduler()}, ValueError, "ASHAScheduler.*needs a metric"),
        (
            {"scheduler": tune.ASHAScheduler(), "metric": "loss"},
            ValueError,
            "needs a mode",
        ),
        ({"config": {"x": tune.uniform}}, TypeError, "tune.uniform itself"),
        ({"stop": 5}, TypeError, "stop must be"),
        ({"resources_per_trial": {"cpu": 3}}, ValueError, "no node has that much"),
        ({"resources_per_trial": [1]}, TypeError, "PlacementGroupFactory"),
        ({"resources_per_trial": {"gpu": 1}}, ValueError, "GPU"),
        ({"resources_per_trial": {"cpu": -1}}, ValueError, ">= 0"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"resume": True}, ValueError, "needs name"),
        (
            {"search_alg": "optuna", "metric": "loss", "mode": "min"},
            TypeError,
            "Searcher",
        ),
    ],
)
def test_bad_input_fails_before_any_trial_starts(
    storage: str, kwargs: dict[str, Any], error: type, message: str
) -> None:
    kwargs.setdefault("config", {"x": 1})
    with pytest.raises(error, match=message):
        tune.run(tr.quadratic, storage_path=storage, verbose=0, **kwargs)
    assert not any(  # no trial folder was made
        os.path.isdir(os.path.join(storage, e, t))
        for e in os.listdir(storage)
        for t in os.listdir(os.path.join(storage, e))
    )


def test_a_trainable_that_is_not_callable_is_rejected() -> None:
    with pytest.raises(TypeError, match="trainable must be"):
        tune.Tuner(42)
    with pytest.raises(TypeError, match="no step"):
        tune.Tuner(dict)
    with pytest.raises(ValueError, match="no trainable registered as 'Nope'"):
        tune.Tuner("Nope")


def test_a_trainable_factory_from_another_library_plugs_in(storage: str) -> None:
    from runtime.libs import trainable as factory

    class Trainer:
        """What a Train trainer does to be tunable: as_trainable + report_to_tuner."""

        def as_trainable(self) -> Any:
            def loop(config: dict[str, Any]) -> None:
                for i in range(3):
                    assert factory.report_to_tuner({"m": config["k"] * i})

            return loop

    assert isinstance(Trainer(), factory.TrainableFactory)
    factory.register_trainable("my-trainer", Trainer())
    grid = tune.run("my-trainer", config={"k": 2}, storage_path=storage, verbose=0)
    assert grid[0].metrics["m"] == 4 and grid[0].metrics["training_iteration"] == 3
    assert factory.report_to_tuner({"m": 1}) is False  # outside a trial: a no-op


def test_a_multi_bundle_trial_reserves_a_placement_group(storage: str) -> None:
    grid = tune.run(
        tr.where_are_my_bundles,
        config={"i": tune.grid_search([0, 1, 2])},
        resources_per_trial=tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD"),
        storage_path=storage,
        verbose=0,
    )
    assert grid.num_terminated == 3, grid.errors
    for result in grid:
        # The trial ran in bundle 0, its task in bundle 1, in the host's other process.
        assert result.metrics["here"] != result.metrics["there"]
    assert _max_overlap(grid) == 1  # each trial holds both CPUs of the mesh


def test_bundles_that_cannot_be_placed_are_rejected_before_any_trial(storage: str) -> None:
    with pytest.raises(ValueError, match="bundle 1 asks for 3 CPU"):
        tune.run(
            tr.quadratic,
            config={"x": 1},
            resources_per_trial=tune.PlacementGroupFactory([{"CPU": 1}, {"CPU": 3}]),
            storage_path=storage,
            verbose=0,
        )
    with pytest.raises(ValueError, match="in all, more than the cluster has"):
        tune.run(
            tr.quadratic,
            config={"x": 1},
            resources_per_trial=tune.PlacementGroupFactory([{"CPU": 1}] * 3),
            storage_path=storage,
            verbose=0,
        )


def test_num_to_keep_keeps_the_best_checkpoints_and_the_latest(storage: str) -> None:
    grid = tune.run(
        tr.scored_checkpoints,
        config={"scores": [1, 5, 3, 4, 2]},
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="acc"),
        storage_path=storage,
        verbose=0,
    )
    result = grid[0]
    kept = sorted(d for d in os.listdir(result.path) if d.startswith("checkpoint_"))
    # The best (score 5, iteration 2) and the latest (iteration 5, kept for restarts).
    assert kept == ["checkpoint_000002", "checkpoint_000005"]
    assert result.checkpoint is not None and result.checkpoint.to_dict() == {"acc": 2}
    assert sorted(r["acc"] for _, r in result.best_checkpoints) == [2, 5]


def test_time_budget_ends_the_experiment(storage: str) -> None:
    grid = tune.Tuner(
        tr.curve,
        param_space={"q": tune.grid_search([1, 2, 3]), "iters": 10**7},
        tune_config=tune.TuneConfig(time_budget_s=0.5),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    assert all(r.metrics.get("training_iteration", 0) < 10**7 for r in grid)
    assert all(r.status in ("TERMINATED", "PENDING") for r in grid)


def test_max_failures_retries_a_trial_that_raised(storage: str) -> None:
    marker = os.path.join(storage, "marker")
    grid = tune.run(
        tr.flaky,
        config={"marker": marker},
        max_failures=1,
        storage_path=storage,
        verbose=0,
    )
    assert grid.num_terminated == 1 and grid[0].metrics["ok"] == 1
    with open(os.path.join(grid[0].path, "error.txt")) as f:
        assert "first attempt fails" in f.read()  # the failure is kept on record


def test_fail_fast_raise_stops_the_experiment_and_raises(storage: str) -> None:
    with pytest.raises(tune.TuneError, match="bad config 3"):
        tune.Tuner(
            tr.failing,
            param_space={"fail": True, "x": 3},
            run_config=tune.RunConfig(
                storage_path=storage,
                verbose=0,
                failure_config=tune.FailureConfig(fail_fast="raise"),
            ),
        ).fit()
