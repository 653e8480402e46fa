"""Tune's errors, rooted at :class:`TuneError`.

The tree::

    TuneError (also RuntimeError)
    ├── TrialError: a trial failed (its remote traceback is in the message)
    └── MetricNotReportedError (also KeyError): results were read by a metric no trial reported

Bad input (a mode other than min/max, a missing metric, an unknown search-space value, a
trainable that is not callable) raises ``ValueError``/``TypeError`` before any trial starts.
"""

from __future__ import annotations


class TuneError(RuntimeError):
    """The root of Tune's own errors."""


class TrialError(TuneError):
    """A trial failed: its trainable raised, or its actor or node died past max_failures."""


class MetricNotReportedError(TuneError, KeyError):
    """Results were asked for by a metric that no trial reported."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
