"""Ray's Tune names added for unchanged programs: with_parameters/with_resources, the
quantized domains, the stoppers, CLIReporter, ExperimentAnalysis, Tuner.get_results,
Result.get_best_checkpoint/from_path, OptunaSearch storage, HyperOpt and BayesOpt."""

from __future__ import annotations

import datetime
import io
import pickle
import random
import time
from typing import Any

import numpy as np
import pytest

from runtime import tune

from . import compat_trainables as ct
from . import trainables as tr

cluster_tests = [pytest.mark.timeout(90), pytest.mark.usefixtures("cluster")]


# ----------------------------------------------------------------- search spaces (unit)


def test_quantized_domains_stay_in_range_on_their_grid() -> None:
    rng = random.Random(0)
    ints = {tune.qrandint(1, 10, 3).sample(rng) for _ in range(300)}
    assert ints == {3, 6, 9}  # upper bound included (as Ray), every value a multiple of q
    assert {tune.qrandint(0, 4).sample(rng) for _ in range(300)} == {0, 1, 2, 3, 4}
    logs = [tune.qlograndint(1, 1000, 5).sample(rng) for _ in range(300)]
    assert all(5 <= v <= 1000 and v % 5 == 0 for v in logs)
    floats = [tune.qloguniform(1e-3, 1.0, 1e-3).sample(rng) for _ in range(300)]
    assert all(1e-3 - 1e-12 <= v <= 1.0 + 1e-12 for v in floats)
    assert all(abs(v / 1e-3 - round(v / 1e-3)) < 1e-6 for v in floats)
    normals = [tune.qrandn(10.0, 2.0, 0.5).sample(rng) for _ in range(300)]
    assert all(abs(v * 2 - round(v * 2)) < 1e-9 for v in normals)
    assert 9.0 < float(np.mean(normals)) < 11.0
    with pytest.raises(ValueError, match="q must be an int >= 1"):
        tune.qrandint(0, 10, 0)


# ----------------------------------------------------------------------- stoppers (unit)


def test_plateau_stopper_stops_a_trial_once_its_metric_is_flat() -> None:
    stopper = tune.TrialPlateauStopper("loss", std=0.01, num_results=3, grace_period=3)
    decisions = [stopper("t", {"loss": v}) for v in (5.0, 4.0, 3.0, 2.0, 2.0, 2.0)]
    assert decisions == [False, False, False, False, False, True]
    assert not stopper("other", {"loss": 2.0})  # per trial
    thresholded = tune.TrialPlateauStopper(
        "loss", num_results=2, grace_period=0, metric_threshold=1.0, mode="min"
    )
    assert [thresholded("t", {"loss": v}) for v in (3.0, 3.0, 0.5, 0.5)] == [
        False, False, False, True,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="metric_threshold needs mode"):
        tune.TrialPlateauStopper("loss", metric_threshold=1.0)


