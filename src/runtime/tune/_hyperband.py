"""HyperBand (Li et al., 2017): synchronous successive halving over brackets, as Ray's.

Trials fill brackets in turn; bracket ``s`` starts ``n`` trials at a budget of
``max_t / eta**s``. A trial reaching its bracket's milestone pauses until every live trial
of the bracket has reached it; then the top ``1/eta`` continue to the next milestone
(``eta`` times further) and the rest stop.
"""

from __future__ import annotations

import math
from typing import Any

from ._scheduler import ControllerView, TrialScheduler
from ._trial import Status, Trial


class _Bracket:
    def __init__(self, n0: int, r0: float, eta: float, max_t: float):
        self.n0 = n0
        self.milestone = r0
        self.eta = eta
        self.max_t = max_t
        self.trials: list[Trial] = []
        self.scores: dict[str, float] = {}
        self.released: set[str] = set()

    def full(self) -> bool:
        return len(self.trials) >= self.n0

    def live(self) -> list[Trial]:
        return [t for t in self.trials if not t.is_finished and not t.stop_requested]


class HyperBandScheduler(TrialScheduler):
    """Synchronous HyperBand.

    Args:
        time_attr: the result field that measures progress.
        metric, mode: what to optimize.
        max_t: the largest budget a trial gets.
        reduction_factor: ``eta``: keep the top ``1/eta`` at each milestone.
        stop_last_trials: stop trials that reach ``max_t``.
    """

    needs_metric = True

    def __init__(
        self,
        *,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
    ):
        super().__init__(metric, mode)
        if not max_t > 0 or not reduction_factor > 1:
            raise ValueError("HyperBand needs max_t > 0 and reduction_factor > 1")
        self.time_attr = time_attr
        self.max_t = max_t
        self.eta = reduction_factor
        self.stop_last_trials = stop_last_trials
        self.s_max_1 = round(math.log(max_t) / math.log(reduction_factor)) + 1
        self._brackets: list[_Bracket] = []
        self._of: dict[str, _Bracket] = {}
        self._next_s = self.s_max_1 - 1

    def _new_bracket(self) -> _Bracket:
        s = self._next_s
        self._next_s = s - 1 if s > 0 else self.s_max_1 - 1
        n0 = math.ceil(self.s_max_1 / (s + 1) * self.eta**s)
        r0 = max(1.0, self.max_t * self.eta ** (-s))
        bracket = _Bracket(n0, r0, self.eta, self.max_t)
        self._brackets.append(bracket)
        return bracket

    def on_trial_add(self, controller: ControllerView, trial: Trial) -> None:
        bracket = self._brackets[-1] if self._brackets else None
        if bracket is None or bracket.full():
            bracket = self._new_bracket()
        bracket.trials.append(trial)
        self._of[trial.trial_id] = bracket

    def on_trial_result(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> str:
        bracket = self._of.get(trial.trial_id)
        t = result.get(self.time_attr)
        if bracket is None or t is None:
            return TrialScheduler.CONTINUE
        if self.stop_last_trials and t >= self.max_t:
            return TrialScheduler.STOP
        if t < bracket.milestone:
            return TrialScheduler.CONTINUE
        score = self._score(result)
        bracket.scores[trial.trial_id] = score if score is not None else -math.inf
        bracket.released.discard(trial.trial_id)
        if self._process(controller, bracket):
            if trial.trial_id in bracket.released:
                bracket.released.discard(trial.trial_id)
                return TrialScheduler.CONTINUE
            return TrialScheduler.STOP
        return TrialScheduler.PAUSE

    def _process(self, controller: ControllerView, bracket: _Bracket) -> bool:
        """Halve the bracket if every live trial reached the milestone; True if it did."""
        if not (bracket.full() or controller.search_finished):
            return False
        live = bracket.live()
        if not live or any(t.trial_id not in bracket.scores for t in live):
            return False
        ranked = sorted(live, key=lambda t: bracket.scores[t.trial_id], reverse=True)
        keep = max(1, int(len(ranked) / self.eta))
        # Settle the bracket first: stopping a trial below calls back into this scheduler.
        bracket.released = {t.trial_id for t in ranked[:keep]}
        bracket.scores = {}
        bracket.milestone = min(bracket.milestone * self.eta, self.max_t)
        for trial in ranked[keep:]:
            trial.stop_requested = True
        for trial in ranked[keep:]:
            if trial.status in (Status.PAUSED, Status.PENDING):
                controller.stop_trial(trial)
        return True

    def _forget(self, controller: ControllerView, trial: Trial) -> None:
        bracket = self._of.get(trial.trial_id)
        if bracket is not None:
            bracket.scores.pop(trial.trial_id, None)
            self._process(controller, bracket)

    def on_trial_complete(
        self, controller: ControllerView, trial: Trial, result: dict[str, Any]
    ) -> None:
        self._forget(controller, trial)

    def on_trial_error(self, controller: ControllerView, trial: Trial) -> None:
        self._forget(controller, trial)

    def on_trial_remove(self, controller: ControllerView, trial: Trial) -> None:
        self._forget(controller, trial)

    def choose_trial_to_run(self, controller: ControllerView) -> Trial | None:
        for bracket in self._brackets:
            if controller.search_finished:
                self._process(controller, bracket)
        trials = controller.get_trials()
        for trial in trials:
            if trial.status == Status.PENDING and not trial.stop_requested:
                return trial
        for bracket in self._brackets:
            for trial in bracket.trials:
                if trial.status == Status.PAUSED and trial.trial_id in bracket.released:
                    bracket.released.discard(trial.trial_id)
                    return trial
        for trial in trials:  # paused for another reason (not by a bracket)
            if trial.status == Status.PAUSED and trial.trial_id not in self._of:
                return trial
        return None

    def debug_string(self) -> str:
        return f"HyperBandScheduler: {len(self._brackets)} brackets"
