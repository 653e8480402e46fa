"""The experiment folder: ``storage_path/name/`` with the experiment state (written
atomically), the pickled searcher, the tuner's settings, and one folder per trial.

Layout::

    storage_path/name/
        experiment_state.json     trials (config, status, last result, checkpoints), atomic
        searcher_state.pkl        the searcher, to continue suggesting after a resume
        tuner.pkl                 trainable, param space and configs (for Tuner.restore)
        <trial_name>/params.json, result.json, progress.csv, checkpoint_000003/, error.txt
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from ._callback import _jsonable
from ._config import CheckpointConfig
from ._trial import Trial

STATE_FILE = "experiment_state.json"
SEARCHER_FILE = "searcher_state.pkl"
TUNER_FILE = "tuner.pkl"


def default_storage_path() -> str:
    """``$TUNE_RESULTS_DIR`` or ``~/runtime_results`` (Ray's is ``~/ray_results``)."""
    return os.environ.get("TUNE_RESULTS_DIR") or os.path.join(
        os.path.expanduser("~"), "runtime_results"
    )


def experiment_name(trainable_name: str) -> str:
    return f"{trainable_name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file and rename it over ``path``: readers, and a resume after
    the driver was killed, never see half a file. (No fsync: it guards against a machine
    crash, not a killed process, and costs tens of milliseconds per write here.)"""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_state(experiment_path: str, trials: list[Trial], extra: dict[str, Any]) -> None:
    state = {
        "version": 1,
        "timestamp": time.time(),
        "trials": [_jsonable(t.to_state()) for t in trials],
        **extra,
    }
    write_atomic(os.path.join(experiment_path, STATE_FILE), json.dumps(state).encode())


def load_state(experiment_path: str) -> dict[str, Any] | None:
    path = os.path.join(experiment_path, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state: dict[str, Any] = json.load(f)
    return state


def write_error(trial: Trial, text: str) -> None:
    os.makedirs(trial.path, exist_ok=True)
    with open(os.path.join(trial.path, "error.txt"), "a") as f:
        f.write(text + "\n")


class CheckpointKeeper:
    """Keeps a trial's checkpoints to ``num_to_keep``: the best by score, else the latest."""

    def __init__(self, config: CheckpointConfig):
        self.config = config

    def add(self, trial: Trial, path: str, result: dict[str, Any]) -> None:
        trial.checkpoints = [(p, r) for p, r in trial.checkpoints if p != path]
        trial.checkpoints.append((path, _small(result)))
        trial.checkpoint = path
        keep = self.config.num_to_keep
        if keep is None or len(trial.checkpoints) <= keep:
            return
        attr = self.config.checkpoint_score_attribute
        if attr is None:
            ranked = list(trial.checkpoints)  # oldest first
        else:
            sign = 1.0 if self.config.checkpoint_score_order == "max" else -1.0

            def score(entry: tuple[str, dict[str, Any]]) -> float:
                value = entry[1].get(attr)
                return sign * float(value) if isinstance(value, int | float) else -float("inf")

            ranked = sorted(trial.checkpoints, key=score)  # worst first
        # Never delete the latest: a resume or retry restarts from it.
        doomed = [e for e in ranked if e[0] != path][: len(trial.checkpoints) - keep]
        for entry in doomed:
            trial.checkpoints.remove(entry)
            shutil.rmtree(entry[0], ignore_errors=True)

    def best(self, trial: Trial) -> str | None:
        attr = self.config.checkpoint_score_attribute
        if not trial.checkpoints:
            return None
        if attr is None:
            return trial.checkpoints[-1][0]
        sign = 1.0 if self.config.checkpoint_score_order == "max" else -1.0
        scored = [(sign * float(r[attr]), p) for p, r in trial.checkpoints if attr in r]
        return max(scored)[1] if scored else trial.checkpoints[-1][0]


def _small(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool) or v is None}