def test_timeout_stopper_stops_everything_after_its_time_even_unpickled() -> None:
    stopper = tune.TimeoutStopper(datetime.timedelta(seconds=0.3))
    assert not stopper("t", {}) and not stopper.stop_all()
    copy = pickle.loads(pickle.dumps(stopper))
    deadline = time.monotonic() + 5
    while not (stopper.stop_all() and copy.stop_all()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stopper.stop_all() and copy.stop_all()
    with pytest.raises(ValueError, match="positive"):
        tune.TimeoutStopper(0)


def test_combined_stopper_stops_when_any_stopper_does() -> None:
    combined = tune.CombinedStopper(
        tune.MaximumIterationStopper(3), tune.TrialPlateauStopper("loss", num_results=2)
    )
    assert not combined("t", {"training_iteration": 1, "loss": 1.0})
    assert combined("t", {"training_iteration": 3, "loss": 5.0})
    assert not combined.stop_all()
    assert tune.CombinedStopper(tune.TimeoutStopper(1e-6)).stop_all()
    with pytest.raises(TypeError):
        tune.CombinedStopper("stop")  # type: ignore[arg-type]


def test_pretty_print_sorts_and_indents_and_drops_the_config() -> None:
    from runtime.tune.logger import pretty_print

    text = pretty_print({"loss": 0.25, "info": {"lr": 0.1, "empty": {}}, "config": {"a": 1}})
    assert text == "info:\n  lr: 0.1\nloss: 0.25\n"
    assert pretty_print({"a": 1, "b": 2}, exclude={"b"}) == "a: 1\n"


def test_rays_module_paths_for_the_new_names() -> None:
    from runtime.tune.stopper import CombinedStopper, TimeoutStopper, TrialPlateauStopper
    from runtime.tune.tuner import Tuner

    assert Tuner is tune.Tuner
    assert CombinedStopper is tune.CombinedStopper
    assert TimeoutStopper is tune.TimeoutStopper
    assert TrialPlateauStopper is tune.TrialPlateauStopper


# ------------------------------------------------------------------------- on a cluster


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_with_parameters_hands_each_trial_the_stored_values(storage: str) -> None:
    data = np.arange(10_000, dtype=np.float64)
    grid = tune.Tuner(
        tune.with_parameters(ct.uses_data, data=data, offset=1),
        param_space={"k": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    assert sorted(r.metrics["total"] for r in grid) == [data.sum() + 1, 2 * data.sum() + 1]
    grid = tune.Tuner(
        tune.with_parameters(ct.UsesData, data=data),
        param_space={"k": 3},
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    ).fit()
    assert grid[0].metrics["total"] == 3 * data.sum()
    with pytest.raises(TypeError, match="keyword arguments"):
        tune.with_parameters(ct.uses_data)


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_with_resources_sets_what_each_trial_reserves(storage: str) -> None:
    grid = tune.run(
        tune.with_resources(tr.timed, {"cpu": 1, "custom": 2}),
        config={"sleep": 0.2, "i": tune.grid_search([0, 1])},
        storage_path=storage,
        verbose=0,
    )
    assert [t.resources for t in grid.trials] == [{"CPU": 1.0, "custom": 2.0}] * 2
    spans = sorted((r.metrics["start"], r.metrics["end"]) for r in grid)
    assert spans[0][1] <= spans[1][0]  # the cluster has 2 custom: one trial at a time
    with pytest.raises(TypeError, match="function of the"):
        tune.with_resources(tr.timed, lambda config: {"cpu": 1})


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_cli_reporter_prints_the_chosen_columns_sorted_by_the_metric(storage: str) -> None:
    out = io.StringIO()
    reporter = tune.CLIReporter(
        metric_columns={"loss": "Loss"},
        parameter_columns=["x"],
        sort_by_metric=True,
        max_report_frequency=60,
        out=out,
    )
    tune.run(
        ct.parabola,
        config={"x": tune.grid_search([0.0, 3.0, 10.0])},
        metric="loss",
        mode="min",
        storage_path=storage,
        progress_reporter=reporter,
    )
    table = out.getvalue().split("Number of trials: 3 (3 TERMINATED)")[-1]
    header = next(line for line in table.splitlines() if "Trial name" in line)
    assert [c.strip() for c in header.strip("| ").split("|")] == [
        "Trial name", "status", "x", "Loss",
    ]  # fmt: skip
    rows = [line for line in table.splitlines() if "TERMINATED" in line]
    assert [row.split("|")[3].strip() for row in rows] == ["3", "0", "10"]  # best first
    with pytest.raises(ValueError, match="already shown"):
        reporter.add_metric_column("loss")


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_run_answers_as_rays_experiment_analysis(storage: str) -> None:
    analysis = tune.run(
        ct.parabola,
        config={"x": tune.grid_search([0.0, 2.5, 7.0])},
        metric="loss",
        mode="min",
        storage_path=storage,
        verbose=0,
    )
    assert analysis.best_trial.config["x"] == 2.5
    assert analysis.get_best_config() == {"x": 2.5}
    assert analysis.get_best_config(metric="loss", mode="max") == {"x": 7.0}
    assert analysis.get_best_trial("loss", "min") is analysis.best_trial
    assert analysis.get_best_trial("missing", "min") is None
    assert analysis.get_best_logdir() == analysis.best_trial.path
    df = analysis.dataframe()
    assert sorted(df["config/x"]) == [0.0, 2.5, 7.0]
    assert len(analysis.results_df) == 3 and len(analysis.trials) == 3
    assert analysis.get_all_configs() == {t.path: t.config for t in analysis.trials}


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_get_results_and_a_trials_best_checkpoint_and_from_path(storage: str) -> None:
    tuner = tune.Tuner(
        tr.scored_checkpoints,
        param_space={"scores": [0.2, 0.9, 0.5]},
        run_config=tune.RunConfig(name="scored", storage_path=storage, verbose=0),
    )
    with pytest.raises(RuntimeError, match="no results yet"):
        tuner.get_results()
    grid = tuner.fit()
    assert tuner.get_results() is grid
    result = grid[0]
    assert result.get_best_checkpoint("acc", "max").to_dict() == {"acc": 0.9}
    assert result.get_best_checkpoint("acc", "min").to_dict() == {"acc": 0.2}
    with pytest.raises(ValueError, match="metric 'loss'"):
        result.get_best_checkpoint("loss", "max")
    again = tune.Result.from_path(result.path)
    assert again.metrics["acc"] == 0.5 and again.config == result.config
    assert again.get_best_checkpoint("acc", "max").to_dict() == {"acc": 0.9}
    restored = tune.Tuner.restore(f"{storage}/scored", tr.scored_checkpoints)
    assert [r.metrics["acc"] for r in restored.get_results()] == [0.5]
    with pytest.raises(FileNotFoundError):
        tune.Result.from_path(storage)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("cluster")
def test_fail_fast_stops_the_other_trials_at_once(storage: str) -> None:
    grid = tune.run(
        ct.slow_or_failing,
        config={"fail": tune.grid_search([False, True]), "marker": f"{storage}/failed"},
        failure_config=tune.FailureConfig(fail_fast=True),
        storage_path=storage,
        verbose=0,
        raise_on_failed_trial=False,
    )
    by_fail = {r.config["fail"]: r for r in grid}
    assert by_fail[True].error is not None and by_fail[True].status == "ERROR"
    assert by_fail[False].status == "TERMINATED"
    assert by_fail[False].error is None
    assert "step" not in by_fail[False].metrics  # stopped before its first report, as Ray


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("cluster")
def test_optuna_search_keeps_its_study_in_the_given_storage(storage: str) -> None:
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{storage}/optuna.db"
    search = tune.OptunaSearch(study_name="my-study", storage=url, seed=0)
    tune.run(
        ct.parabola,
        config={"x": tune.uniform(0, 6)},
        num_samples=4,
        metric="loss",
        mode="min",
        search_alg=search,
        storage_path=storage,
        verbose=0,
    )
    study = optuna.load_study(study_name="my-study", storage=url)
    assert len([t for t in study.trials if t.state.is_finished()]) == 4
    with pytest.raises(TypeError, match="storage"):
        tune.OptunaSearch(storage=42)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("cluster")
@pytest.mark.parametrize("searcher", ["hyperopt", "bayesopt"])
def test_hyperopt_and_bayesopt_search_near_the_minimum(storage: str, searcher: str) -> None:
    alg: Any
    if searcher == "hyperopt":
        pytest.importorskip("hyperopt")
        from runtime.tune.search.hyperopt import HyperOptSearch

        alg = HyperOptSearch(
            n_initial_points=4,
            random_state_seed=0,
            points_to_evaluate=[{"x": 1.0, "y": -1.0, "kind": "b"}],
        )
        kind = tune.choice(["a", "b"])
        space = {"x": tune.uniform(-5, 10), "y": tune.qrandint(-3, 3), "kind": kind}
    else:
        pytest.importorskip("bayes_opt")
        from runtime.tune.search.bayesopt import BayesOptSearch

        alg = BayesOptSearch(random_state=0, random_search_steps=4)
        space = {"x": tune.uniform(-5, 10), "y": tune.uniform(-3, 3), "kind": "fixed"}
    grid = tune.run(
        ct.parabola,
        config=space,
        num_samples=14,
        metric="loss",
        mode="min",
        search_alg=tune.ConcurrencyLimiter(alg, max_concurrent=2),
        storage_path=storage,
        verbose=0,
    )
    assert len(grid) == 14
    losses = sorted(r.metrics["loss"] for r in grid)
    if searcher == "hyperopt":
        assert grid[0].config == {"x": 1.0, "y": -1, "kind": "b"}  # the point came first
        assert all(isinstance(r.config["y"], int) for r in grid)
        told = sorted(alg._hp_trials.losses())  # every result reached the model
    else:
        assert all(r.config["kind"] == "fixed" for r in grid)
        told = sorted(-t for t in alg._optimizer.space.target)  # it maximizes -loss
    assert told == pytest.approx(losses)
    assert losses[0] < 5.0


def test_bayesopt_refuses_what_it_cannot_model() -> None:
    pytest.importorskip("bayes_opt")
    from runtime.tune.search.bayesopt import BayesOptSearch

    with pytest.raises(ValueError, match=r"only tune\.uniform floats; 'n' is Integer"):
        BayesOptSearch(space={"n": tune.randint(0, 3)}, metric="loss", mode="min")
