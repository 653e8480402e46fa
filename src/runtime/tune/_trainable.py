"""The class API for trainables: subclass :class:`Trainable` and define ``setup``/``step``.

Tune calls ``step()`` once per iteration; each call's dict is one reported result. Define
``save_checkpoint``/``load_checkpoint`` so the trial can be paused, resumed, retried after a
failure, and (under PBT) cloned.
"""

from __future__ import annotations

from typing import Any


class Trainable:
    """A trainable class: ``setup(config)`` once, ``step() -> dict`` per iteration.

    Example::

        class Quadratic(tune.Trainable):
            def setup(self, config):
                self.x = config["x"]

            def step(self):
                self.x *= 0.9
                return {"loss": self.x**2}

            def save_checkpoint(self, checkpoint_dir):
                return {"x": self.x}          # a dict is pickled for you

            def load_checkpoint(self, checkpoint):
                self.x = checkpoint["x"]      # the dict, or the directory if None was returned
    """

    def __init__(self, config: dict[str, Any] | None = None, **_: Any) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self._iteration = 0
        self.trial_id = ""
        self.trial_name = ""
        self.logdir = ""
        self.setup(dict(self.config))

    @property
    def iteration(self) -> int:
        """How many steps this trial has taken (restored ones included)."""
        return self._iteration

    training_iteration = iteration

    def setup(self, config: dict[str, Any]) -> None:
        """Build state from the trial's config (called once, from ``__init__``)."""

    def step(self) -> dict[str, Any]:
        """Run one iteration and return its metrics."""
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        """Write state into ``checkpoint_dir``, or return a picklable dict of it."""
        return None

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Restore what ``save_checkpoint`` saved: its dict, or the directory's path."""

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Kept for Ray compatibility; Tune always builds a fresh instance per trial."""
        return False

    def cleanup(self) -> None:
        """Release resources when the trial ends."""
