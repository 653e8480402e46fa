"""Option structs: TuneConfig (how to search), RunConfig (where and how to run),
CheckpointConfig (which checkpoints to keep), FailureConfig (how often to retry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def check_mode(mode: str | None) -> None:
    """Reject a mode other than "min", "max" (or None when not needed)."""
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


@dataclass
class CheckpointConfig:
    """Which checkpoints a trial keeps, and when class trainables save.

    Args:
        num_to_keep: keep at most this many checkpoints per trial (None: all). Which ones:
            the best by ``checkpoint_score_attribute`` when given, else the latest.
        checkpoint_score_attribute: the metric that ranks checkpoints.
        checkpoint_score_order: "max" or "min".
        checkpoint_frequency: a class trainable saves every this many iterations (0: never).
        checkpoint_at_end: a class trainable saves when it finishes.
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool = False

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ValueError(f"num_to_keep must be None or >= 1, got {self.num_to_keep}")
        check_mode(self.checkpoint_score_order)
        if self.checkpoint_frequency < 0:
            raise ValueError("checkpoint_frequency must be >= 0")


@dataclass
class FailureConfig:
    """How failures are handled.

    Args:
        max_failures: a failed trial (its trainable raised, or its actor or node died) is
            retried from its last checkpoint up to this many times; -1 retries forever.
        fail_fast: stop the whole experiment at the first trial error (``"raise"``: and
            raise it from ``fit``).
    """

    max_failures: int = 0
    fail_fast: bool | str = False

    def __post_init__(self) -> None:
        if self.max_failures < -1:
            raise ValueError("max_failures must be >= -1")


@dataclass
class TuneConfig:
    """How to search: the metric to optimize, the searcher, the scheduler, how many trials."""

    metric: str | None = None
    mode: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool = True
    trial_dirname_creator: Any = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if not isinstance(self.num_samples, int) or self.num_samples == 0 or self.num_samples < -1:
            raise ValueError(f"num_samples must be an int >= 1 (or -1), got {self.num_samples!r}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError("max_concurrent_trials must be None or >= 1")


@dataclass
class RunConfig:
    """Where and how to run: experiment name and storage, stop criteria, callbacks."""

    name: str | None = None
    storage_path: str | None = None
    stop: Any = None
    callbacks: list[Any] | None = None
    checkpoint_config: CheckpointConfig = field(default_factory=CheckpointConfig)
    failure_config: FailureConfig = field(default_factory=FailureConfig)
    verbose: int = 1
    log_to_file: bool = False
    #: What prints the progress table (a ``ProgressReporter`` such as ``CLIReporter``).
    progress_reporter: Any = None
