"""Trainables for the tests of Ray's extra Tune names (importable, so nodes load them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime import tune


def uses_data(config: dict[str, Any], data: np.ndarray, offset: int) -> None:
    """Reports the sum of an array passed with ``tune.with_parameters``."""
    tune.report({"total": float(data.sum()) * config["k"] + offset})


class UsesData(tune.Trainable):
    def setup(self, config: dict[str, Any], data: np.ndarray | None = None) -> None:
        assert data is not None
        self.total = float(data.sum()) * config["k"]

    def step(self) -> dict[str, Any]:
        return {"total": self.total, "done": True}


def slow_or_failing(config: dict[str, Any]) -> None:
    """With ``fail``: leaves a marker file and fails. Otherwise: waits (up to 45 s) for the
    marker, so both trials run at once, then works 30 s before its first report."""
    marker = Path(config["marker"])
    if config["fail"]:
        marker.touch()
        raise ValueError("fails at once")
    deadline = time.monotonic() + 45
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(30)
    tune.report({"step": 1})


def parabola(config: dict[str, Any]) -> None:
    """A smooth objective with its minimum at x=3, y=-1."""
    tune.report({"loss": (config["x"] - 3) ** 2 + (config.get("y", -1) + 1) ** 2})


def plateau(config: dict[str, Any]) -> None:
    """Falls for five steps, then stays flat."""
    for step in range(200):
        tune.report({"loss": max(5 - step, 0) + 1.0})
