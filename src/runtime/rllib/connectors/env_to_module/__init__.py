"""Env-to-module connectors (Ray's ``ray.rllib.connectors.env_to_module``).

- ``MeanStdFilter``: observations normalised by running mean and std (merged over runners).
- ``FrameStackingEnvToModule``: the last ``num_frames`` observations, concatenated on the
  last axis (the first one repeated at an episode's start).
- ``FlattenObservations``: ``Dict`` / ``Tuple`` (or any) observations flattened to one Box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.rllib.connectors.connector_v2 import ConnectorV2

__all__ = ["FlattenObservations", "FrameStackingEnvToModule", "MeanStdFilter"]


class MeanStdFilter(ConnectorV2):
    """``(obs - mean) / (std + 1e-8)``, clipped to ``[-clip, clip]``, with running statistics.

    The statistics are Welford's (count, mean, sum of squared deviations); runners send the
    ones of each round, the driver merges them exactly (Chan et al.'s parallel update) and
    broadcasts the merged ones with the next weights.
    """

    def __init__(self, *, clip: float = 10.0, **unsupported: Any):
        if unsupported:
            raise NotImplementedError(
                f"MeanStdFilter({next(iter(unsupported))}=...) is not supported here"
            )
        self.clip = float(clip)
        self.count = 0.0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self._delta: tuple[float, np.ndarray, np.ndarray] | None = None

    def transform_observations(self, obs: Any, starts: np.ndarray, *, update: bool = True) -> Any:
        x = np.asarray(obs, dtype=np.float64)
        if update:
            self._delta = _welford(self._delta, x)
            self._absorb(x)
        if self.mean is None or self.m2 is None or self.count < 2:
            return np.clip(x, -self.clip, self.clip).astype(np.float32)
        std = np.sqrt(self.m2 / self.count)
        return np.clip((x - self.mean) / (std + 1e-8), -self.clip, self.clip).astype(np.float32)

    def _absorb(self, x: np.ndarray) -> None:
        merged = _combine(
            None if self.mean is None else (self.count, self.mean, self.m2),  # type: ignore[arg-type]
            _welford(None, x),
        )
        self.count, self.mean, self.m2 = merged

    def get_state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def set_state(self, state: dict[str, Any]) -> None:
        self.count = float(state["count"])
        self.mean = None if state["mean"] is None else np.array(state["mean"])
        self.m2 = None if state["m2"] is None else np.array(state["m2"])

    def pop_delta(self) -> Any:
        delta, self._delta = self._delta, None
        return delta

    def merge_delta(self, delta: Any) -> None:
        if delta is not None:
            current = None if self.mean is None else (self.count, self.mean, self.m2)
            self.count, self.mean, self.m2 = _combine(current, delta)  # type: ignore[arg-type]


def _welford(
    acc: tuple[float, np.ndarray, np.ndarray] | None, x: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Statistics of ``acc``'s data plus the rows of ``x``."""
    batch = (float(len(x)), x.mean(0), ((x - x.mean(0)) ** 2).sum(0))
    return _combine(acc, batch)


def _combine(
    a: tuple[float, np.ndarray, np.ndarray] | None, b: tuple[float, np.ndarray, np.ndarray]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Chan et al.'s merge of two (count, mean, M2) statistics."""
    if a is None or a[0] == 0:
        return b
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta**2 * na * nb / n


class FrameStackingEnvToModule(ConnectorV2):
    """The last ``num_frames`` observations per env, concatenated on the last axis."""

    def __init__(self, num_frames: int = 4, **unsupported: Any):
        if unsupported:
            raise NotImplementedError(
                f"FrameStackingEnvToModule({next(iter(unsupported))}=...) is not supported here"
            )
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        self.num_frames = num_frames
        self.frames: np.ndarray | None = None  # [num_envs, num_frames, *obs_shape]

    def recompute_output_observation_space(self, observation_space: Any) -> Any:
        from gymnasium import spaces

        if not isinstance(observation_space, spaces.Box):
            raise TypeError(f"frame stacking needs a Box observation space: {observation_space}")
        k = self.num_frames
        return spaces.Box(
            np.concatenate([observation_space.low] * k, -1),
            np.concatenate([observation_space.high] * k, -1),
            dtype=observation_space.dtype,
        )

    def transform_observations(self, obs: Any, starts: np.ndarray, *, update: bool = True) -> Any:
        x = np.asarray(obs)
        frames = self.frames
        if frames is None or frames.shape[0] != len(x):
            frames = np.repeat(x[:, None], self.num_frames, 1)
        else:
            frames = np.concatenate([frames[:, 1:], x[:, None]], 1)
            restart = np.asarray(starts, bool)
            frames[restart] = x[restart][:, None]
        if update:
            self.frames = frames
        # [N, k, ..., d] -> [N, ..., k * d]: frames side by side on the last axis.
        moved = np.moveaxis(frames, 1, -2)
        return moved.reshape(*moved.shape[:-2], -1)


class FlattenObservations(ConnectorV2):
    """Any gymnasium space's observations (``Dict``, ``Tuple``, ...) as one flat float Box.

    Runners apply it as gymnasium's ``FlattenObservation`` wrapper on each env (so the
    final observations of ended episodes are flattened too); it must come first in the
    pipeline.
    """

    env_wrapper = True

    def __init__(self, **unsupported: Any):
        if unsupported:
            raise NotImplementedError(
                f"FlattenObservations({next(iter(unsupported))}=...) is not supported here"
            )
        self.space: Any = None

    def recompute_output_observation_space(self, observation_space: Any) -> Any:
        from gymnasium import spaces

        self.space = observation_space
        flat: Any = spaces.flatten_space(observation_space)
        return spaces.Box(flat.low, flat.high, dtype=np.float32)

    def transform_observations(self, obs: Any, starts: np.ndarray, *, update: bool = True) -> Any:
        from gymnasium import spaces
        from gymnasium.vector.utils import batch_space, iterate

        if self.space is None:
            raise RuntimeError("FlattenObservations: the observation space is not known yet")
        n = len(starts)
        rows = iterate(batch_space(self.space, n), obs)
        flat: list[Any] = [spaces.flatten(self.space, row) for row in rows]
        return np.stack(flat).astype(np.float32)
