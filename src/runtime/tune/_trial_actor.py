"""The actor that hosts trials: one trial at a time, reused across trials to save start-up.

The controller sends the trainable once per actor (cached by key), then per trial
``start`` (config, folder, checkpoint to restore) and ``train`` calls, each returning one
outcome: ``("result", metrics, checkpoint_path)``, ``("done", final_metrics, None)`` or
``("error", traceback_text, None)``. A trainable's own exception is data, not a failed
call, so the controller can tell it from a dead actor or node.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import cloudpickle

import runtime

from ._session import ClassRunner, FunctionRunner, Outcome, Session, _format

_STOP_TIMEOUT_S = 5.0


class TrialActor:
    """Runs the trials the controller gives it, one after another."""

    def __init__(self) -> None:
        self._trainables: dict[str, Any] = {}
        self._runner: Any = None

    def start(self, spec: dict[str, Any], blob: bytes | None) -> Outcome:
        """Set up a trial and (for speed) run its first iteration in the same call.

        ``spec`` holds ``key`` (the trainable's cache key), ``info`` (trial id, name,
        folder, resources), ``config``, ``restore_path`` and ``checkpoint_frequency``;
        ``blob`` is the pickled trainable, sent only to an actor that lacks it. Returns the
        first outcome; ``("missing", None, None)`` asks for the blob.
        """
        key, info, config = spec["key"], spec["info"], spec["config"]
        restore_path, checkpoint_frequency = spec["restore_path"], spec["checkpoint_frequency"]
        if blob is not None:
            self._trainables[key] = cloudpickle.loads(blob)
        trainable = self._trainables.get(key)
        if trainable is None:
            return ("missing", None, None)
        os.makedirs(info["trial_dir"], exist_ok=True)
        session = Session(info, restore_path)
        try:
            if inspect.isclass(trainable):
                self._runner = ClassRunner(trainable, config, session, checkpoint_frequency)
            else:
                self._runner = FunctionRunner(trainable, config, session)
        except BaseException as exc:
            self._runner = None
            return ("error", _format(exc), None)
        return self._runner.train()

    def train(self) -> Outcome:
        """The next outcome of the current trial."""
        if self._runner is None:
            return ("error", "no trial is running on this actor", None)
        outcome: Outcome = self._runner.train()
        return outcome

    def save(self) -> str | None:
        """Checkpoint the current trial now (class trainables); its path, or None."""
        if self._runner is None:
            return None
        try:
            path: str | None = self._runner.save()
        except Exception:
            return None
        return path

    def stop(self) -> bool:
        """End the current trial; True when the actor can host another one."""
        runner, self._runner = self._runner, None
        if runner is None:
            return True
        reusable: bool = runner.stop(_STOP_TIMEOUT_S)
        return reusable

    def ping(self) -> int:
        return os.getpid()


RemoteTrialActor = runtime.remote(TrialActor)
