"""Tiny trainables the tests run (importable, so node processes load them by reference)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from runtime import tune


def quadratic(config: dict[str, Any]) -> None:
    """Loss falls towards (x-3)^2 + (y+1)^2 over the iterations."""
    target = (config["x"] - 3) ** 2 + (config.get("y", -1) + 1) ** 2
    for i in range(config.get("iters", 1)):
        tune.report({"loss": target + 1.0 / (i + 1)})


def returns_dict(config: dict[str, Any]) -> dict[str, Any]:
    return {"score": config["a"] * 10}


def timed(config: dict[str, Any]) -> None:
    """Records when it ran, to check that trials never overlap beyond the resources."""
    start = time.time()
    time.sleep(config.get("sleep", 0.05))
    tune.report({"start": start, "end": time.time()})


def curve(config: dict[str, Any]) -> None:
    """A toy learning curve: the score of trial ``q`` at step t is q * t (higher q better)."""
    for t in range(1, config.get("iters", 20) + 1):
        tune.report({"score": config["q"] * t})


def nested_curve(config: dict[str, Any]) -> None:
    """``curve`` reporting its score nested, as RLlib does (``{"runners": {"score": ...}}``)."""
    for t in range(1, config.get("iters", 20) + 1):
        tune.report({"runners": {"score": config["q"] * t, "steps": t}})


def failing(config: dict[str, Any]) -> None:
    if config["fail"]:
        raise ValueError(f"bad config {config['x']}")
    tune.report({"ok": 1})


def counter_with_checkpoints(config: dict[str, Any]) -> None:
    """Counts to ``iters``, checkpointing every step; logs each (re)start to ``log``."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with open(os.path.join(checkpoint.path, "state.json")) as f:
            start = json.load(f)["step"]
    with open(config["log"], "a") as f:
        f.write(f"{tune.get_context().get_trial_id()} {start}\n")
    for step in range(start + 1, config["iters"] + 1):
        if config.get("die_at") == step and not os.path.exists(config["log"] + ".died"):
            open(config["log"] + ".died", "w").close()
            os._exit(1)  # the node process dies, with this trial's actor
        time.sleep(config.get("sleep", 0.0))
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": step}, f)
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))


def pbt_member(config: dict[str, Any]) -> None:
    """Score grows by ``lr`` per step; checkpoints carry the writer's id and the score.
    With ``barrier``, the first run of each trial waits until ``peers`` trials started."""
    score, origin = 0.0, tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        state = checkpoint.to_dict()
        score, origin = state["score"], state["writer"]
    elif "barrier" in config:
        _wait_for_peers(config["barrier"], origin, config["peers"])
    for _ in range(config.get("iters", 12)):
        time.sleep(config.get("sleep", 0.0))
        score += config["lr"]
        ckpt = tune.Checkpoint.from_dict(
            {"score": score, "writer": tune.get_context().get_trial_id()}
        )
        tune.report({"score": score, "restored_from": origin}, checkpoint=ckpt)


class Halving(tune.Trainable):
    """A class trainable: v halves each step; checkpoints as a dict."""

    def setup(self, config: dict[str, Any]) -> None:
        self.v = float(config["v"])

    def step(self) -> dict[str, Any]:
        self.v /= 2
        return {"v": self.v}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"v": self.v}

    def load_checkpoint(self, checkpoint: Any) -> None:
        self.v = checkpoint["v"]


class DirCheckpointing(tune.Trainable):
    """A class trainable that writes its checkpoint as a file in the directory."""

    def setup(self, config: dict[str, Any]) -> None:
        self.n = 0

    def step(self) -> dict[str, Any]:
        self.n += 1
        return {"n": self.n, "done": self.n >= 3}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        with open(os.path.join(checkpoint_dir, "n.txt"), "w") as f:
            f.write(str(self.n))

    def load_checkpoint(self, checkpoint: Any) -> None:
        with open(os.path.join(checkpoint, "n.txt")) as f:
            self.n = int(f.read())


def curve_checkpointed(config: dict[str, Any]) -> None:
    """``curve`` that resumes from its checkpoint (for schedulers that pause trials)."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint.to_dict()["t"]
    for t in range(start + 1, config.get("iters", 20) + 1):
        tune.report({"score": config["q"] * t}, checkpoint=tune.Checkpoint.from_dict({"t": t}))


def where_are_my_bundles(config: dict[str, Any]) -> dict[str, Any]:
    """Runs a task in bundle 1 of the trial's placement group; returns both node ids."""
    import runtime
    from runtime.libs import trainable as factory
    from runtime.util import PlacementGroupSchedulingStrategy

    start = time.time()
    pg = tune.get_context().get_placement_group()
    assert pg is factory.current_placement_group() or pg == factory.current_placement_group()

    @runtime.remote
    def node_of_task() -> str:
        return runtime.get_runtime_context().get_node_id()

    strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1)
    other = runtime.get(node_of_task.options(scheduling_strategy=strategy).remote())
    time.sleep(0.05)
    return {
        "here": runtime.get_runtime_context().get_node_id(),
        "there": other,
        "start": start,
        "end": time.time(),
    }


def scored_checkpoints(config: dict[str, Any]) -> None:
    """Reports a checkpoint with each of ``config["scores"]``."""
    for score in config["scores"]:
        tune.report({"acc": score}, checkpoint=tune.Checkpoint.from_dict({"acc": score}))


def _wait_for_peers(folder: str, me: str, count: int, timeout: float = 30.0) -> None:
    """A barrier between trials: mark this one started, wait until ``count`` have."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, me), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)


class Climber(tune.Trainable):
    """A class trainable for PBT: score grows by ``lr`` per step; saved as a dict. The first
    run of each trial waits for its peers, so the population really runs side by side."""

    def setup(self, config: dict[str, Any]) -> None:
        self.score = 0.0
        self.origin = ""
        self.waited = False

    def step(self) -> dict[str, Any]:
        if not self.waited:
            self.waited = True
            _wait_for_peers(self.config["barrier"], self.trial_id, self.config["peers"])
        time.sleep(0.02)
        self.score += self.config["lr"]
        return {"score": self.score, "origin": self.origin or self.trial_id}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        return {"score": self.score, "writer": self.trial_id}

    def load_checkpoint(self, checkpoint: Any) -> None:
        self.score, self.origin = checkpoint["score"], checkpoint["writer"]


def flaky(config: dict[str, Any]) -> None:
    """Raises on its first run (a marker file remembers), then succeeds."""
    marker = config["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    tune.report({"ok": 1})
