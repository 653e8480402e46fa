"""SAC: the squashed-Gaussian log-probabilities, the runners' numpy policy, target updates,
checkpoints, and (on a mesh) learning Pendulum-v1 within a small step budget."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from runtime.rllib import SAC, Algorithm, SACConfig, UnsupportedSpaceError
from runtime.rllib._learner import get_module_weights
from runtime.rllib.sac import SACModule


def small_module(twin_q: bool = True) -> SACModule:
    obs, act = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2.0, 2.0, (2,))
    torch.manual_seed(0)
    return SACModule(obs, act, {"fcnet_hiddens": [16], "fcnet_activation": "relu"}, twin_q)


def test_squashed_log_probs_match_torchs_tanh_transformed_normal() -> None:
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    module = small_module()
    obs = torch.randn(64, 3)
    torch.manual_seed(1)
    action, logp = module.sample(obs)
    assert action.abs().max() < 1.0
    mean, log_std = module.pi(obs).chunk(2, -1)
    dist = TransformedDistribution(
        Normal(mean, log_std.clamp(-20, 2).exp()), [TanhTransform(cache_size=1)]
    )
    clipped = action.clamp(-1 + 1e-6, 1 - 1e-6)
    torch.testing.assert_close(logp, dist.log_prob(clipped).sum(-1), rtol=1e-3, atol=1e-3)


def test_the_runners_policy_acts_in_the_action_bounds_with_the_learners_weights() -> None:
    module = small_module()
    module.actor.set_weights(get_module_weights(module))
    obs = np.random.default_rng(0).uniform(-1, 1, (50, 3)).astype(np.float32)
    greedy, _ = module.actor.act(obs, False, np.random.default_rng(0))
    with torch.no_grad():
        mean = module.pi(torch.from_numpy(obs)).chunk(2, -1)[0]
    np.testing.assert_allclose(greedy, 2.0 * np.tanh(mean.numpy()), rtol=1e-5, atol=1e-6)
    explored, _ = module.actor.act(obs, True, np.random.default_rng(0))
    assert explored.shape == (50, 2) and np.all(np.abs(explored) <= 2.0)
    assert not np.allclose(explored, greedy)
    # Replayed env-scale actions go back into [-1, 1] for the critics.
    back = module.normalize(torch.from_numpy(greedy))
    torch.testing.assert_close(back, torch.tanh(mean), rtol=1e-5, atol=1e-5)


def test_discrete_actions_are_a_clear_error() -> None:
    with pytest.raises(UnsupportedSpaceError, match="Box action"):
        SACConfig().environment("CartPole-v1").env_runners(num_env_runners=0).build()


def test_bad_settings_fail_before_any_work() -> None:
    base = SACConfig().environment("Pendulum-v1")
    with pytest.raises(ValueError, match="tau"):
        base.copy().training(tau=0).build()
    with pytest.raises(ValueError, match="actor_lr"):
        base.copy().training(actor_lr=-1).build()
    with pytest.raises(NotImplementedError, match="q_model_config"):
        base.copy().training(q_model_config={})


def test_an_update_moves_the_target_critics_by_tau_and_tunes_alpha() -> None:
    config = SACConfig().environment("Pendulum-v1").env_runners(num_env_runners=0)
    config.training(
        model={"fcnet_hiddens": [16]},
        num_steps_sampled_before_learning_starts=64,
        train_batch_size=32,
        tau=0.1,
        twin_q=False,
    )
    config.reporting(min_sample_timesteps_per_iteration=0).debugging(seed=0)
    algo = config.build()
    try:
        assert algo.module.q2 is None and len(algo.module.targets()) == 1
        while len(algo.buffer) < 64:
            algo.train()
        target_before = algo.target_flat.clone()
        online_before = algo.critic_learner.flat.clone()
        stats = algo.update(algo._minibatch())
        expected = target_before + 0.1 * (algo.critic_learner.flat - target_before)
        torch.testing.assert_close(algo.target_flat, expected)
        assert not torch.equal(algo.critic_learner.flat, online_before)
        assert math.isfinite(float(stats["qf_loss"])) and math.isfinite(float(stats["alpha_loss"]))
        assert algo.runner_weights().keys() == {
            k for k in algo.get_weights() if k.startswith("pi.")
        }
    finally:
        algo.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(400)
def test_sac_learns_pendulum_within_a_small_step_budget(tmp_path: Path) -> None:
    # A random policy scores about -1200 to -1500 on Pendulum-v1; within 6000 env steps this
    # SAC gets past -900 (measured: about -700 by 4000 steps, -150 by 5000). The full run to
    # -250 is in benchmarks/rllib.py.
    config = SACConfig().environment("Pendulum-v1").env_runners(num_env_runners=1)
    config.training(model={"fcnet_hiddens": [64, 64]}).debugging(seed=0)
    algo = config.build()
    try:
        means = []
        for _ in range(6):
            result = algo.train()
            means.append(result["env_runners"]["episode_return_mean"])
            if means[-1] > -900:
                break
        assert means[-1] > -900, means
        assert result["num_env_steps_sampled_lifetime"] <= 6000 + 16
        stats = result["learners"]["default_policy"]
        assert 0.0 < stats["alpha_value"] < 1.0  # the temperature was tuned down from 1
        assert all(math.isfinite(stats[k]) for k in ("qf_loss", "policy_loss", "entropy"))
        obs = np.array([1.0, 0.0, 0.0], np.float32)
        greedy = algo.compute_single_action(obs, explore=False)
        assert greedy.shape == (1,) and -2.0 <= greedy[0] <= 2.0
        saved = algo.save(tmp_path / "sac")
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(saved, num_env_runners=0)
    try:
        assert isinstance(restored, SAC)
        np.testing.assert_array_equal(restored.compute_single_action(obs, explore=False), greedy)
        assert float(restored.temperature.log_alpha.detach().exp()) == pytest.approx(
            stats["alpha_value"]
        )
        torch.testing.assert_close(restored.target_flat, algo.target_flat)
        for name, part in restored.learner.parts.items():
            assert part.step_count == algo.learner.parts[name].step_count > 0
    finally:
        restored.stop()
