"""Schedulers: every one passes the conformance class; each stops (or clones) the right
trials on a toy learning curve in a real experiment."""

from __future__ import annotations

import json
import os

import pytest

from runtime import tune

from . import trainables as tr
from .conformance import SchedulerConformance

pytestmark = pytest.mark.timeout(60)


class TestFIFO(SchedulerConformance):
    def make_scheduler(self) -> tune.TrialScheduler:
        return tune.FIFOScheduler()


class TestASHA(SchedulerConformance):
    def make_scheduler(self) -> tune.TrialScheduler:
        return tune.ASHAScheduler(max_t=9, grace_period=1, reduction_factor=2)


class TestHyperBand(SchedulerConformance):
    def make_scheduler(self) -> tune.TrialScheduler:
        return tune.HyperBandScheduler(max_t=9, reduction_factor=3)


class TestMedianStoppingRule(SchedulerConformance):
    def make_scheduler(self) -> tune.TrialScheduler:
        return tune.MedianStoppingRule(
            time_attr="training_iteration", grace_period=2, min_samples_required=2
        )


class TestPBT(SchedulerConformance):
    def make_scheduler(self) -> tune.TrialScheduler:
        return tune.PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=3,
            hyperparam_mutations={"q": [1, 2, 3, 4]},
            seed=0,
        )


def _iterations(grid: tune.ResultGrid) -> dict[int, int]:
    return {r.config["q"]: r.metrics["training_iteration"] for r in grid}


def test_asha_stops_the_bad_trials_at_the_first_rung(cluster: object, storage: str) -> None:
    # Trials start best first, so each later (worse) trial meets a full rung and stops.
    grid = tune.run(
        tr.curve,
        config={"q": tune.grid_search([8, 7, 6, 5, 4, 3, 2, 1]), "iters": 16},
        metric="score",
        mode="max",
        scheduler=tune.ASHAScheduler(max_t=16, grace_period=1, reduction_factor=2),
        storage_path=storage,
        verbose=0,
    )
    iterations = _iterations(grid)
    assert iterations[8] == 16  # the best trial is never below a rung's cutoff
    assert [iterations[q] for q in (4, 3, 2, 1)] == [1, 1, 1, 1]


def test_hyperband_keeps_the_top_third_at_each_milestone(cluster: object, storage: str) -> None:
    grid = tune.run(
        tr.curve_checkpointed,
        config={"q": tune.grid_search(list(range(1, 10))), "iters": 9},
        metric="score",
        mode="max",
        scheduler=tune.HyperBandScheduler(max_t=9, reduction_factor=3),
        storage_path=storage,
        verbose=0,
    )
    iterations = _iterations(grid)
    assert iterations == {9: 9, 8: 3, 7: 3, **{q: 1 for q in range(1, 7)}}
    assert grid.num_terminated == 9


def test_median_rule_stops_a_trial_below_the_median(cluster: object, storage: str) -> None:
    grid = tune.run(
        tr.curve,
        config={"q": tune.grid_search([8, 7, 6, 1]), "iters": 10},
        metric="score",
        mode="max",
        scheduler=tune.MedianStoppingRule(
            time_attr="training_iteration", grace_period=2, min_samples_required=2
        ),
        storage_path=storage,
        verbose=0,
    )
    iterations = _iterations(grid)
    assert iterations[8] == 10 and iterations[1] == 2


def test_pbt_clones_a_better_trials_checkpoint_and_perturbs_its_config(
    cluster: object, storage: str
) -> None:
    pbt = tune.PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=3,
        hyperparam_mutations={"lr": [0.1, 0.2, 0.3, 0.4]},
        quantile_fraction=0.5,
        seed=1,
    )
    grid = tune.run(
        tr.pbt_member,
        config={
            "lr": tune.grid_search([0.1, 0.4]),
            "barrier": os.path.join(storage, "barrier"),
            "peers": 2,
            # The better trial runs longer, so it is still alive when the worse one exploits.
            "iters": tune.sample_from(lambda spec: 30 if spec.config.lr == 0.4 else 12),
            "sleep": 0.01,
        },
        metric="score",
        mode="max",
        scheduler=pbt,
        storage_path=storage,
        verbose=0,
    )
    assert grid.num_terminated == 2
    assert pbt.exploits, "PBT never exploited"
    by_id = {r.trial_id: r for r in grid}
    recipient, donor, new_config = pbt.exploits[0]
    assert new_config["lr"] in (0.1, 0.2, 0.3, 0.4)
    with open(os.path.join(by_id[recipient].path, "result.json")) as f:
        rows = [json.loads(line) for line in f]
    # After the exploit the recipient continued from the donor's checkpoint.
    assert any(row["restored_from"] == donor for row in rows)
    assert by_id[recipient].config["lr"] in (0.1, 0.2, 0.3, 0.4)


def test_pbt_needs_mutations() -> None:
    with pytest.raises(ValueError, match="hyperparam_mutations"):
        tune.PopulationBasedTraining(metric="score", mode="max")


@pytest.mark.parametrize(
    "make",
    [
        lambda: tune.ASHAScheduler(grace_period=0),
        lambda: tune.ASHAScheduler(reduction_factor=1),
        lambda: tune.ASHAScheduler(mode="up"),
        lambda: tune.HyperBandScheduler(max_t=0),
        lambda: tune.MedianStoppingRule(min_samples_required=0),
    ],
)
def test_bad_scheduler_settings_raise(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_pbt_saves_and_clones_class_trainables(cluster: object, storage: str) -> None:
    pbt = tune.PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=2,
        hyperparam_mutations={"lr": [0.1, 0.2, 0.3, 0.4]},
        quantile_fraction=0.5,
        seed=0,
    )
    grid = tune.run(
        tr.Climber,
        config={
            "lr": tune.grid_search([0.1, 0.4]),
            "barrier": os.path.join(storage, "barrier"),
            "peers": 2,
        },
        metric="score",
        mode="max",
        scheduler=pbt,
        stop={"training_iteration": 20},
        storage_path=storage,
        verbose=0,
    )
    assert grid.num_terminated == 2
    assert pbt.exploits, "PBT never exploited"
    recipient, donor, _ = pbt.exploits[0]
    by_id = {r.trial_id: r for r in grid}
    with open(os.path.join(by_id[recipient].path, "result.json")) as f:
        origins = {json.loads(line)["origin"] for line in f}
    assert donor in origins  # the recipient ran on from the donor's saved state
