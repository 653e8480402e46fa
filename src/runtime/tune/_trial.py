"""A trial: one config's run, its status, results and checkpoints, as the controller sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def flat_result(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with every leaf of a nested dict also under its ``"outer/inner"`` key, as
    Ray flattens results for stop criteria, schedulers, searchers and best-result queries
    (``stop={"env_runners/episode_return_mean": 450}``). Keys already there win."""
    if not any(isinstance(v, dict) for v in result.values()):
        return result
    out = dict(result)

    def walk(d: dict[str, Any], prefix: str) -> None:
        for key, value in d.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + "/")
            else:
                out.setdefault(name, value)

    for key, value in result.items():
        if isinstance(value, dict):
            walk(value, f"{key}/")
    return out


class Status:
    """A trial's status, as Ray names them."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


@dataclass(eq=False)
class Trial:
    """One trial. Schedulers and searchers read it; only the controller changes it."""

    trial_id: str
    config: dict[str, Any]
    path: str = ""
    experiment_tag: str = ""
    status: str = Status.PENDING
    resources: dict[str, float] = field(default_factory=dict)
    bundles: dict[str, Any] | None = None
    last_result: dict[str, Any] = field(default_factory=dict)
    metric_analysis: dict[str, dict[str, float]] = field(default_factory=dict)
    checkpoint: str | None = None
    restore_path: str | None = None
    checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None
    num_failures: int = 0
    save_requested: bool = False
    stop_requested: bool = False
    start_count: int = 0

    @property
    def trial_name(self) -> str:
        return self.path.rsplit("/", 1)[-1] if self.path else self.trial_id

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.TERMINATED, Status.ERROR)

    def update_analysis(self, result: dict[str, Any]) -> None:
        """Track max/min/last of every numeric metric (read by schedulers and best_result)."""
        for key, value in result.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            stats = self.metric_analysis.get(key)
            if stats is None:
                self.metric_analysis[key] = {"max": value, "min": value, "last": value}
            else:
                stats["max"] = max(stats["max"], value)
                stats["min"] = min(stats["min"], value)
                stats["last"] = value

    def to_state(self) -> dict[str, Any]:
        """What the experiment state file keeps of this trial."""
        return {
            "trial_id": self.trial_id,
            "config": self.config,
            "path": self.path,
            "experiment_tag": self.experiment_tag,
            "status": self.status,
            "resources": self.resources,
            "bundles": self.bundles,
            "last_result": self.last_result,
            "metric_analysis": self.metric_analysis,
            "checkpoint": self.checkpoint,
            "checkpoints": self.checkpoints,
            "error": self.error,
            "num_failures": self.num_failures,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Trial:
        trial = cls(state["trial_id"], state["config"])
        for key in (
            "path",
            "experiment_tag",
            "status",
            "resources",
            "bundles",
            "last_result",
            "metric_analysis",
            "checkpoint",
            "error",
            "num_failures",
        ):
            setattr(trial, key, state.get(key, getattr(trial, key)))
        trial.checkpoints = [(p, r) for p, r in state.get("checkpoints", [])]
        return trial

    def __repr__(self) -> str:
        return f"Trial({self.trial_id}, {self.status})"
