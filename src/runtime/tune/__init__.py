"""runtime.tune: parallel hyperparameter search where each trial is an actor.

The experiment controller is a coroutine in the driver: it asks a searcher for configs,
runs trials on (reused) actors while the cluster has room, and lets a scheduler stop or
pause them early. Results, checkpoints and the experiment state live under
``storage_path/name/``, so a killed experiment can be resumed.

Example::

    from runtime import tune

    def objective(config):
        for step in range(20):
            tune.report({"loss": (config["x"] - 3) ** 2 / (step + 1)})

    results = tune.run(objective, config={"x": tune.uniform(0, 10)}, num_samples=10,
                       metric="loss", mode="min", scheduler=tune.ASHAScheduler())
    print(results.best_config)
"""

from runtime.tune import logger as logger
from runtime.tune import schedulers as schedulers  # Ray's module paths
from runtime.tune import search as search
from runtime.tune import stopper as stopper
from runtime.tune import tuner as tuner
from runtime.tune._asha import ASHAScheduler, AsyncHyperBandScheduler
from runtime.tune._basic_variant import BasicVariantGenerator
from runtime.tune._callback import (
    Callback,
    CSVLoggerCallback,
    JsonLoggerCallback,
    LoggerCallback,
    TBXLoggerCallback,
)
from runtime.tune._checkpoint import Checkpoint
from runtime.tune._cli_reporter import CLIReporter
from runtime.tune._concurrency_limiter import ConcurrencyLimiter
from runtime.tune._config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from runtime.tune._errors import MetricNotReportedError, TrialError, TuneError
from runtime.tune._hyperband import HyperBandScheduler
from runtime.tune._median import MedianStoppingRule
from runtime.tune._optuna import OptunaSearch
from runtime.tune._pbt import PopulationBasedTraining
from runtime.tune._progress import ProgressReporter
from runtime.tune._resources import PlacementGroupFactory
from runtime.tune._result import Result, ResultGrid
from runtime.tune._scheduler import FIFOScheduler, TrialScheduler
from runtime.tune._search_space import (
    Domain,
    choice,
    grid_search,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from runtime.tune._searcher import Searcher
from runtime.tune._session import TuneContext, get_checkpoint, get_context, report
from runtime.tune._stopper import (
    CombinedStopper,
    MaximumIterationStopper,
    Stopper,
    TimeoutStopper,
    TrialPlateauStopper,
)
from runtime.tune._trainable import Trainable
from runtime.tune._trial import Trial
from runtime.tune._tuner import Tuner, run
from runtime.tune._wrappers import with_parameters, with_resources

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "BasicVariantGenerator",
    "CLIReporter",
    "CSVLoggerCallback",
    "Callback",
    "Checkpoint",
    "CheckpointConfig",
    "CombinedStopper",
    "ConcurrencyLimiter",
    "Domain",
    "FIFOScheduler",
    "FailureConfig",
    "HyperBandScheduler",
    "JsonLoggerCallback",
    "LoggerCallback",
    "MaximumIterationStopper",
    "MedianStoppingRule",
    "MetricNotReportedError",
    "OptunaSearch",
    "PlacementGroupFactory",
    "PopulationBasedTraining",
    "ProgressReporter",
    "Result",
    "ResultGrid",
    "RunConfig",
    "Searcher",
    "Stopper",
    "TBXLoggerCallback",
    "TimeoutStopper",
    "Trainable",
    "Trial",
    "TrialError",
    "TrialPlateauStopper",
    "TrialScheduler",
    "TuneConfig",
    "TuneContext",
    "TuneError",
    "Tuner",
    "choice",
    "get_checkpoint",
    "get_context",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "report",
    "run",
    "sample_from",
    "uniform",
    "with_parameters",
    "with_resources",
]
