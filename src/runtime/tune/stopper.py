"""Ray's module path for stoppers: ``from runtime.tune.stopper import Stopper``."""

from runtime.tune._stopper import (
    CombinedStopper,
    MaximumIterationStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
)

__all__ = [
    "CombinedStopper",
    "MaximumIterationStopper",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
]
