"""Loops for the ray.air tests (importable, so node processes load them by reference)."""

from __future__ import annotations

from typing import Any

from runtime.air import session


def tune_trial(config: dict[str, Any]) -> None:
    session.report({"score": config["x"] * 2, "trial": session.get_trial_id()})


def train_loop(config: dict[str, Any]) -> None:
    session.report({"rank": session.get_world_rank(), "size": session.get_world_size()})
