"""Train's errors.

Tree::

    TrainingFailedError (RuntimeError)   a rank failed more often than max_failures allows
    WorkerGroupError (RuntimeError)      the worker group cannot be placed or started
"""

from __future__ import annotations


class TrainingFailedError(RuntimeError):
    """The run failed: a rank raised, or its process or node died, past ``max_failures``.

    The message names the rank and carries its traceback; ``__cause__`` is the original
    exception where it could be brought back to the driver.
    """


class WorkerGroupError(RuntimeError):
    """The worker group cannot be placed or started (for example, it can never fit)."""
