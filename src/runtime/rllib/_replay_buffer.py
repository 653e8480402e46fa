"""ReplayBuffer: a fixed-capacity ring of transitions in numpy arrays, sampled uniformly."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ReplayBuffer"]

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminateds")


class ReplayBuffer:
    """Stores ``(obs, action, reward, next_obs, terminated)``; the oldest is overwritten.

    Columns are allocated on the first ``add`` from the shapes and dtypes it sees.
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
            for k in FIELDS:
                v = np.asarray(batch[k])
                self.columns[k] = np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
        idx = (self.next + np.arange(n)) % self.capacity
        for k in FIELDS:
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
