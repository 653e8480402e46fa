"""runtime.tune exports exactly its documented names, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

from runtime import tune

DOCUMENTED = {
    # API.md
    "run", "Tuner", "TuneConfig", "RunConfig", "CheckpointConfig", "FailureConfig",
    "report", "get_checkpoint", "get_context",
    "uniform", "loguniform", "quniform", "randint", "lograndint", "randn", "choice",
    "grid_search", "sample_from",
    "FIFOScheduler", "ASHAScheduler", "HyperBandScheduler", "MedianStoppingRule",
    "PopulationBasedTraining", "BasicVariantGenerator", "OptunaSearch", "ConcurrencyLimiter",
    "Callback", "Checkpoint", "ResultGrid", "Result",
    # docs/tune.md: plug points, loggers, stoppers, errors, and Ray aliases
    "Trainable", "Searcher", "TrialScheduler", "Trial", "Domain", "Stopper",
    "MaximumIterationStopper", "LoggerCallback", "JsonLoggerCallback", "CSVLoggerCallback",
    "TBXLoggerCallback", "ProgressReporter", "TuneContext", "AsyncHyperBandScheduler",
    "TuneError", "TrialError", "MetricNotReportedError", "PlacementGroupFactory",
    # Ray's names for unchanged programs (docs/compat.md)
    "with_parameters", "with_resources", "CLIReporter", "qrandint", "qloguniform",
    "qlograndint", "qrandn", "TrialPlateauStopper", "TimeoutStopper", "CombinedStopper",
}  # fmt: skip


def test_tune_exports_the_documented_names() -> None:
    assert sorted(tune.__all__) == tune.__all__
    assert set(tune.__all__) == DOCUMENTED
    for name in tune.__all__:
        assert getattr(tune, name).__doc__, f"tune.{name} has no docstring"


def test_errors_form_one_tree() -> None:
    assert issubclass(tune.TrialError, tune.TuneError)
    assert issubclass(tune.MetricNotReportedError, tune.TuneError)
    assert issubclass(tune.MetricNotReportedError, KeyError)
    assert issubclass(tune.TuneError, RuntimeError)


def test_importing_tune_imports_neither_optuna_pandas_nor_torch() -> None:
    code = (
        "import sys, runtime; from runtime import tune; "
        "print([m for m in ('optuna', 'pandas', 'torch', 'tensorboardX') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_rays_module_paths_import_the_same_classes() -> None:
    from runtime.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from runtime.tune.search import ConcurrencyLimiter
    from runtime.tune.search.optuna import OptunaSearch
    from runtime.tune.stopper import Stopper

    assert ASHAScheduler is tune.ASHAScheduler
    assert PopulationBasedTraining is tune.PopulationBasedTraining
    assert ConcurrencyLimiter is tune.ConcurrencyLimiter
    assert OptunaSearch is tune.OptunaSearch
    assert Stopper is tune.Stopper
