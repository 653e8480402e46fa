"""DQN on a grid world defined right here: a user env class configured through env_config.

Run it with `python examples/rllib_custom_env.py`. The agent starts in one corner of a
4x4 grid and learns the shortest path (6 steps) to the opposite corner.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import runtime
from runtime.rllib import DQNConfig


class GridWorld(gym.Env[int, np.int64]):
    """Reach the far corner; each step costs 0.01, the goal gives 1."""

    def __init__(self, env_config: dict[str, Any]):
        self.size = int(env_config.get("size", 4))
        self.max_steps = int(env_config.get("max_steps", 20))
        self.observation_space = spaces.Discrete(self.size * self.size)
        self.action_space = spaces.Discrete(4)  # up, down, left, right
        self.row = self.col = self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.row = self.col = self.steps = 0
        return 0, {}

    def step(self, action: Any) -> Any:
        dr, dc = [(-1, 0), (1, 0), (0, -1), (0, 1)][int(action)]
        self.row = min(self.size - 1, max(0, self.row + dr))
        self.col = min(self.size - 1, max(0, self.col + dc))
        self.steps += 1
        goal = self.row == self.col == self.size - 1
        truncated = self.steps >= self.max_steps and not goal
        return self.row * self.size + self.col, 1.0 if goal else -0.01, goal, truncated, {}


def main() -> None:
    runtime.init(num_cpus=2)
    config = (
        DQNConfig()
        .environment(GridWorld, env_config={"size": 4, "max_steps": 20})
        .env_runners(num_env_runners=2, rollout_fragment_length=16)
        .training(
            lr=1e-3,
            num_steps_sampled_before_learning_starts=200,
            epsilon_timesteps=1500,
            target_network_update_freq=100,
            training_intensity=8,
            model={"fcnet_hiddens": [32]},
        )
        .evaluation(evaluation_duration=1)
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        # An iteration samples at least 1000 env steps (DQN's min_sample_timesteps_per_iteration).
        for i in range(1, 21):
            result = algo.train()
            greedy = algo.evaluate()["env_runners"]
            epsilon = result["learners"]["default_policy"]["epsilon"]
            length = greedy["episode_len_mean"]
            print(f"iteration {i:3d}: epsilon {epsilon:.2f}, greedy path length {length:.0f}")
            if greedy["episode_len_mean"] == 2 * (4 - 1):
                break
        path, obs = [], 0
        env = GridWorld({"size": 4})
        env.reset()
        for _ in range(20):
            action = algo.compute_single_action(obs, explore=False)
            path.append("UDLR"[action])
            obs, _, done, _, _ = env.step(action)
            if done:
                break
        print(f"greedy path: {''.join(path)} ({len(path)} steps; the shortest is 6)")
    finally:
        algo.stop()
        runtime.shutdown()


if __name__ == "__main__":
    main()
