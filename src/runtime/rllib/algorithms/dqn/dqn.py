"""Ray RLlib's module path ``ray.rllib.algorithms.dqn.dqn``: ``DQN`` and ``DQNConfig``."""

from runtime.rllib.dqn import DQN, DQNConfig

__all__ = ["DQN", "DQNConfig"]
