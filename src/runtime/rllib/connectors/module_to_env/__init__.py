"""Module-to-env connectors (Ray's ``ray.rllib.connectors.module_to_env``).

Runners always clip Box actions to the space's bounds last (Ray's ``clip_actions``); a
module-to-env connector runs before that.

- ``NormalizeAndClipActions``: the module acts in [-1, 1]; actions are mapped linearly
  onto ``[low, high]`` and clipped (Ray's ``normalize_actions=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.rllib.connectors.connector_v2 import ConnectorV2

__all__ = ["NormalizeAndClipActions"]


class NormalizeAndClipActions(ConnectorV2):
    """Map actions from [-1, 1] onto the Box action space's bounds, then clip."""

    def __init__(self, action_space: Any):
        from gymnasium import spaces

        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"NormalizeAndClipActions needs a Box action space: {action_space}")
        self.low = np.asarray(action_space.low, np.float32)
        self.high = np.asarray(action_space.high, np.float32)

    def transform_actions(self, actions: np.ndarray) -> np.ndarray:
        clipped = np.clip(actions, -1.0, 1.0)
        return (self.low + (clipped + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)
