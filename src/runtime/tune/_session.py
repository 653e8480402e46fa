"""What runs inside a trial's actor: the session behind ``tune.report`` and the two runners.

A function trainable runs in a thread of its own; each ``tune.report`` hands one result to
the actor's ``train()`` call and waits until the controller asks for the next one (so a
stopped trial really stops). A class trainable's ``step()`` runs in the ``train()`` call.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from runtime.libs import trainable as libs_trainable

from ._checkpoint import _DICT_FILE, Checkpoint

_local = threading.local()
_META = ".tune_metadata.json"


class _StopTrial(BaseException):
    """Raised inside ``tune.report`` to unwind a function trainable the controller stopped."""


class TuneContext:
    """Facts about the running trial: ``tune.get_context().get_trial_id()`` and friends."""

    def __init__(self, info: dict[str, Any]):
        self._info = info

    def get_trial_id(self) -> str:
        return str(self._info["trial_id"])

    def get_trial_name(self) -> str:
        return str(self._info["trial_name"])

    def get_trial_dir(self) -> str:
        return str(self._info["trial_dir"])

    def get_experiment_name(self) -> str:
        return str(self._info["experiment_name"])

    def get_trial_resources(self) -> dict[str, float]:
        return dict(self._info["resources"])

    def get_placement_group(self) -> Any:
        """The trial's placement group (a multi-bundle ``PlacementGroupFactory`` request):
        the trial runs in bundle 0; place the trainable's workers in the others with
        ``PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)``. None for a
        single-bundle request."""
        return self._info.get("placement_group")

    def get_world_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1


class Session:
    """One trial's bookkeeping in the actor: iteration count, timing, checkpoints."""

    def __init__(self, info: dict[str, Any], restore_path: str | None):
        self.info = info
        self.context = TuneContext(info)
        self.trial_dir: str = info["trial_dir"]
        self.restore_path = restore_path
        self.iteration = 0
        self.time_total = 0.0
        if restore_path is not None:
            meta = read_metadata(restore_path)
            self.iteration = int(meta.get("iteration", 0))
            self.time_total = float(meta.get("time_total_s", 0.0))
        self.iterations_since_restore = 0
        self.started = time.time()
        self.last = time.monotonic()
        self.runner: Any = None

    def fill(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The auto-filled fields every result carries, as Ray's do."""
        now = time.monotonic()
        elapsed = now - self.last
        self.last = now
        self.iteration += 1
        self.iterations_since_restore += 1
        self.time_total += elapsed
        out = dict(metrics)
        out.setdefault("done", False)
        out["training_iteration"] = self.iteration
        out["time_this_iter_s"] = elapsed
        out["time_total_s"] = self.time_total
        out["iterations_since_restore"] = self.iterations_since_restore
        out["timestamp"] = int(time.time())
        out["trial_id"] = self.info["trial_id"]
        out["pid"] = os.getpid()
        out["hostname"] = socket.gethostname()
        return out

    def persist(self, source: str, metrics: dict[str, Any]) -> str:
        """Copy a reported checkpoint into the trial's folder (unless it is there already)."""
        if os.path.dirname(os.path.abspath(source)) == os.path.abspath(self.trial_dir):
            target = source  # written in place, in the trial's folder
        else:
            target = fresh_checkpoint_dir(self.trial_dir, self.iteration)
            tmp = target + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            os.replace(tmp, target)
        write_metadata(target, metrics)
        return target

    def last_pause(self) -> None:
        self.last = time.monotonic()


def fresh_checkpoint_dir(trial_dir: str, iteration: int) -> str:
    """``checkpoint_<iteration>``, or with a suffix if a previous run of the trial (before a
    restore) already used that name: a checkpoint is never overwritten, so another trial
    may copy it (PBT) while this one runs on."""
    base = os.path.join(trial_dir, f"checkpoint_{iteration:06d}")
    target, n = base, 0
    while os.path.exists(target):
        n += 1
        target = f"{base}-{n}"
    return target


def write_metadata(path: str, metrics: dict[str, Any]) -> None:
    meta = {
        "iteration": metrics.get("training_iteration", 0),
        "time_total_s": metrics.get("time_total_s", 0.0),
        "trial_id": metrics.get("trial_id"),
    }
    with open(os.path.join(path, _META), "w") as f:
        json.dump(meta, f)


def read_metadata(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, _META)) as f:
            meta: dict[str, Any] = json.load(f)
            return meta
    except (OSError, ValueError):
        return {}


def _current() -> Session:
    session: Session | None = getattr(_local, "session", None)
    if session is None:
        raise RuntimeError(
            "tune.report/get_checkpoint/get_context work only inside a function trainable "
            "that Tune runs (tune.run or Tuner.fit)"
        )
    return session


