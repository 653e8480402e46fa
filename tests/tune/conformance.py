"""The conformance test classes every searcher and every scheduler passes.

A new searcher's tests subclass :class:`SearcherConformance` and define ``make_searcher``;
a new scheduler's subclass :class:`SchedulerConformance` and define ``make_scheduler``.
The end-to-end test of each class runs a real experiment on the module's mesh.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from runtime import tune
from runtime.tune import Trial

from . import trainables as tr

SPACE: dict[str, Any] = {
    "x": tune.uniform(-1, 1),
    "n": tune.randint(0, 4),
    "c": tune.choice(["a", "b"]),
    "nested": {"k": 5, "y": tune.loguniform(1e-3, 1)},
}


def _check_config(config: dict[str, Any]) -> None:
    assert -1 <= config["x"] < 1
    assert config["n"] in (0, 1, 2, 3)
    assert config["c"] in ("a", "b")
    assert config["nested"]["k"] == 5
    assert 1e-3 <= config["nested"]["y"] <= 1


class SearcherConformance:
    """Subclass and define ``make_searcher()`` (metric "loss", mode "min" are set later)."""

    def make_searcher(self) -> tune.Searcher:
        raise NotImplementedError

    def _ready(self, num_samples: int = 8) -> tune.Searcher:
        searcher = self.make_searcher()
        assert searcher.set_search_properties("loss", "min", SPACE, num_samples=num_samples)
        return searcher

    def test_suggestions_lie_inside_the_space(self) -> None:
        searcher = self._ready()
        for i in range(4):
            config = searcher.suggest(f"t{i}")
            assert isinstance(config, dict)
            _check_config(config)
            searcher.on_trial_result(f"t{i}", {"loss": float(i), "training_iteration": 1})
            searcher.on_trial_complete(f"t{i}", {"loss": float(i), "training_iteration": 1})

    def test_failed_and_unknown_trials_are_accepted(self) -> None:
        searcher = self._ready()
        config = searcher.suggest("t0")
        assert isinstance(config, dict)
        searcher.on_trial_complete("t0", None, error=True)
        searcher.on_trial_complete("never-suggested", {"loss": 1.0})
        assert searcher.suggest("t1") is not None or True  # may say "not now"

    def test_state_survives_save_and_restore(self, tmp_path: Any) -> None:
        searcher = self._ready()
        for i in range(2):
            searcher.suggest(f"t{i}")
            searcher.on_trial_complete(f"t{i}", {"loss": float(i), "training_iteration": 1})
        path = os.path.join(tmp_path, "searcher.pkl")
        searcher.save(path)
        fresh = self.make_searcher()
        fresh.restore(path)
        fresh.set_search_properties("loss", "min", SPACE, num_samples=8)
        config = fresh.suggest("t9")
        assert isinstance(config, dict)
        _check_config(config)

    @pytest.mark.timeout(60)
    def test_runs_an_experiment_to_the_end(self, cluster: Any, storage: str) -> None:
        grid = tune.run(
            tr.quadratic,
            config={**SPACE, "iters": 2},
            num_samples=4,
            metric="loss",
            mode="min",
            search_alg=self.make_searcher(),
            storage_path=storage,
            verbose=0,
        )
        assert len(grid) == 4 and grid.num_terminated == 4
        for result in grid:
            _check_config(result.config)


class _View:
    """The smallest ControllerView: a list of trials (the scheduler unit tests' world)."""

    def __init__(self) -> None:
        self.trials: list[Trial] = []
        self.search_finished = False

    def get_trials(self) -> list[Trial]:
        return self.trials

    def stop_trial(self, trial: Trial) -> None:
        trial.status = "TERMINATED"


DECISIONS = {tune.TrialScheduler.CONTINUE, tune.TrialScheduler.PAUSE, tune.TrialScheduler.STOP}


class SchedulerConformance:
    """Subclass and define ``make_scheduler()`` (metric "score", mode "max" set later;
    ``time_attr`` should be ``training_iteration``)."""

    def make_scheduler(self) -> tune.TrialScheduler:
        raise NotImplementedError

    def test_every_decision_is_continue_pause_or_stop(self, tmp_path: Any) -> None:
        scheduler = self.make_scheduler()
        scheduler.set_search_properties("score", "max")
        view = _View()
        for i in range(4):
            trial = Trial(f"t{i}", {"q": i}, path=os.path.join(tmp_path, f"t{i}"))
            trial.status = "RUNNING"
            view.trials.append(trial)
            scheduler.on_trial_add(view, trial)  # type: ignore[arg-type]
        for t in range(1, 10):
            for trial in view.trials:
                if trial.status != "RUNNING":
                    continue
                result = {"score": trial.config["q"] * t, "training_iteration": t}
                trial.last_result = result
                decision = scheduler.on_trial_result(view, trial, result)  # type: ignore[arg-type]
                assert decision in DECISIONS
                if decision == tune.TrialScheduler.STOP:
                    trial.status = "TERMINATED"
                    scheduler.on_trial_complete(view, trial, result)  # type: ignore[arg-type]
                elif decision == tune.TrialScheduler.PAUSE:
                    trial.status = "PAUSED"
            chosen = scheduler.choose_trial_to_run(view)  # type: ignore[arg-type]
            assert chosen is None or chosen in view.trials
            if chosen is not None:
                assert chosen.status in ("PENDING", "PAUSED")
                chosen.status = "RUNNING"

    def test_choose_trial_to_run_prefers_nothing_when_all_finished(self) -> None:
        scheduler = self.make_scheduler()
        scheduler.set_search_properties("score", "max")
        view = _View()
        view.search_finished = True
        trial = Trial("t0", {})
        trial.status = "TERMINATED"
        view.trials.append(trial)
        assert scheduler.choose_trial_to_run(view) is None  # type: ignore[arg-type]

    @pytest.mark.timeout(60)
    def test_runs_an_experiment_to_the_end(self, cluster: Any, storage: str) -> None:
        grid = tune.run(
            tr.curve_checkpointed,
            config={"q": tune.grid_search([4, 3, 2, 1]), "iters": 9},
            metric="score",
            mode="max",
            scheduler=self.make_scheduler(),
            storage_path=storage,
            verbose=0,
        )
        assert len(grid) == 4 and grid.num_terminated == 4
        assert all(1 <= r.metrics["training_iteration"] <= 9 for r in grid)
        assert grid.get_best_result().config["q"] == 4
