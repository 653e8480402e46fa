"""Ray's module path for the trial schedulers: ``from runtime.tune.schedulers import
ASHAScheduler`` (as ``ray.tune.schedulers``); the same classes as ``runtime.tune.*``."""

from runtime.tune._asha import ASHAScheduler, AsyncHyperBandScheduler
from runtime.tune._hyperband import HyperBandScheduler
from runtime.tune._median import MedianStoppingRule
from runtime.tune._pbt import PopulationBasedTraining
from runtime.tune._scheduler import FIFOScheduler, TrialScheduler

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "FIFOScheduler",
    "HyperBandScheduler",
    "MedianStoppingRule",
    "PopulationBasedTraining",
    "TrialScheduler",
]
