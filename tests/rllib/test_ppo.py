"""PPO on a real local mesh: solving CartPole, checkpoints, actions, evaluation, weights,
seeded reproducibility and a killed env runner replaced mid-training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import runtime
from runtime.rllib import PPO, Algorithm, PPOConfig

pytestmark = pytest.mark.usefixtures("cluster")


def cartpole(**runners: Any) -> PPOConfig:
    config = (
        PPOConfig().environment("CartPole-v1").debugging(seed=0).evaluation(evaluation_duration=3)
    )
    config.env_runners(**{"num_env_runners": 2, "num_envs_per_env_runner": 4, **runners})
    return config


@pytest.mark.timeout(400)
def test_ppo_reaches_a_mean_return_of_150_on_cartpole() -> None:
    algo = cartpole().build()
    try:
        results = []
        for _ in range(30):
            results.append(algo.train())
            if results[-1]["env_runners"]["episode_return_mean"] >= 150:
                break
        last = results[-1]
        assert last["env_runners"]["episode_return_mean"] >= 150, [
            r["env_runners"]["episode_return_mean"] for r in results
        ]
        assert last["training_iteration"] == len(results)
        assert last["num_env_steps_sampled_lifetime"] == 2000 * len(results)
        assert last["env_runners/episode_return_mean"] == last["env_runners"]["episode_return_mean"]
        stats = last["learners"]["default_policy"]
        for key in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "curr_lr"):
            assert math.isfinite(stats[key]), key
        assert last["time_this_iter_s"] > 0
        assert last["num_healthy_workers"] == 2

        # Greedy evaluation (explore=False) is deterministic, and good.
        first = algo.evaluate()["env_runners"]
        assert first == algo.evaluate()["env_runners"]
        assert first["num_episodes"] == algo.config.evaluation_duration
        assert first["episode_return_mean"] >= 150
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_env_runners_act_in_numpy_without_importing_torch() -> None:
    # Importing torch is most of a runner's start-up; the runners' policy is numpy-only.
    algo = cartpole().training(train_batch_size=400, num_epochs=1).build()
    try:
        algo.train()
        assert algo.env_runner_group.foreach_runner("has_imported", "gymnasium") == [True, True]
        assert algo.env_runner_group.foreach_runner("has_imported", "torch") == [False, False]
        # The driver's torch module acts through the same numpy policy, with its weights.
        obs = np.array([[0.01, -0.02, 0.03, 0.04]], dtype=np.float32)
        rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
        actions, extra = algo.module.act(obs, True, rng1)
        with torch.no_grad():
            logp, _ = algo.module.logp_entropy(torch.from_numpy(obs), torch.from_numpy(actions))
        np.testing.assert_allclose(extra["action_logp"], logp.numpy(), rtol=1e-5)
        assert np.array_equal(algo.module.act(obs, True, rng2)[0], actions)
    finally:
        algo.stop()


@pytest.mark.timeout(200)
def test_sample_ahead_overlaps_sampling_and_still_learns() -> None:
    # Runners sample batch k+1 with the weights of before update k; PPO's ratio is taken
    # against the log-probs they recorded, so the stale batch trains correctly.
    algo = cartpole(sample_ahead=True).training(train_batch_size=1000).build()
    try:
        means = []
        for _ in range(40):
            result = algo.train()
            means.append(result["env_runners"]["episode_return_mean"])
            if means[-1] >= 100:
                break
        assert means[-1] >= 100, means
        assert result["num_env_steps_sampled_lifetime"] == 1000 * len(means)
        # The next round is already in flight when train() returns.
        assert algo._pending is not None
        stats = result["learners"]["default_policy"]
        assert 0.0 <= stats["clip_fraction"] < 0.5 and math.isfinite(stats["mean_kl_loss"])
    finally:
        algo.stop()


@pytest.mark.timeout(200)
def test_checkpoint_round_trip_gives_identical_greedy_actions(tmp_path: Path) -> None:
    algo = cartpole(num_env_runners=1).training(train_batch_size=400, num_epochs=2).build()
    try:
        for _ in range(2):
            algo.train()
        saved = algo.save(tmp_path / "ckpt")
        assert saved.checkpoint.path == str(tmp_path / "ckpt")
        rng = np.random.default_rng(1)
        observations = rng.uniform(-0.2, 0.2, size=(50, 4)).astype(np.float32)
        expected = [algo.compute_single_action(o, explore=False) for o in observations]
        assert all(isinstance(a, int) for a in expected)
        assert len(set(expected)) == 2  # a trained policy, not a constant one
        with pytest.raises(ValueError, match="observation space"):
            algo.compute_single_action(np.zeros(3))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(saved)
    try:
        assert isinstance(restored, PPO)
        assert restored.iteration == 2
        got = [restored.compute_single_action(o, explore=False) for o in observations]
        assert got == expected
        # restore() into an algorithm with other weights brings the saved ones back
        weights = restored.get_weights()
        assert all(isinstance(v, np.ndarray) for v in weights.values())
        restored.set_weights({k: np.zeros_like(v) for k, v in weights.items()})
        assert {restored.compute_single_action(o, explore=False) for o in observations} == {0}
        restored.restore(saved.checkpoint.path)
        assert [restored.compute_single_action(o, explore=False) for o in observations] == expected
        assert restored.train()["training_iteration"] == 3
    finally:
        restored.stop()


@pytest.mark.timeout(200)
def test_same_seed_on_one_runner_gives_the_same_results() -> None:
    def run() -> list[dict[str, Any]]:
        config = cartpole(num_env_runners=1, num_envs_per_env_runner=2).training(
            train_batch_size=400, num_epochs=2
        )
        algo = config.build()
        try:
            return [algo.train() for _ in range(3)]
        finally:
            algo.stop()

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        # The same episodes, step for step ...
        for key in ("episode_return_mean", "episode_return_min", "episode_len_mean"):
            assert a["env_runners"][key] == b["env_runners"][key], key
        assert a["num_episodes_lifetime"] == b["num_episodes_lifetime"]
        # ... and the same learning, up to float rounding (CPU BLAS kernels may round the
        # last bits differently with the buffers' memory alignment).
        la, lb = a["learners"]["default_policy"], b["learners"]["default_policy"]
        for key in ("policy_loss", "vf_loss", "entropy"):
            assert la[key] == pytest.approx(lb[key], rel=1e-4, abs=1e-7), key


@pytest.mark.timeout(200)
def test_a_killed_env_runner_is_replaced_and_training_goes_on() -> None:
    algo = cartpole().training(train_batch_size=400, num_epochs=1).build()
    try:
        algo.train()
        victim = algo.env_runner_group.runners[0]
        runtime.kill(victim, no_restart=True)
        result = algo.train()
        assert result["num_env_runner_restarts"] == 1
        assert algo.env_runner_group.runners[0] is not victim
        result = algo.train()  # the new runner samples with the broadcast weights
        assert result["num_env_steps_sampled_lifetime"] >= 400 * 2
        assert result["num_healthy_workers"] == 2
    finally:
        algo.stop()


@pytest.mark.timeout(200)
def test_without_restarts_a_dead_runner_fails_the_iteration() -> None:
    config = cartpole(num_env_runners=1, num_envs_per_env_runner=1).training(
        train_batch_size=100, num_epochs=1
    )
    config.fault_tolerance(restart_failed_env_runners=False)
    algo = config.build()
    try:
        runtime.kill(algo.env_runner_group.runners[0], no_restart=True)
        with pytest.raises(RuntimeError, match="restart_failed_env_runners"):
            algo.train()
    finally:
        algo.stop()


@pytest.mark.timeout(200)
def test_ppo_learns_a_gaussian_policy_on_pendulum_box_actions() -> None:
    config = PPOConfig().environment("Pendulum-v1").debugging(seed=0)
    config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
    config.training(train_batch_size=400, minibatch_size=100, num_epochs=2, lr=1e-3)
    algo = config.build()
    try:
        before = algo.get_weights()["log_std"].copy()
        for _ in range(2):
            result = algo.train()
        stats = result["learners"]["default_policy"]
        assert math.isfinite(stats["policy_loss"]) and math.isfinite(stats["entropy"])
        assert not np.array_equal(algo.get_weights()["log_std"], before)
        assert result["env_runners"]["episode_return_mean"] < 0  # Pendulum's returns
        obs = np.array([1.0, 0.0, 0.0], dtype=np.float32)
        greedy = algo.compute_single_action(obs, explore=False)
        assert greedy.shape == (1,) and -2.0 <= greedy[0] <= 2.0
        assert np.array_equal(greedy, algo.compute_single_action(obs, explore=False))
        sampled = {float(algo.compute_single_action(obs, explore=True)[0]) for _ in range(5)}
        assert len(sampled) > 1 and all(-2.0 <= a <= 2.0 for a in sampled)
    finally:
        algo.stop()


def test_shared_value_layers_are_one_head_on_the_policys_hidden_layers() -> None:
    import gymnasium as gym

    from runtime.rllib.ppo import ActorCritic

    model = {**PPOConfig().model, "fcnet_hiddens": [8, 8], "vf_share_layers": True}
    env = gym.make("CartPole-v1")
    module = ActorCritic(env.observation_space, env.action_space, model)
    assert [p.shape for p in module.vf.parameters()] == [(1, 8), (1,)]
    obs = torch.randn(5, 4)
    # The value reads the policy's last hidden layer: the value loss moves the shared layers.
    module.value(obs).pow(2).mean().backward()
    assert module.pi[0].weight.grad is not None and module.pi[0].weight.grad.abs().sum() > 0
    assert module.pi[-1].weight.grad is None  # not the policy's output layer
    logp, _entropy, values = module.forward_train({"obs": obs, "actions": torch.zeros(5)})
    torch.testing.assert_close(values, module.value(obs))
    torch.testing.assert_close(logp, module.logp_entropy(obs, torch.zeros(5))[0])


@pytest.mark.timeout(400)
def test_ppo_with_shared_value_layers_reaches_150_on_cartpole() -> None:
    config = cartpole(num_env_runners=1).rl_module(model_config={"vf_share_layers": True})
    algo = config.build()
    try:
        returns = []
        for _ in range(30):
            returns.append(algo.train()["env_runners"]["episode_return_mean"])
            if returns[-1] >= 150:
                break
        assert returns[-1] >= 150, returns
        assert algo.get_module().shared
    finally:
        algo.stop()
