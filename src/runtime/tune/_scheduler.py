"""The scheduler plug point: :class:`TrialScheduler` decides, per result, whether a trial
continues, pauses or stops, and which waiting trial runs next. FIFO is the default.

``tests/tune/conformance.py`` holds the test case class every scheduler passes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from ._config import check_mode
from ._trial import Status, Trial


class ControllerView(Protocol):
    """What a scheduler may see and do of the experiment (the controller implements it)."""

    search_finished: bool

    def get_trials(self) -> list[Trial]: ...

    def stop_trial(self, trial: Trial) -> None:
        """End a trial that is paused or pending (it becomes TERMINATED)."""
        ...


class TrialScheduler:
    """Base class of schedulers (Ray's ``TrialScheduler`` interface)."""

    CONTINUE: ClassVar[str] = "CONTINUE"
    PAUSE: ClassVar[str] = "PAUSE"
    STOP: ClassVar[str] = "STOP"
    NOOP: ClassVar[str] = "NOOP"
    #: Whether this scheduler can only work with a metric to optimize.
    needs_metric: ClassVar[bool] = False

    def __init__(self, metric: str | None = None, mode: str | None = None):
        check_mode(mode)
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Receive the experiment's metric and mode (those given here at construction win)."""
        check_mode(mode)
        if self._metric is None:
            self._metric = metric
        if self._mode is None:
            self._mode = mode
        return True

    def _sign(self) -> float:
        return 1.0 if self._mode == "max" else -1.0

    def _score(self, result: dict[str, Any]) -> float | None:
        """The result's metric, signed so that larger is better; None if absent."""
        value = result.get(self._metric) if self._metric else None
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return self._sign() * float(value)

    def on_trial_add(self, controller: ControllerView, trial: Trial) -> None:
        """A new trial joined the experiment."""

    def on_trial_error(self, controller: ControllerView, trial: Trial) -> None:
        """A trial failed for good."""

    def on_trial_result(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> str:
        """Decide on one result: CONTINUE, PAUSE or STOP."""
        return TrialScheduler.CONTINUE

    def on_trial_complete(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> None:
        """A trial finished normally (its last result)."""

    def on_trial_remove(self, controller: ControllerView, trial: Trial) -> None:
        """A trial was stopped by someone other than this scheduler."""

    def choose_trial_to_run(self, controller: ControllerView) -> Trial | None:
        """The next trial to start: pending ones first, then paused ones (FIFO)."""
        for status in (Status.PENDING, Status.PAUSED):
            for trial in controller.get_trials():
                if trial.status == status:
                    return trial
        return None

    def debug_string(self) -> str:
        return type(self).__name__


class FIFOScheduler(TrialScheduler):
    """Runs trials in the order they were added, never stops one early."""
