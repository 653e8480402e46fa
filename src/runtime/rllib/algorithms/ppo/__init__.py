"""Ray RLlib's module path ``ray.rllib.algorithms.ppo``: ``PPO`` and ``PPOConfig``."""

from runtime.rllib.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig"]
