"""Data-parallel learners (``.learners(num_learners=2)``): two learner actors that split the
batch and average gradients over gloo take exactly the step one learner takes on the whole
batch, stay in sync, and train PPO as one learner does (up to the order of rows)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import gymnasium as gym
import numpy as np
import pytest
import torch

import runtime
from runtime.exceptions import InfeasibleError
from runtime.rllib import Algorithm, DQNConfig, PPOConfig
from runtime.rllib._learner import TorchLearner, seeded_init
from runtime.rllib._learner_group import LearnerGroup
from runtime.rllib.ppo import ActorCritic, run_epochs
from tests.rllib.envs import RepeatAfterMe

pytestmark = pytest.mark.usefixtures("cluster")
T = TypeVar("T")


def batch(size: int, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        "obs": torch.as_tensor(rng.standard_normal((size, 4)), dtype=torch.float32),
        "actions": torch.as_tensor(rng.integers(0, 2, size)),
        "action_logp": torch.full((size,), float(np.log(0.5))),
        "advantages": torch.as_tensor(rng.standard_normal(size), dtype=torch.float32),
        "value_targets": torch.as_tensor(rng.standard_normal(size), dtype=torch.float32),
    }


def against_one_learner(
    check: Callable[[LearnerGroup, torch.Tensor], T],
    *,
    num_gpus: float = 0,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> T:
    """Two learners (``num_gpus`` each) take 3 epochs on a 256-row batch, and one CPU learner
    the same epochs on the whole batch (whole-batch minibatches: the order of rows then does
    not matter); their weights must agree. ``check(group, totals)`` runs before the group
    stops; its value is returned."""
    env = gym.make("CartPole-v1")
    config = (
        PPOConfig().training(num_epochs=3).learners(num_learners=2, num_gpus_per_learner=num_gpus)
    )
    model = {"fcnet_hiddens": [16, 16], "fcnet_activation": "tanh"}
    build = functools.partial(
        seeded_init,
        0,
        functools.partial(ActorCritic, env.observation_space, env.action_space, model),
    )
    data = batch(256, seed=1)
    kwargs = {"config": config, "entropy_coeff": 0.01, "kl_coeff": 0.0}
    single = TorchLearner(build(), lr=1e-2, grad_clip=0.5)
    single.run(run_epochs, data, rng=np.random.default_rng(0), minibatch_size=256, **kwargs)

    group = LearnerGroup(TorchLearner(build(), lr=1e-2, grad_clip=0.5), build, config)
    try:
        totals, num_updates = group.run(
            run_epochs, data, rng=np.random.default_rng(0), minibatch_size=256, **kwargs
        )
        assert num_updates == 3  # each learner: 3 epochs of one 128-row minibatch
        ours, theirs = group.get_weights(), single.get_weights()
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=atol)
        return check(group, totals)
    finally:
        group.stop()


@pytest.mark.timeout(120)
def test_two_learners_take_the_step_one_learner_takes_on_the_whole_batch() -> None:
    def in_sync(group: LearnerGroup, totals: torch.Tensor) -> None:
        # Rank 1 holds the same weights as rank 0 (whose weights the driver took).
        ours = group.get_weights()
        rank1 = runtime.get(group.actors[1].get_state.remote())["weights"]
        for key in ours:
            np.testing.assert_array_equal(rank1[key], ours[key])
        assert torch.isfinite(totals).all()

    against_one_learner(in_sync)


@pytest.mark.timeout(300)
def test_ppo_with_two_learners_reaches_150_on_cartpole_and_restores(tmp_path: Path) -> None:
    algo = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=8)
        .learners(num_learners=2)
        .evaluation(evaluation_duration=3)
        .debugging(seed=0)
        .build()
    )
    try:
        returns = []
        for _ in range(25):
            returns.append(algo.train()["env_runners"]["episode_return_mean"])
            if returns[-1] >= 150:
                break
        assert returns[-1] >= 150, returns
        path = algo.save(tmp_path / "ckpt").checkpoint.path
        greedy = algo.evaluate()["env_runners"]["episode_return_mean"]
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        assert isinstance(restored.learner, LearnerGroup)
        assert restored.evaluate()["env_runners"]["episode_return_mean"] == greedy
        restored.train()  # the restored learners train on
    finally:
        restored.stop()


@pytest.mark.timeout(200)
def test_two_learners_train_an_lstm_on_sequences_split_between_them() -> None:
    algo = (
        PPOConfig()
        .environment(RepeatAfterMe, env_config={"delay": 1})
        .env_runners(num_env_runners=1, num_envs_per_env_runner=8)
        .training(train_batch_size=1024, minibatch_size=256, num_epochs=8, lr=3e-3)
        .rl_module(
            model_config={
                "use_lstm": True,
                "lstm_cell_size": 32,
                "max_seq_len": 16,
                "fcnet_hiddens": [32],
            }
        )
        .learners(num_learners=2)
        .debugging(seed=0)
        .build()
    )
    try:
        returns = []
        for _ in range(30):
            returns.append(algo.train()["env_runners"]["episode_return_mean"])
            if returns[-1] >= 12:
                break
        assert returns[-1] >= 12, returns  # of 15; a feed-forward policy stays near 0
    finally:
        algo.stop()


@pytest.mark.timeout(60)
def test_learner_gpus_on_a_cluster_without_any_raise_infeasible_at_once() -> None:
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1)
        .learners(num_learners=2, num_gpus_per_learner=1)
    )
    start = time.monotonic()
    with pytest.raises(InfeasibleError, match=r"num_gpus_per_learner=1\).*cluster has 0"):
        config.build()
    assert time.monotonic() - start < 10  # no learner waits for a GPU that no node has


def test_learner_actors_are_refused_where_they_are_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="num_learners"):
        DQNConfig().learners(num_learners=2)
    with pytest.raises(TypeError, match="num_learners"):
        PPOConfig().learners(num_learners=1.5)  # type: ignore[arg-type]
