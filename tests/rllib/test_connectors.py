"""Connectors: observation normalisation merged over runners, frame stacking, Dict observations
flattened, actions mapped onto their bounds; and PPO learning through them on a mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from runtime.rllib import Algorithm, PPOConfig
from runtime.rllib.connectors import ConnectorV2
from runtime.rllib.connectors.env_to_module import (
    FlattenObservations,
    FrameStackingEnvToModule,
    MeanStdFilter,
)
from runtime.rllib.connectors.module_to_env import NormalizeAndClipActions
from tests.rllib.envs import DictCartPole


def test_mean_std_filter_merges_runner_statistics_exactly() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (50, 3)), rng.normal(-1.0, 0.5, (70, 3))
    runner1, runner2, driver = MeanStdFilter(), MeanStdFilter(), MeanStdFilter()
    for rows in np.split(a, 5):
        runner1.transform_observations(rows, np.zeros(len(rows), bool))
    runner2.transform_observations(b, np.zeros(len(b), bool))
    driver.merge_delta(runner1.pop_delta())
    driver.merge_delta(runner2.pop_delta())
    assert runner1.pop_delta() is None  # popped
    both = np.concatenate([a, b])
    assert driver.count == 120
    np.testing.assert_allclose(driver.mean, both.mean(0))
    np.testing.assert_allclose(np.sqrt(driver.m2 / driver.count), both.std(0))
    # Normalised with the merged statistics; peeking (update=False) moves nothing.
    fresh = MeanStdFilter()
    fresh.set_state(driver.get_state())
    out = fresh.transform_observations(both, np.zeros(120, bool), update=False)
    np.testing.assert_allclose(out, (both - both.mean(0)) / both.std(0), rtol=1e-4, atol=1e-5)
    assert fresh.count == 120 and fresh.pop_delta() is None


def test_frame_stacking_repeats_the_first_frame_and_restarts_per_env() -> None:
    stack = FrameStackingEnvToModule(num_frames=3)
    space = stack.recompute_output_observation_space(gym.spaces.Box(-1, 1, (2,)))
    assert space.shape == (6,)
    first = stack.transform_observations(np.array([[1, 1], [5, 5]]), np.ones(2, bool))
    assert first.tolist() == [[1, 1, 1, 1, 1, 1], [5, 5, 5, 5, 5, 5]]
    peek = stack.transform_observations(np.array([[2, 2], [6, 6]]), np.zeros(2, bool), update=False)
    assert peek.tolist() == [[1, 1, 1, 1, 2, 2], [5, 5, 5, 5, 6, 6]]
    # Env 1 starts a new episode: its stack is the new observation three times.
    out = stack.transform_observations(np.array([[2, 2], [9, 9]]), np.array([False, True]))
    assert out.tolist() == [[1, 1, 1, 1, 2, 2], [9, 9, 9, 9, 9, 9]]
    with pytest.raises(ValueError, match="num_frames"):
        FrameStackingEnvToModule(num_frames=0)


def test_dict_observations_flatten_and_actions_map_onto_their_bounds() -> None:
    env = DictCartPole()
    flatten = FlattenObservations()
    space = flatten.recompute_output_observation_space(env.observation_space)
    assert space.shape == (4,)
    obs = {
        "cart": np.array([[1, 2], [5, 6]], np.float32),
        "pole": np.array([[3, 4], [7, 8]], np.float32),
    }
    assert flatten.transform_observations(obs, np.ones(2, bool)).tolist() == [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
    ]
    scale = NormalizeAndClipActions(gym.spaces.Box(-2.0, 2.0, (1,)))
    np.testing.assert_allclose(
        scale.transform_actions(np.array([[-1.0], [0.25], [3.0]])), [[-2.0], [0.5], [2.0]]
    )
    with pytest.raises(TypeError, match="ConnectorV2"):
        PPOConfig().environment("CartPole-v1").env_runners(
            num_env_runners=0, env_to_module_connector=lambda env: object()
        ).build()


def cartpole(**runners: Any) -> PPOConfig:
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    config.env_runners(**{"num_env_runners": 2, "num_envs_per_env_runner": 4, **runners})
    return config.training(train_batch_size=1000)


def learn(algo: Algorithm, target: float, iterations: int) -> list[float]:
    means = []
    for _ in range(iterations):
        means.append(algo.train()["env_runners"]["episode_return_mean"])
        if means[-1] >= target:
            break
    return means


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_ppo_learns_through_a_mean_std_filter_synced_over_runners(tmp_path: Path) -> None:
    algo = cartpole(env_to_module_connector=lambda env: MeanStdFilter()).build()
    try:
        means = learn(algo, 100, 30)
        assert means[-1] >= 100, means
        driver = algo.env_to_module[0]
        # Every observation the runners acted on went into the driver's merged statistics.
        assert driver.count == algo.num_env_steps_sampled_lifetime
        assert np.all(np.sqrt(driver.m2 / driver.count) > 0)
        obs = np.array([0.01, 0.0, 0.02, 0.0], np.float32)
        action = algo.compute_single_action(obs, explore=False)
        path = algo.save(tmp_path / "ckpt")
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path, num_env_runners=0)
    try:
        assert restored.env_to_module[0].count == driver.count
        assert restored.compute_single_action(obs, explore=False) == action
    finally:
        restored.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_ppo_learns_on_stacked_frames_and_on_flattened_dict_observations() -> None:
    stacked = cartpole(
        env_to_module_connector=lambda env: FrameStackingEnvToModule(num_frames=3)
    ).build()
    try:
        assert stacked.observation_space.shape == (12,)
        assert stacked.module.pi[0].in_features == 12
        means = learn(stacked, 100, 30)
        assert means[-1] >= 100, means
    finally:
        stacked.stop()
    config = cartpole(env_to_module_connector=lambda env: [FlattenObservations()])
    flat = config.environment(DictCartPole).build()
    try:
        assert flat.observation_space.shape == (4,)
        means = learn(flat, 100, 30)
        assert means[-1] >= 100, means
        obs = {"cart": np.zeros(2, np.float32), "pole": np.array([0.1, 0.0], np.float32)}
        assert flat.compute_single_action(obs, explore=False) in (0, 1)
    finally:
        flat.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(200)
def test_module_to_env_connectors_shape_the_actions_the_env_gets() -> None:
    class Negate(ConnectorV2):
        def transform_actions(self, actions: np.ndarray) -> np.ndarray:
            return 1 - actions  # CartPole: left <-> right

    config = cartpole(num_env_runners=0).env_runners(module_to_env_connector=lambda env: Negate())
    algo = config.build()
    try:
        obs = np.array([0.0, 0.0, 0.1, 0.0], np.float32)
        greedy = int(algo.module.act(obs[None], False, np.random.default_rng(0))[0][0])
        assert algo.compute_single_action(obs, explore=False) == 1 - greedy
        algo.train()  # the runner steps the env with the negated actions
    finally:
        algo.stop()
