"""AlgorithmConfig builders, dict round trips, early errors and the pure pieces (no mesh)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from runtime.rllib import (
    DQN,
    PPO,
    AlgorithmConfig,
    DQNConfig,
    PPOConfig,
    UnsupportedSpaceError,
    get_algorithm_class,
)
from runtime.rllib._algorithm import merge_runner_episode_stats, runner_episode_stats
from runtime.rllib._replay_buffer import ReplayBuffer
from runtime.rllib.ppo import compute_gae
from tests.rllib.envs import DictObsEnv, GridWorld


def test_builders_set_settings_and_return_the_config() -> None:
    config = (
        PPOConfig()
        .environment("CartPole-v1", env_config={"render_mode": None})
        .env_runners(num_env_runners=3, num_envs_per_env_runner=2, rollout_fragment_length=50)
        .training(lr=1e-3, gamma=0.9, num_epochs=3, model={"fcnet_hiddens": [32]})
        .evaluation(evaluation_interval=2, evaluation_duration=5)
        .debugging(seed=7)
        .resources(num_gpus=0)
    )
    assert isinstance(config, PPOConfig)
    assert (config.env, config.num_env_runners, config.num_envs_per_env_runner) == (
        "CartPole-v1",
        3,
        2,
    )
    assert (config.lr, config.gamma, config.num_epochs, config.seed) == (1e-3, 0.9, 3, 7)
    assert config.model["fcnet_hiddens"] == [32]
    assert config.model["fcnet_activation"] == "tanh"  # merged, not replaced
    assert config.get_rollout_fragment_length() == 50
    assert config.evaluation_interval == 2


def test_to_dict_from_dict_round_trip() -> None:
    config = DQNConfig().environment(GridWorld, env_config={"size": 3}).training(lr=0.01)
    data = config.to_dict()
    again = DQNConfig.from_dict(data)
    assert again.to_dict() == data
    assert again.env is GridWorld and again.env_config == {"size": 3}


def test_auto_fragment_length_splits_the_batch_over_all_envs() -> None:
    config = PPOConfig().env_runners(num_env_runners=2, num_envs_per_env_runner=4)
    config.training(train_batch_size=2000)
    assert config.get_rollout_fragment_length() == 250


def test_unknown_hyperparameter_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="learning_rate"):
        PPOConfig().training(learning_rate=0.1)
    with pytest.raises(TypeError, match="nope"):
        PPOConfig.from_dict({"nope": 1})


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (PPOConfig(), "no environment"),
        (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=-1), "num_env_runners"),
        (PPOConfig().environment("CartPole-v1").training(lr=0), "lr"),
        (PPOConfig().environment("CartPole-v1").training(gamma=2.0), "gamma"),
        (PPOConfig().environment("CartPole-v1").training(minibatch_size=0), "minibatch_size"),
        (DQNConfig().environment("CartPole-v1").training(td_error_loss_fn="l1"), "td_error"),
        (
            PPOConfig().environment("CartPole-v1").reporting(metrics_num_episodes_for_smoothing=0),
            "metrics_num_episodes_for_smoothing",
        ),
        (
            PPOConfig().environment("CartPole-v1").reporting(min_sample_timesteps_per_iteration=-1),
            "min_sample_timesteps_per_iteration",
        ),
    ],
)
def test_bad_settings_fail_before_any_work(config: AlgorithmConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config.build()


def test_dqn_on_box_actions_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedSpaceError, match="Discrete action"):
        DQNConfig().environment("Pendulum-v1").build()


def test_unsupported_observation_space_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedSpaceError, match="observation space"):
        PPOConfig().environment(DictObsEnv).build()


def test_unknown_env_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot make environment"):
        PPOConfig().environment("NoSuchEnv-v9").build()


def test_algorithm_names_resolve() -> None:
    assert get_algorithm_class("PPO") is PPO
    assert get_algorithm_class("dqn") is DQN
    with pytest.raises(ValueError, match="unknown algorithm"):
        get_algorithm_class("A3C")


def test_gae_matches_a_hand_computation() -> None:
    # One env, three steps; the episode terminates at step 1, step 2 is truncated.
    rewards = np.array([[1.0], [1.0], [1.0]], dtype=np.float32)
    values = np.array([[0.5], [0.4], [0.3]], dtype=np.float32)
    next_values = np.array([[0.4], [9.0], [0.2]], dtype=np.float32)
    term = np.array([[0.0], [1.0], [0.0]], dtype=np.float32)
    trunc = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)
    adv, targets = compute_gae(rewards, values, next_values, term, trunc, gamma=0.9, lambda_=0.5)
    d2 = 1.0 + 0.9 * 0.2 - 0.3  # truncated: bootstraps from V(final obs)
    d1 = 1.0 - 0.4  # terminated: no bootstrap
    d0 = 1.0 + 0.9 * 0.4 - 0.5
    np.testing.assert_allclose(adv[:, 0], [d0 + 0.45 * d1, d1, d2], rtol=1e-6)
    np.testing.assert_allclose(targets, adv + values, rtol=1e-6)


def test_episode_return_mean_is_computed_as_ray_rllib_does() -> None:
    # The figures Ray 2.60's MetricsLogger gives for the same episodes (checked against it:
    # runners log with window=ceil(smoothing / num_env_runners), reduce and clear each round,
    # and the Algorithm averages the runners' values with nanmean).
    window = 2  # metrics_num_episodes_for_smoothing=4 over 2 runners
    runner1 = runner_episode_stats([1.0, 2.0, 3.0], [10, 20, 30], window)
    runner2 = runner_episode_stats([10.0], [100], window)
    merged = merge_runner_episode_stats([s for s in (runner1, runner2) if s is not None])
    assert merged["episode_return_mean"] == pytest.approx((2.5 + 10.0) / 2)  # not 4.0
    assert (merged["episode_return_min"], merged["episode_return_max"]) == (2.0, 10.0)
    assert merged["episode_len_mean"] == pytest.approx((25 + 100) / 2)
    # A runner that finished no episode this round is left out, not counted as 0 ...
    assert runner_episode_stats([], [], window) is None
    only = merge_runner_episode_stats([runner_episode_stats([20.0], [5], window)])  # type: ignore[list-item]
    assert only["episode_return_mean"] == 20.0
    # ... and an iteration in which no runner finished one reports NaN.
    assert np.isnan(merge_runner_episode_stats([])["episode_return_mean"])


def test_the_learners_flat_adam_matches_torch_adam_with_clipping() -> None:
    import torch

    from runtime.rllib._learner import TorchLearner, mlp

    torch.manual_seed(0)
    ours, ref = mlp(4, [8, 8], 2), mlp(4, [8, 8], 2)
    ref.load_state_dict(ours.state_dict())
    learner = TorchLearner(ours, lr=1e-2, grad_clip=0.5)
    adam = torch.optim.Adam(ref.parameters(), lr=1e-2, eps=TorchLearner.eps)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    for _ in range(5):
        norm = learner.update(((ours(x) - y) ** 2).mean())
        adam.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        adam.step()
        assert float(norm) == pytest.approx(float(ref_norm), rel=1e-5)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The state round-trips, and a torch.optim.Adam state (older checkpoints) loads too.
    state = learner.get_state()
    other = TorchLearner(mlp(4, [8, 8], 2), lr=1e-2, grad_clip=0.5)
    other.set_state(state)
    assert other.step_count == 5 and torch.equal(other.exp_avg_sq, learner.exp_avg_sq)
    other.set_state({"weights": state["weights"], "optimizer": adam.state_dict()})
    torch.testing.assert_close(other.exp_avg, learner.exp_avg, rtol=1e-4, atol=1e-7)


def test_replay_buffer_is_a_ring() -> None:
    buf = ReplayBuffer(4)
    for start in (0, 3):
        n = 3
        buf.add(
            {
                "obs": np.arange(start, start + n, dtype=np.float32)[:, None],
                "actions": np.zeros(n, np.int64),
                "rewards": np.arange(start, start + n, dtype=np.float32),
                "next_obs": np.zeros((n, 1), np.float32),
                "terminateds": np.zeros(n, np.float32),
            }
        )
    assert len(buf) == 4
    assert sorted(buf.columns["rewards"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    sample = buf.sample(16, np.random.default_rng(0))
    assert set(sample["rewards"].tolist()) <= {2.0, 3.0, 4.0, 5.0}
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


def test_import_runtime_and_rllib_stay_light() -> None:
    code = (
        "import sys, runtime, runtime.rllib; "
        "from runtime.rllib import AlgorithmConfig; "
        "print('torch' in sys.modules, 'gymnasium' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"]


def test_every_public_name_is_importable_from_runtime_rllib() -> None:
    import runtime
    from runtime import rllib

    assert sorted(rllib.__all__) == sorted(
        [
            "ALGORITHMS",
            "APPO",
            "BC",
            "CQL",
            "DQN",
            "IMPALA",
            "MARWIL",
            "PPO",
            "SAC",
            "Algorithm",
            "APPOConfig",
            "AlgorithmConfig",
            "BCConfig",
            "CQLConfig",
            "CheckpointRef",
            "DQNConfig",
            "IMPALAConfig",
            "MARWILConfig",
            "PPOConfig",
            "SACConfig",
            "SaveResult",
            "UnsupportedSpaceError",
            "get_algorithm_class",
            "register_env",
        ]
    )
    for name in rllib.__all__:
        assert getattr(rllib, name) is not None
    assert runtime.rllib is rllib
    with pytest.raises(AttributeError):
        _ = rllib.NoSuchName
