"""Resume after the driver was killed: finished trials are kept, unfinished ones continue
from their last checkpoint (tune.run(resume=True) and Tuner.restore)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from runtime import tune

from . import trainables as tr

pytestmark = pytest.mark.timeout(90)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRIVER = """
import sys
import runtime
from runtime import tune
from tests.tune import trainables as tr
from tests.tune.test_resume import space

runtime.init(num_cpus=2)
tune.run(tr.counter_with_checkpoints, config=space(sys.argv[1]), name="exp",
         storage_path=sys.argv[2], verbose=0)
"""


def space(log: str) -> dict[str, Any]:
    """Trial 0 is short, the others long: the driver is killed while trial 0 has finished
    and the others are midway, with checkpoints."""
    return {
        "i": tune.grid_search([0, 1, 2, 3]),
        "iters": tune.sample_from(lambda spec: 2 if spec.config.i == 0 else 10),
        "sleep": 0.2,
        "log": log,
    }


def _state(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, "experiment_state.json")) as f:
            state: dict[str, Any] = json.load(f)
            return state
    except (OSError, ValueError):
        return None


def _killed_midway(storage: str, log: str) -> dict[str, Any]:
    """Start a driver in its own process; SIGKILL it once one trial finished while another
    has a checkpoint; return the experiment state it left behind."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, log, storage], cwd=ROOT, env=env)
    path = os.path.join(storage, "exp")
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "the experiment made no progress"
            state = _state(path)
            if state is not None:
                statuses = [(t["status"], t["checkpoint"]) for t in state["trials"]]
                done = sum(s == "TERMINATED" for s, _ in statuses)
                midway = sum(s != "TERMINATED" and c is not None for s, c in statuses)
                if done >= 1 and midway >= 1:
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    state = _state(path)
    assert state is not None
    return state


def _starts(log: str) -> dict[str, list[int]]:
    starts: dict[str, list[int]] = {}
    with open(log) as f:
        for line in f:
            trial_id, step = line.split()
            starts.setdefault(trial_id, []).append(int(step))
    return starts


@pytest.mark.parametrize("how", ["tune.run", "Tuner.restore"])
def test_resume_after_the_driver_was_killed(cluster: object, storage: str, how: str) -> None:
    log = os.path.join(storage, "starts.log")
    config = space(log)
    state = _killed_midway(storage, log)
    before = {t["trial_id"]: t for t in state["trials"]}
    path = os.path.join(storage, "exp")

    if how == "tune.run":
        grid = tune.run(
            tr.counter_with_checkpoints,
            config=config,
            name="exp",
            storage_path=storage,
            resume=True,
            verbose=0,
        )
    else:
        assert tune.Tuner.can_restore(path)
        grid = tune.Tuner.restore(path, tr.counter_with_checkpoints).fit()

    assert len(grid) == 4 and grid.num_terminated == 4
    assert sorted(r.metrics["step"] for r in grid) == [2, 10, 10, 10]
    starts = _starts(log)
    assert any(e["status"] == "TERMINATED" for e in before.values())
    assert any(e["status"] != "TERMINATED" and e["checkpoint"] for e in before.values())
    for trial_id, entry in before.items():
        if entry["status"] == "TERMINATED":
            assert starts[trial_id] == [0], f"finished trial {trial_id} ran again"
        elif entry["checkpoint"] is not None:
            with open(os.path.join(entry["checkpoint"], "state.json")) as f:
                step = json.load(f)["step"]
            assert step >= 1
            assert starts[trial_id][-1] == step, "did not continue from its checkpoint"


def test_resume_of_a_missing_experiment_is_an_error(cluster: object, storage: str) -> None:
    with pytest.raises(FileNotFoundError, match="no Tune experiment"):
        tune.Tuner.restore(os.path.join(storage, "nothing"), tr.quadratic)
