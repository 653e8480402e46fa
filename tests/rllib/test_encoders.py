"""Encoders: a CNN over image observations (``conv_filters``), the same in torch and in the
runners' numpy policy, and PPO learning to read an image with it: on a task written for the
tests, and on MiniGrid's image observations (the ``minigrid`` package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.rllib import DQNConfig, PPOConfig
from runtime.rllib._learner import get_module_weights
from runtime.rllib.ppo import ActorCritic
from tests.rllib.envs import BrightSide, minigrid_image

FILTERS = [[8, [3, 3], 1], [16, [2, 2], 2]]


def test_the_runners_numpy_cnn_computes_what_the_torch_module_does() -> None:
    env = BrightSide()
    model = {"fcnet_hiddens": [16], "fcnet_activation": "tanh", "conv_filters": FILTERS}
    torch.manual_seed(0)
    module = ActorCritic(env.observation_space, env.action_space, model)
    images = np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype(np.float32)
    with torch.no_grad():
        logits = module.forward_inference({"obs": images})["action_dist_inputs"]
    module.actor.set_weights(get_module_weights(module))
    greedy, extra = module.actor.act(images, False, np.random.default_rng(0))
    assert greedy.tolist() == logits.argmax(-1).tolist()
    np.testing.assert_allclose(
        extra["action_logp"], torch.log_softmax(logits, -1).numpy()[np.arange(5), greedy], rtol=1e-4
    )
    # 6x6 -> 3x3 conv -> 4x4x8 -> 2x2 stride 2 -> 2x2x16 = 64 inputs to the MLP.
    assert module.pi[0].in_features == 64


def test_conv_filters_are_refused_where_there_is_no_cnn_or_no_image() -> None:
    with pytest.raises(NotImplementedError, match="conv_filters"):
        DQNConfig().environment(BrightSide).rl_module(
            model_config={"conv_filters": FILTERS}
        ).build()
    config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
    with pytest.raises(ValueError, match="image"):
        config.rl_module(model_config={"conv_filters": FILTERS}).build()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_ppo_with_a_cnn_learns_to_read_the_image() -> None:
    config = (
        PPOConfig()
        .environment(BrightSide)
        .env_runners(num_env_runners=1, num_envs_per_env_runner=4)
        .training(train_batch_size=1000, lr=1e-3, minibatch_size=100, num_epochs=5)
        .rl_module(model_config={"conv_filters": FILTERS, "fcnet_hiddens": [32]})
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        means = []
        for _ in range(30):
            means.append(algo.train()["env_runners"]["episode_return_mean"])
            if means[-1] >= 9:
                break
        assert means[-1] >= 9, means  # random play: 5
        image = np.zeros((6, 6, 1), np.float32)
        image[2, 5, 0] = 1.0
        assert algo.compute_single_action(image, explore=False) == 1
    finally:
        algo.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_ppo_with_a_cnn_learns_minigrid_from_its_image_observations() -> None:
    pytest.importorskip("minigrid", reason="minigrid is not installed (the rllib extra has it)")
    config = (
        PPOConfig()
        .environment(minigrid_image)  # MiniGrid-Empty-5x5-v0, 7x7x3 uint8 images, 7 actions
        .env_runners(num_env_runners=1, num_envs_per_env_runner=8)
        .training(train_batch_size=1000, lr=3e-4, minibatch_size=100, num_epochs=8)
        .rl_module(
            model_config={"conv_filters": [[16, [2, 2], 1], [32, [2, 2], 1]], "fcnet_hiddens": [64]}
        )
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        assert algo.observation_space.shape == (7, 7, 3)
        means = []
        for _ in range(25):
            means.append(algo.train()["env_runners"]["episode_return_mean"])
            if means[-1] >= 0.8:
                break
        # Random play: 0.18 (the goal reached in 36 % of episodes); the best: 0.955.
        assert means[-1] >= 0.8, means
    finally:
        algo.stop()
