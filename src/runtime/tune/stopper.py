"""Ray's module path for stoppers: ``from runtime.tune.stopper import Stopper``."""

from runtime.tune._stopper import MaximumIterationStopper, Stopper

__all__ = ["MaximumIterationStopper", "Stopper"]
