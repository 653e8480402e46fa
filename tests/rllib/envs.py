"""Small environments the rllib tests (and the custom-env example) train on."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class GridWorld(gym.Env[np.ndarray, np.int64]):
    """A ``size`` x ``size`` grid: start in a corner, reach the opposite one.

    Observations are the one-hot cell index (a Discrete space), actions are up/down/left/
    right, each step costs 0.01 and reaching the goal gives 1. The shortest path takes
    ``2 * (size - 1)`` steps. ``env_config``: ``size`` (default 4), ``max_steps`` (default 30).
    """

    def __init__(self, env_config: dict[str, Any] | None = None):
        config = env_config or {}
        self.size = int(config.get("size", 4))
        self.max_steps = int(config.get("max_steps", 30))
        self.observation_space = spaces.Discrete(self.size * self.size)
        self.action_space = spaces.Discrete(4)
        self.pos = (0, 0)
        self.steps = 0

    def _obs(self) -> int:
        return self.pos[0] * self.size + self.pos[1]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.pos = (0, 0)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        dr, dc = [(-1, 0), (1, 0), (0, -1), (0, 1)][int(action)]
        r = min(self.size - 1, max(0, self.pos[0] + dr))
        c = min(self.size - 1, max(0, self.pos[1] + dc))
        self.pos = (r, c)
        self.steps += 1
        done = self.pos == (self.size - 1, self.size - 1)
        reward = 1.0 if done else -0.01
        return self._obs(), reward, done, self.steps >= self.max_steps and not done, {}


class DictObsEnv(gym.Env[Any, np.int64]):
    """An env with a Dict observation space, which the algorithms do not support."""

    def __init__(self, env_config: dict[str, Any] | None = None):
        self.observation_space = spaces.Dict({"a": spaces.Discrete(2)})
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return {"a": 0}, {}

    def step(self, action: Any) -> Any:
        return {"a": 0}, 0.0, True, False, {}


class DictCartPole(gym.Env[Any, np.int64]):
    """CartPole-v1 with a ``Dict`` observation: ``{"cart": [x, v], "pole": [angle, omega]}``."""

    def __init__(self, env_config: dict[str, Any] | None = None):
        self.inner = gym.make("CartPole-v1")
        box = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.observation_space = spaces.Dict({"cart": box, "pole": box})
        self.action_space = self.inner.action_space

    def _split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"cart": obs[:2].astype(np.float32), "pole": obs[2:].astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        obs, info = self.inner.reset(seed=seed)
        return self._split(obs), info

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.inner.step(action)
        return self._split(obs), reward, terminated, truncated, info


class BrightSide(gym.Env[np.ndarray, np.int64]):
    """A 6x6 one-channel image with one bright pixel; say which half it is in (0: left).

    Each of the 10 steps shows a new image and pays 1 for the right answer: random play
    scores 5 an episode, a policy that reads the image 10.
    """

    def __init__(self, env_config: dict[str, Any] | None = None):
        self.observation_space = spaces.Box(0.0, 1.0, (6, 6, 1), np.float32)
        self.action_space = spaces.Discrete(2)
        self.steps = 0
        self.column = 0

    def _image(self) -> np.ndarray:
        self.column = int(self.np_random.integers(6))
        image = np.zeros((6, 6, 1), np.float32)
        image[int(self.np_random.integers(6)), self.column, 0] = 1.0
        return image

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.steps = 0
        return self._image(), {}

    def step(self, action: Any) -> Any:
        reward = float(int(action) == int(self.column >= 3))
        self.steps += 1
        return self._image(), reward, False, self.steps >= 10, {}


class RepeatAfterMe(gym.Env[np.ndarray, np.int64]):
    """A memory task: each step shows a random bit (one-hot), and the reward is +1 for
    answering the bit shown ``delay`` steps before, -1 otherwise (0 for the first ``delay``
    steps, which have nothing to repeat yet).

    The observation at time t says what to do at t + ``delay`` and nothing about what to do
    now, so a feed-forward policy's expected return is 0; a policy with memory can reach
    ``length - delay``. ``env_config``: ``delay`` (default 1), ``length`` (default 16).
    """

    def __init__(self, env_config: dict[str, Any] | None = None):
        config = env_config or {}
        self.delay = int(config.get("delay", 1))
        self.length = int(config.get("length", 16))
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.bits: list[int] = []

    def _obs(self) -> np.ndarray:
        return np.eye(2, dtype=np.float32)[self.bits[-1]]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.bits = [int(self.np_random.integers(2))]
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        t = len(self.bits) - 1
        reward = 0.0
        if t >= self.delay:
            reward = 1.0 if int(action) == self.bits[t - self.delay] else -1.0
        self.bits.append(int(self.np_random.integers(2)))
        return self._obs(), reward, False, len(self.bits) > self.length, {}


class PointToTarget(gym.Env[np.ndarray, np.ndarray]):
    """Continuous control in one dimension: move a point onto a target.

    The observation is (position, target), each episode's target uniform in [-1, 1] and the
    point starting at 0; the action in [-1, 1] moves the point by half of it (the position
    stays in [-2, 2]); the reward is minus the distance after the move; 10 steps an
    episode. Random actions return about -8; going straight to the target, about -1.
    """

    def __init__(self, env_config: dict[str, Any] | None = None):
        self.length = int((env_config or {}).get("length", 10))
        self.observation_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.pos, self.target, self.t = 0.0, 0.0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.target], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.pos, self.target, self.t = 0.0, float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        move = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1))
        self.pos = float(np.clip(self.pos + 0.5 * move, -2.0, 2.0))
        self.t += 1
        reward = -abs(self.pos - self.target)
        return self._obs(), reward, False, self.t >= self.length, {}


def minigrid_image(env_config: dict[str, Any]) -> gym.Env[Any, Any]:
    """A MiniGrid task (``env_config["id"]``, default ``MiniGrid-Empty-5x5-v0``) observed as
    its image alone: the agent's 7x7 view, 3 channels (object, colour, state), uint8.

    The ``minigrid`` package (its ``ImgObsWrapper``) is imported here, in the env runner, so
    only the tests that train on it need it installed.
    """
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    from minigrid.wrappers import ImgObsWrapper

    return ImgObsWrapper(gym.make(env_config.get("id", "MiniGrid-Empty-5x5-v0")))