def report(metrics: dict[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Report one iteration's metrics (and optionally a checkpoint) to Tune.

    Blocks until Tune asks for the next iteration; if the trial was stopped meanwhile
    (a scheduler or a stop criterion), the function trainable is unwound from here.
    """
    session = _current()
    if not isinstance(metrics, dict):
        raise TypeError(f"tune.report needs a dict of metrics, got {type(metrics).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a tune.Checkpoint, got {type(checkpoint).__name__}")
    runner = session.runner
    if not isinstance(runner, FunctionRunner):
        raise RuntimeError("tune.report is for function trainables; a Trainable's step returns")
    runner.report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial restores from (after a pause, failure or PBT exploit)."""
    session = _current()
    return None if session.restore_path is None else Checkpoint(session.restore_path)


def get_context() -> TuneContext:
    """Facts about the running trial (id, name, folder, resources)."""
    return _current().context


def _libs_report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
    report(metrics, checkpoint=None if checkpoint_dir is None else Checkpoint(checkpoint_dir))


Outcome = tuple[str, Any, Any]  # (kind, metrics or error, checkpoint path)


class FunctionRunner:
    """Runs ``fn(config)`` in its own thread, one result per ``train()`` call."""

    def __init__(self, fn: Callable[..., Any], config: dict[str, Any], session: Session):
        self.fn = fn
        self.config = config
        self.session = session
        session.runner = self
        self._results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._resume = threading.Semaphore(0)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_metrics: dict[str, Any] | None = None

    def train(self) -> Outcome:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="tune-trial", daemon=True)
            self._thread.start()
        else:
            self.session.last_pause()
            self._resume.release()
        return self._results.get()

    def _main(self) -> None:
        _local.session = self.session
        token = libs_trainable.set_reporter(_libs_report)
        pg_token = libs_trainable.set_placement_group(self.session.info.get("placement_group"))
        try:
            returned = self.fn(self.config)
        except _StopTrial:
            return
        except BaseException as exc:
            self._results.put(("error", _format(exc), None))
            return
        finally:
            libs_trainable.reset_placement_group(pg_token)
            libs_trainable.reset_reporter(token)
            _local.session = None
        if returned is not None and not isinstance(returned, dict):
            self._results.put(
                (
                    "error",
                    f"a function trainable returned {type(returned).__name__}; "
                    "return a dict of metrics or None",
                    None,
                )
            )
            return
        final = None
        if returned:
            final = self.session.fill({**returned, "done": True})
        self._results.put(("done", final, None))

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if self._stopping:
            raise _StopTrial
        filled = self.session.fill(metrics)
        path = None if checkpoint is None else self.session.persist(checkpoint.path, filled)
        self._results.put(("result", filled, path))
        self._resume.acquire()
        if self._stopping:
            raise _StopTrial

    def save(self) -> str | None:
        return None  # a function trainable checkpoints only when it reports one

    def stop(self, timeout: float) -> bool:
        """Unwind the function; True when its thread ended (the actor may be reused)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        self._stopping = True
        self._resume.release()
        thread.join(timeout)
        return not thread.is_alive()


class ClassRunner:
    """Runs a Trainable subclass (or any class with its shape) in the actor's call thread."""

    def __init__(self, cls: type, config: dict[str, Any], session: Session, freq: int):
        self.session = session
        self.freq = freq
        self._saved: tuple[int, str] | None = None
        session.runner = self
        _local.session = session
        try:
            self.obj = cls(dict(config))
            for attr, value in (
                ("trial_id", session.info["trial_id"]),
                ("trial_name", session.info["trial_name"]),
                ("logdir", session.trial_dir),
                ("_iteration", session.iteration),
            ):
                with contextlib.suppress(AttributeError):
                    setattr(self.obj, attr, value)
            if session.restore_path is not None:
                self.obj.load_checkpoint(_load_arg(session.restore_path))
        finally:
            _local.session = None

    def train(self) -> Outcome:
        _local.session = self.session
        try:
            self.session.last_pause()
            metrics = self.obj.step()
            if not isinstance(metrics, dict):
                raise TypeError(
                    f"{type(self.obj).__name__}.step() returned {type(metrics).__name__}, "
                    "not a dict of metrics"
                )
            filled = self.session.fill(metrics)
            if hasattr(self.obj, "_iteration"):
                self.obj._iteration = self.session.iteration
            path = None
            if self.freq and self.session.iteration % self.freq == 0:
                path = self._save(filled)
            return ("result", filled, path)
        except BaseException as exc:
            return ("error", _format(exc), None)
        finally:
            _local.session = None

    def _save(self, metrics: dict[str, Any]) -> str:
        if self._saved is not None and self._saved[0] == self.session.iteration:
            return self._saved[1]  # already saved at this iteration
        target = fresh_checkpoint_dir(self.session.trial_dir, self.session.iteration)
        tmp = target + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        data = self.obj.save_checkpoint(tmp)
        if isinstance(data, dict):
            with open(os.path.join(tmp, _DICT_FILE), "wb") as f:
                pickle.dump(data, f)
        elif data is not None and os.path.abspath(str(data)) != os.path.abspath(tmp):
            shutil.copytree(str(data), tmp, dirs_exist_ok=True)
        os.replace(tmp, target)
        write_metadata(target, metrics)
        self._saved = (self.session.iteration, target)
        return target

    def save(self) -> str | None:
        metrics = {
            "training_iteration": self.session.iteration,
            "time_total_s": self.session.time_total,
            "trial_id": self.session.info["trial_id"],
        }
        return self._save(metrics)

    def stop(self, timeout: float) -> bool:
        try:
            self.obj.cleanup()
        except Exception:
            traceback.print_exc()
        return True


def _load_arg(path: str) -> Any:
    file = os.path.join(path, _DICT_FILE)
    if os.path.exists(file):
        with open(file, "rb") as f:
            return pickle.load(f)
    return path


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()
