"""A trial whose node dies is retried from its last checkpoint (FailureConfig.max_failures);
past that it is an ERROR and the other trials still finish. Each test gets a fresh mesh of
three one-CPU nodes, since a node is killed."""

from __future__ import annotations

import os

import pytest

from runtime import tune

from . import trainables as tr

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("mesh")]


def _starts(log: str) -> dict[str, list[int]]:
    starts: dict[str, list[int]] = {}
    with open(log) as f:
        for line in f:
            trial_id, step = line.split()
            starts.setdefault(trial_id, []).append(int(step))
    return starts


@pytest.mark.parametrize("max_failures", [1, 0])
def test_a_trial_whose_node_dies_is_retried_from_its_checkpoint(
    storage: str, max_failures: int
) -> None:
    log = os.path.join(storage, "starts.log")
    grid = tune.Tuner(
        tr.counter_with_checkpoints,
        param_space={"i": tune.grid_search([0, 1]), "iters": 5, "die_at": 3, "log": log},
        run_config=tune.RunConfig(
            storage_path=storage,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    ).fit()
    starts = _starts(log)
    died = [
        tid
        for tid, s in starts.items()
        if len(s) > 1 or tid in {r.trial_id for r in grid if r.error is not None}
    ]
    assert len(died) == 1
    if max_failures:
        assert grid.num_terminated == 2
        assert all(r.metrics["step"] == 5 for r in grid)
        assert starts[died[0]] == [0, 2]  # the retry began after its checkpoint of step 2
    else:
        assert grid.num_terminated == 1 and grid.num_errors == 1
        failed = next(r for r in grid if r.error is not None)
        assert "Died" in str(failed.error) or "died" in str(failed.error)
        assert next(r for r in grid if r.error is None).metrics["step"] == 5
