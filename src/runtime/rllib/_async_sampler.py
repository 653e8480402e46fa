"""AsyncSampler: env runners that sample without ever waiting for the learner (APPO/IMPALA).

Every remote runner always has ``requests_per_runner`` sampling calls queued (an actor runs
its calls one after another, so while the learner trains, each runner works through its
queue). ``pull`` returns the batches that are ready -- waiting only until at least one is --
and queues a new call on each runner that delivered, with the weights of that moment. A
batch was therefore sampled with weights up to a few updates old; the learner corrects for
that (V-trace) with the log-probabilities the runner recorded while acting. A runner that
died is replaced and gets new calls; with ``num_env_runners=0`` sampling is in the driver
(synchronous).
"""

from __future__ import annotations

import logging
from typing import Any

import runtime
from runtime.rllib._env_runner import RUNNER_FAILURES, EnvRunnerGroup

__all__ = ["AsyncSampler"]

logger = logging.getLogger(__name__)


class AsyncSampler:
    """Keeps sampling calls in flight on every runner of ``group``; ``pull`` collects."""

    def __init__(self, group: EnvRunnerGroup, requests_per_runner: int = 2):
        if requests_per_runner < 1:
            raise ValueError("requests_per_runner must be >= 1")
        self.group = group
        self.requests_per_runner = requests_per_runner
        self.in_flight: dict[Any, int] = {}  # ref -> runner index
        self.weights_ref: Any = None
        self.args: tuple[Any, ...] = ()
        #: How many weight versions old each pulled batch was (0: sampled with the newest).
        self.staleness: list[int] = []
        self.version = 0
        self._versions: dict[Any, int] = {}

    def _launch(self, index: int) -> None:
        ref = self.group.runners[index].sample.remote(self.weights_ref, *self.args)
        self.in_flight[ref] = index
        self._versions[ref] = self.version

    def pull(
        self, weights: dict[str, Any], num_steps: int, explore: bool, act_kwargs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The batches ready now (at least one), after queueing calls with ``weights``."""
        group = self.group
        if group.local is not None:
            return group.sample(weights, num_steps, explore, act_kwargs)
        self.weights_ref = runtime.put(weights)
        self.version += 1
        self.args = (num_steps, explore, act_kwargs)
        for index in range(len(group.runners)):
            while sum(1 for i in self.in_flight.values() if i == index) < self.requests_per_runner:
                self._launch(index)
        timeout = group.config.sample_timeout_s
        ready, _ = runtime.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if not ready:
            raise RuntimeError(f"no env runner delivered a batch within {timeout} s")
        rest = [r for r in self.in_flight if r not in ready]
        more = runtime.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []
        batches: list[dict[str, Any]] = []
        self.staleness = []
        for ref in [*ready, *more]:
            index = self.in_flight.pop(ref)
            version = self._versions.pop(ref)
            try:
                batches.append(runtime.get(ref, timeout=timeout))
                self.staleness.append(self.version - 1 - version)
            except RUNNER_FAILURES as exc:
                self._drop_runner_calls(index)
                group._replace(index, exc)
                if group.on_recreated is not None:
                    group.on_recreated([index + 1])
                continue
            self._launch(index)  # keep the runner busy, with the newest weights
        return batches

    def _drop_runner_calls(self, index: int) -> None:
        for ref in [r for r, i in self.in_flight.items() if i == index]:
            del self.in_flight[ref]
            self._versions.pop(ref, None)

    def stop(self) -> None:
        self.in_flight.clear()
        self._versions.clear()
