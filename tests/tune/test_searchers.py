"""Searchers: every one passes the conformance class; Optuna finds a quadratic's optimum;
points_to_evaluate run first; ConcurrencyLimiter bounds the live trials."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from runtime import tune

from . import trainables as tr
from .conformance import SearcherConformance

pytestmark = pytest.mark.timeout(60)


class TestBasicVariantGenerator(SearcherConformance):
    def make_searcher(self) -> tune.Searcher:
        return tune.BasicVariantGenerator(random_state=0)


class TestOptunaSearch(SearcherConformance):
    def make_searcher(self) -> tune.Searcher:
        return tune.OptunaSearch(seed=0)


class TestOptunaWithRandomSampler(SearcherConformance):
    def make_searcher(self) -> tune.Searcher:
        import optuna

        return tune.OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=0))


class TestConcurrencyLimiter(SearcherConformance):
    def make_searcher(self) -> tune.Searcher:
        return tune.ConcurrencyLimiter(tune.OptunaSearch(seed=0), max_concurrent=2)


def test_optuna_finds_the_optimum_of_a_2d_quadratic(cluster: object, storage: str) -> None:
    grid = tune.run(
        tr.quadratic,
        config={"x": tune.uniform(-5, 10), "y": tune.uniform(-5, 5)},
        num_samples=40,
        metric="loss",
        mode="min",
        search_alg=tune.OptunaSearch(seed=7),
        max_concurrent_trials=1,  # sequential: TPE sees every result; the run is repeatable
        storage_path=storage,
        verbose=0,
    )
    best = grid.get_best_result()
    assert len(grid) == 40
    assert best.metrics["loss"] - 1.0 < 0.5  # quadratic() adds 1/(i+1) = 1 at its one step
    assert abs(best.config["x"] - 3) < 0.75 and abs(best.config["y"] + 1) < 0.75


def test_points_to_evaluate_run_first(cluster: object, storage: str) -> None:
    points = [{"x": 3.0, "y": -1.0}, {"x": 0.0, "y": 0.0}]
    for searcher, kwargs in (
        (tune.OptunaSearch(points_to_evaluate=points, seed=0), {}),
        (None, {"points_to_evaluate": points}),
    ):
        grid = tune.run(
            tr.quadratic,
            config={"x": tune.uniform(-5, 10), "y": tune.uniform(-5, 5)},
            num_samples=3,
            metric="loss",
            mode="min",
            search_alg=searcher,
            max_concurrent_trials=1,
            storage_path=storage,
            verbose=0,
            **kwargs,
        )
        configs = [r.config for r in sorted(grid, key=lambda r: r.trial_id)]
        assert configs[:2] == points
        assert grid.best_config == {"x": 3.0, "y": -1.0}


@pytest.mark.parametrize(
    ("space", "kind"),
    [
        ({"x": tune.randn()}, "randn"),
        ({"x": tune.sample_from(lambda spec: 1)}, "sample_from"),
        ({"x": tune.grid_search([1, 2])}, "grid_search"),
    ],
)
def test_optuna_rejects_what_it_cannot_search(
    cluster: object, storage: str, space: dict[str, Any], kind: str
) -> None:
    with pytest.raises(ValueError, match=kind):
        tune.run(
            tr.quadratic,
            config=space,
            metric="loss",
            mode="min",
            search_alg=tune.OptunaSearch(),
            storage_path=storage,
            verbose=0,
        )


def test_optuna_needs_a_metric_before_any_trial(cluster: object, storage: str) -> None:
    with pytest.raises(ValueError, match=r"OptunaSearch.*needs a metric"):
        tune.run(
            tr.quadratic,
            config={"x": tune.uniform(0, 1)},
            search_alg=tune.OptunaSearch(),
            storage_path=storage,
            verbose=0,
        )


def test_concurrency_limiter_bounds_live_trials(cluster: object, storage: str) -> None:
    grid = tune.run(
        tr.timed,
        config={"i": tune.uniform(0, 1)},
        num_samples=4,
        metric="end",
        mode="max",
        search_alg=tune.ConcurrencyLimiter(tune.OptunaSearch(seed=0), max_concurrent=1),
        storage_path=storage,
        verbose=0,
    )
    spans = sorted((r.metrics["start"], r.metrics["end"]) for r in grid)
    assert len(spans) == 4
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_concurrency_limiter_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        tune.ConcurrencyLimiter(tune.BasicVariantGenerator(), max_concurrent=0)
    with pytest.raises(TypeError, match="Searcher"):
        tune.ConcurrencyLimiter("optuna", max_concurrent=1)  # type: ignore[arg-type]
