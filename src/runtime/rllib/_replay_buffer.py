"""ReplayBuffer: a fixed-capacity ring of transitions in numpy arrays, sampled uniformly;
and ``n_step_transitions``, which turns a sampled fragment into n-step transitions."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ReplayBuffer", "n_step_transitions"]


class ReplayBuffer:
    """Stores transitions (``obs, actions, rewards, next_obs, terminateds``, and whatever
    other columns the first ``add`` brings, e.g. ``discounts``); the oldest is overwritten.

    Columns are allocated on the first ``add`` from the names, shapes and dtypes it sees.
    """

    def __init__(self, capacity: int):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"replay buffer capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self.size = 0
        self.next = 0
        self.columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Add a batch of transitions (arrays with the same first dimension)."""
        n = len(batch["rewards"])
        if not self.columns:
            for k, column in batch.items():
                v = np.asarray(column)
                self.columns[k] = np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
        idx = (self.next + np.arange(n)) % self.capacity
        for k in self.columns:
            self.columns[k][idx] = batch[k]
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return {k: v[idx] for k, v in self.columns.items()}

    def get_state(self) -> dict[str, Any]:
        return {"size": self.size, "next": self.next, "columns": self.columns}

    def set_state(self, state: dict[str, Any]) -> None:
        self.size, self.next = int(state["size"]), int(state["next"])
        self.columns = {k: np.array(v) for k, v in state["columns"].items()}


def n_step_transitions(b: dict[str, np.ndarray], n: int, gamma: float) -> dict[str, np.ndarray]:
    """The ``[T, N]`` fragment ``b`` as n-step transitions, one per step.

    Step t's reward becomes ``sum_k gamma^k r_{t+k}`` over the next ``n`` steps, stopping at
    an episode's end or the fragment's; ``next_obs`` and ``terminateds`` are those of the
    last step summed, and ``discounts`` is ``gamma^k`` for the k steps summed, so the TD
    target is ``reward + discount * (1 - terminated) * Q(next_obs)``.
    """
    rewards, terms = b["rewards"], b["terminateds"].astype(bool)
    ends = np.logical_or(terms, b["truncateds"].astype(bool))
    steps, envs = rewards.shape
    ret = np.zeros((steps, envs), np.float32)
    disc = np.ones((steps, envs), np.float32)
    last = np.zeros((steps, envs), np.int64)
    cols = np.arange(envs)
    for t in range(steps):
        alive = np.ones(envs, bool)
        g = np.ones(envs, np.float32)
        idx = np.full(envs, t)
        for k in range(min(n, steps - t)):
            ret[t] += np.where(alive, g * rewards[t + k], 0.0)
            idx = np.where(alive, t + k, idx)
            g = np.where(alive, g * gamma, g)
            alive &= ~ends[t + k]
        disc[t], last[t] = g, idx
    return {
        "obs": b["obs"],
        "actions": b["actions"],
        "rewards": ret,
        "next_obs": b["next_obs"][last, cols],
        "terminateds": terms[last, cols],
        "discounts": disc,
    }
