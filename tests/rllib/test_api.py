"""Ray RLlib's API reach: module paths, options refused by name, schedules, n-step returns,
dueling heads, and (on a mesh) get_module, restore_from_path, remote evaluation, the KL loss."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

from runtime.rllib import DQNConfig, PPOConfig
from runtime.rllib._config import scheduled
from tests.rllib.envs import GridWorld


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("runtime.rllib.algorithms", ["PPO", "PPOConfig", "DQN", "DQNConfig", "Algorithm"]),
        ("runtime.rllib.algorithms.ppo", ["PPO", "PPOConfig"]),
        ("runtime.rllib.algorithms.ppo.ppo", ["PPO", "PPOConfig"]),
        ("runtime.rllib.algorithms.dqn", ["DQN", "DQNConfig"]),
        ("runtime.rllib.algorithms.dqn.dqn", ["DQN", "DQNConfig"]),
        ("runtime.rllib.algorithms.sac", ["SAC", "SACConfig"]),
        ("runtime.rllib.algorithms.sac.sac", ["SAC", "SACConfig"]),
        ("runtime.rllib.algorithms.appo", ["APPO", "APPOConfig"]),
        ("runtime.rllib.algorithms.appo.appo", ["APPO", "APPOConfig"]),
        ("runtime.rllib.algorithms.impala", ["IMPALA", "IMPALAConfig"]),
        ("runtime.rllib.algorithms.impala.impala", ["IMPALA", "IMPALAConfig"]),
        ("runtime.rllib.algorithms.bc", ["BC", "BCConfig"]),
        ("runtime.rllib.algorithms.marwil.marwil", ["MARWIL", "MARWILConfig"]),
        ("runtime.rllib.algorithms.cql", ["CQL", "CQLConfig"]),
        ("runtime.rllib.algorithms.cql.cql", ["CQL", "CQLConfig"]),
        ("runtime.rllib.algorithms.algorithm", ["Algorithm"]),
        ("runtime.rllib.algorithms.algorithm_config", ["AlgorithmConfig"]),
    ],
)
def test_rays_module_paths_re_export_the_same_classes(module: str, names: list[str]) -> None:
    import runtime.rllib

    mod = importlib.import_module(module)
    for name in names:
        assert getattr(mod, name) is getattr(runtime.rllib, name), name


def test_result_keys_and_columns_have_rays_names() -> None:
    from runtime.rllib.core import DEFAULT_MODULE_ID
    from runtime.rllib.core.columns import Columns
    from runtime.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    assert (ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN) == ("env_runners", "episode_return_mean")
    assert (DEFAULT_MODULE_ID, Columns.ACTION_DIST_INPUTS) == (
        "default_policy",
        "action_dist_inputs",
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda c: c.debugging(log_sys_usage=True), "log_sys_usage"),
        (lambda c: c.debugging(fake_sampler=True), "fake_sampler"),
        (
            lambda c: c.env_runners(exploration_config={"type": "StochasticSampling"}),
            "exploration_config",
        ),
        (lambda c: c.env_runners(batch_mode="complete_episodes"), "batch_mode"),
        (
            lambda c: c.evaluation(evaluation_duration="auto"),
            "auto",
        ),
        (lambda c: c.evaluation(evaluation_config={"gamma": 0.5}), "gamma"),
        (  # Ray's GPU learner in the driver (a GPU learner is a learner actor here)
            lambda c: c.environment("CartPole-v1").learners(num_gpus_per_learner=1).validate(),
            "num_gpus_per_learner",
        ),
        (lambda c: c.learners(learner_class=object), "learner_class"),
        (lambda c: c.resources(num_gpus=1), "num_gpus"),
        (lambda c: c.environment(clip_rewards=True), "clip_rewards"),
        (lambda c: c.framework("torch", torch_compile_learner=True), "torch_compile_learner"),
        (lambda c: c.reporting(min_time_s_per_iteration=1), "min_time_s_per_iteration"),
        (
            lambda c: c.fault_tolerance(ignore_env_runner_failures=True),
            "ignore_env_runner_failures",
        ),
        (lambda c: c.training(lr_schedule=[[0, 1e-3]]), "lr_schedule"),
        (lambda c: c.training(vf_share_layers=True), "vf_share_layers"),
        (lambda c: c.training(use_critic=False), "use_critic"),
        (lambda c: c.training(optimizer={"foo": 1}), "optimizer"),
        (lambda c: c.multi_agent(policy_map_capacity=10), "policy_map_capacity"),
        (lambda c: c.offline_data(input_read_schema={}), "input_read_schema"),
        (lambda c: c.checkpointing(export_native_model_files=True), "export_native_model_files"),
        (lambda c: c.api_stack(enable_rl_module_and_learner=False), "old API stack"),
    ],
)
def test_rays_options_we_do_not_implement_are_refused_by_name(call: object, name: str) -> None:
    with pytest.raises(NotImplementedError, match=name):
        call(PPOConfig())  # type: ignore[operator]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ({"use_lstm": True, "lstm_use_prev_action": True}, "lstm_use_prev_action"),
        ({"post_fcnet_hiddens": [8]}, "post_fcnet_hiddens"),
        ({"vf_share_layers": True, "use_lstm": True}, "vf_share_layers"),
    ],
)
def test_model_options_we_do_not_implement_fail_the_build_by_name(
    model: dict[str, object], name: str
) -> None:
    config = PPOConfig().environment("CartPole-v1").rl_module(model_config=model)
    with pytest.raises(NotImplementedError, match=name):
        config.build()


def test_dqn_refuses_its_own_unimplemented_options_by_name() -> None:
    for name in ("num_atoms", "noisy", "hiddens", "adam_epsilon"):
        with pytest.raises(NotImplementedError, match=name):
            DQNConfig().training(**{name: 1})
    shared = DQNConfig().environment("CartPole-v1").rl_module(model_config={"vf_share_layers": 1})
    with pytest.raises(NotImplementedError, match="vf_share_layers"):
        shared.build()


def test_names_that_are_not_rays_either_are_type_errors() -> None:
    with pytest.raises(TypeError, match="nope"):
        PPOConfig().debugging(nope=1)
    with pytest.raises(TypeError, match="num_env_runnerz"):
        PPOConfig().env_runners(num_env_runnerz=1)
    with pytest.raises(TypeError, match="learning_rate"):
        PPOConfig().training(learning_rate=0.1)


def test_accepted_options_set_what_they_say() -> None:
    config = (
        PPOConfig()
        .learners(num_learners=0, num_gpus_per_learner=0, num_cpus_per_learner=1)
        .training(train_batch_size_per_learner=512, grad_clip_by="global_norm")
        .rl_module(model_config={"fcnet_hiddens": [16], "vf_share_layers": False})
        .evaluation(
            evaluation_num_env_runners=2, evaluation_config=PPOConfig.overrides(explore=True)
        )
        .debugging(seed=3, log_level="WARN")
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment("CartPole-v1", disable_env_checking=True)
    )
    assert config.train_batch_size == 512
    assert config.model_config["fcnet_hiddens"] == [16]
    assert config.evaluation_num_env_runners == 2 and config.evaluation_config == {"explore": True}
    assert (config.seed, config.log_level) == (3, "WARNING")
    config.validate()


def test_schedules_interpolate_linearly_and_hold_their_last_value() -> None:
    schedule = [[0, 1.0], [100, 0.5], [300, 0.1]]
    assert scheduled(schedule, 0) == 1.0
    assert scheduled(schedule, 50) == pytest.approx(0.75)
    assert scheduled(schedule, 200) == pytest.approx(0.3)
    assert scheduled(schedule, 10_000) == pytest.approx(0.1)
    assert scheduled(3e-4, 10_000) == 3e-4
    with pytest.raises(ValueError, match="schedule"):
        PPOConfig().environment("CartPole-v1").training(lr=[[5, 1e-3]]).validate()
    with pytest.raises(ValueError, match="schedule"):
        PPOConfig().environment("CartPole-v1").training(lr=[[0, 1e-3], [0, 1e-4]]).validate()


def test_n_step_transitions_sum_rewards_up_to_an_episode_end() -> None:
    from runtime.rllib.dqn import n_step_transitions

    # One env, four steps; the episode terminates at step 2.
    batch = {
        "obs": np.arange(4, dtype=np.float32).reshape(4, 1, 1),
        "actions": np.zeros((4, 1), np.int64),
        "rewards": np.array([[1.0], [2.0], [4.0], [8.0]], np.float32),
        "next_obs": np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1),
        "terminateds": np.array([[False], [False], [True], [False]]),
        "truncateds": np.zeros((4, 1), bool),
    }
    out = n_step_transitions(batch, 2, 0.5)
    np.testing.assert_allclose(out["rewards"][:, 0], [1 + 0.5 * 2, 2 + 0.5 * 4, 4, 8])
    np.testing.assert_allclose(out["discounts"][:, 0], [0.25, 0.25, 0.5, 0.5])
    assert out["terminateds"][:, 0].tolist() == [False, True, True, False]
    assert out["next_obs"][:, 0, 0].tolist() == [2.0, 3.0, 3.0, 4.0]
    # n=1 is the plain transition.
    one = n_step_transitions(batch, 1, 0.5)
    np.testing.assert_allclose(one["rewards"], batch["rewards"])
    assert one["next_obs"].tolist() == batch["next_obs"].tolist()


def test_dueling_q_values_and_the_runners_greedy_actions_agree() -> None:
    import gymnasium as gym
    import torch

    from runtime.rllib._learner import get_module_weights
    from runtime.rllib.dqn import QNetwork

    space, actions = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4)
    net = QNetwork(space, actions, {"fcnet_hiddens": [8], "fcnet_activation": "relu"}, dueling=True)
    obs = np.random.default_rng(0).uniform(-1, 1, (20, 3)).astype(np.float32)
    with torch.no_grad():
        q = net(torch.from_numpy(obs))
        out = net.q(torch.from_numpy(obs))
    assert q.shape == (20, 4)
    torch.testing.assert_close(q.mean(-1), out[:, 0])  # mean(Q) = V with mean-centred A
    net.actor.set_weights(get_module_weights(net))
    greedy, _ = net.actor.act(obs, False, np.random.default_rng(0))
    assert greedy.tolist() == q.argmax(-1).tolist()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(200)
def test_get_module_restore_from_path_and_evaluation_on_runner_actors(tmp_path: Path) -> None:
    import torch

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        .training(train_batch_size=400, num_epochs=2, lr=[[0, 1e-3], [800, 1e-4]])
        .evaluation(evaluation_interval=1, evaluation_duration=3, evaluation_num_env_runners=2)
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        results = [algo.train() for _ in range(2)]
        # The lr schedule: 1e-3 at step 0, halfway to 1e-4 at step 400.
        lrs = [r["learners"]["default_policy"]["curr_lr"] for r in results]
        assert lrs == pytest.approx([1e-3, 1e-3 - 0.5 * (1e-3 - 1e-4)])
        evaluation = results[-1]["evaluation"]["env_runners"]
        assert evaluation["num_episodes"] == 3  # split 2 + 1 over the two evaluation actors
        assert evaluation["episode_return_mean"] > 0
        assert len(algo._eval_actors) == 2

        module = algo.get_module()
        obs = np.array([[0.01, 0.0, -0.02, 0.0]], np.float32)
        logits = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"]
        assert int(logits.argmax()) == algo.compute_single_action(obs[0], explore=False)
        with pytest.raises(KeyError):
            algo.get_module("other")
        path = algo.save(tmp_path / "ckpt").checkpoint.path
        expected = algo.get_weights()
        algo.train()
        algo.restore_from_path(path)
        for key, value in algo.get_weights().items():
            np.testing.assert_array_equal(value, expected[key])
        assert algo.iteration == 2
    finally:
        algo.stop()
    assert algo._eval_actors == []


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(200)
def test_ppo_kl_loss_adapts_its_coefficient_and_still_learns() -> None:
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
        .training(use_kl_loss=True, kl_coeff=0.2, kl_target=1e-4, train_batch_size=1000)
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        means, coeffs = [], []
        for _ in range(30):
            result = algo.train()
            means.append(result["env_runners"]["episode_return_mean"])
            coeffs.append(result["learners"]["default_policy"]["curr_kl_coeff"])
            if means[-1] >= 80:
                break
        # A target this small is exceeded by every update: the coefficient only grows.
        assert coeffs[0] == pytest.approx(0.3) and coeffs == sorted(coeffs)
        assert means[-1] >= 80, means
        assert algo.get_extra_state()["curr_kl_coeffs"]["default_policy"] == coeffs[-1]
    finally:
        algo.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_dqn_with_dueling_n_step_and_soft_target_updates_solves_the_grid() -> None:
    config = DQNConfig().environment(GridWorld, env_config={"size": 4, "max_steps": 20})
    config.env_runners(num_env_runners=1, num_envs_per_env_runner=2, rollout_fragment_length=16)
    config.training(
        lr=1e-3,
        dueling=True,
        n_step=3,
        tau=0.5,
        epsilon=[[0, 1.0], [1500, 0.05]],
        num_steps_sampled_before_learning_starts=200,
        target_network_update_freq=50,
        training_intensity=8,
        model={"fcnet_hiddens": [32]},
    )
    config.reporting(min_sample_timesteps_per_iteration=0).evaluation(evaluation_duration=1)
    algo = config.debugging(seed=0).build()
    try:
        evaluation: dict[str, float] = {}
        for i in range(1, 151):
            result = algo.train()
            if i % 10 == 0:
                evaluation = algo.evaluate()["env_runners"]
                if evaluation["episode_len_mean"] == 6:
                    break
        assert evaluation["episode_len_mean"] == 6, (i, evaluation)
        stats = result["learners"]["default_policy"]
        assert math.isfinite(stats["qf_loss"]) and stats["epsilon"] < 1.0
        assert algo.buffer.columns["discounts"].max() <= 1.0
    finally:
        algo.stop()


def test_every_algorithm_name_is_a_tune_trainable() -> None:
    from runtime.libs.trainable import registered_trainables, resolve_trainable
    from runtime.rllib import ALGORITHMS, SAC

    assert set(ALGORITHMS) <= set(registered_trainables())
    assert resolve_trainable("SAC") is SAC


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(200)
def test_evaluation_parallel_to_training_runs_on_the_evaluation_actors() -> None:
    with pytest.raises(ValueError, match="evaluation_num_env_runners"):
        PPOConfig().environment("CartPole-v1").evaluation(
            evaluation_parallel_to_training=True
        ).validate()
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        .training(train_batch_size=400, num_epochs=1)
        .evaluation(
            evaluation_interval=2,
            evaluation_duration=4,
            evaluation_num_env_runners=2,
            evaluation_parallel_to_training=True,
        )
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        first, second = algo.train(), algo.train()
        assert "evaluation" not in first
        evaluation = second["evaluation"]["env_runners"]
        assert evaluation["num_episodes"] == 4 and evaluation["episode_return_mean"] > 0
        assert second["evaluation/env_runners/num_episodes"] == 4
    finally:
        algo.stop()
