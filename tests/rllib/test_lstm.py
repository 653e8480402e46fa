"""Recurrent modules (``model_config={"use_lstm": True}``): the runners' numpy LSTM computes
what torch's does, sequences are cut and put back in order, and PPO with an LSTM solves a
memory task that a feed-forward PPO cannot, with the state carried through remote runners,
evaluation, checkpoints and ``compute_single_action``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from runtime.rllib import Algorithm, DQNConfig, PPOConfig
from runtime.rllib._learner import get_module_weights
from runtime.rllib.env.multi_agent_env import make_multi_agent
from runtime.rllib.ppo import ActorCritic, from_sequences, to_sequences
from tests.rllib.envs import RepeatAfterMe

LSTM = {"use_lstm": True, "lstm_cell_size": 32, "max_seq_len": 16, "fcnet_hiddens": [32]}


def memory_task(**model: Any) -> PPOConfig:
    return (
        PPOConfig()
        .environment(RepeatAfterMe, env_config={"delay": 1, "length": 16})
        .env_runners(num_env_runners=1, num_envs_per_env_runner=8)
        .training(train_batch_size=1024, minibatch_size=256, num_epochs=8, lr=3e-3)
        .evaluation(evaluation_duration=8)
        .rl_module(model_config=model)
        .debugging(seed=0)
    )


def test_the_runners_numpy_lstm_computes_what_the_torch_module_does() -> None:
    env = RepeatAfterMe()
    torch.manual_seed(0)
    module = ActorCritic(
        env.observation_space, env.action_space, {**LSTM, "fcnet_activation": "tanh"}
    )
    module.actor.set_weights(get_module_weights(module))
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (3, 5, 2)).astype(np.float32)  # 3 sequences of 5 steps
    starts = np.zeros((3, 5), bool)
    starts[1, 2] = True  # an episode begins inside sequence 1: the state is zeroed there
    h0 = rng.standard_normal((3, 32)).astype(np.float32)
    c0 = rng.standard_normal((3, 32)).astype(np.float32)
    with torch.no_grad():
        feats, _, _ = module.unroll(
            torch.as_tensor(obs), torch.as_tensor(starts), torch.as_tensor(h0), torch.as_tensor(c0)
        )
        logits = module.pi(feats)
    state = {"h": h0, "c": c0}
    for t in range(5):
        keep = ~starts[:, t, None]
        state = {k: np.where(keep, v, 0.0).astype(np.float32) for k, v in state.items()}
        greedy, extra = module.actor.act(obs[:, t], False, rng, state=state)
        state = extra["state_out"]
        np.testing.assert_allclose(state["h"], feats[:, t].numpy(), rtol=1e-4, atol=1e-5)
        assert greedy.tolist() == logits[:, t].argmax(-1).tolist()


def test_forward_inference_of_a_recurrent_module_takes_and_returns_the_state() -> None:
    env = RepeatAfterMe()
    torch.manual_seed(0)
    model = {**LSTM, "fcnet_activation": "tanh"}
    module = ActorCritic(env.observation_space, env.action_space, model)
    obs = np.eye(2, dtype=np.float32)
    state = {k: np.stack([v, v]) for k, v in module.get_initial_state().items()}
    assert state["h"].shape == (2, 32)
    out = module.forward_inference({"obs": obs, "state_in": state})
    with torch.no_grad():
        feats, _, _ = module.unroll(
            torch.as_tensor(obs)[:, None],
            torch.zeros(2, 1, dtype=torch.bool),
            torch.as_tensor(state["h"]),
            torch.as_tensor(state["c"]),
        )
        logits = module.pi(feats[:, 0])
    np.testing.assert_allclose(out["state_out"]["h"], feats[:, 0], rtol=1e-5)
    np.testing.assert_allclose(out["action_dist_inputs"], logits, rtol=1e-5)
    with pytest.raises(ValueError, match="state_in"):
        module.forward_inference({"obs": obs})


def test_sequences_cut_each_env_column_in_order_and_come_back_unchanged() -> None:
    x = np.arange(7 * 3).reshape(7, 3)  # [T=7, N=3]
    seqs = to_sequences(x, 3)  # each column -> 3 sequences of 3 (the last padded)
    assert seqs.shape == (9, 3)
    assert seqs[0].tolist() == [0, 3, 6]  # env 0, t = 0, 1, 2
    assert seqs[2].tolist() == [18, 0, 0]  # env 0, t = 6, then padding
    assert seqs[3].tolist() == [1, 4, 7]  # env 1
    np.testing.assert_array_equal(from_sequences(seqs, 7, 3), x)


@pytest.mark.timeout(240)
def test_ppo_with_an_lstm_solves_a_memory_task_a_feed_forward_policy_cannot(
    cluster: object, tmp_path: Path
) -> None:
    del cluster
    # Feed-forward: the observation says nothing about the right answer now (expected 0).
    algo = memory_task().build()
    try:
        feed_forward = [algo.train()["env_runners"]["episode_return_mean"] for _ in range(12)]
    finally:
        algo.stop()
    assert max(feed_forward) < 4, feed_forward

    algo = memory_task(**LSTM).build()
    try:
        returns = []
        for _ in range(30):
            returns.append(algo.train()["env_runners"]["episode_return_mean"])
            if returns[-1] >= 12:
                break
        assert returns[-1] >= 12, returns  # of 15
        assert algo.evaluate()["env_runners"]["episode_return_mean"] >= 12

        # The driver acts with the state it is given, step by step.
        module = algo.get_module()
        env = RepeatAfterMe({"delay": 1, "length": 16})
        obs, _ = env.reset(seed=123)
        state, total, done = module.get_initial_state(), 0.0, False
        while not done:
            action, state, _ = algo.compute_single_action(obs, state, explore=False)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        assert total >= 12
        with pytest.raises(ValueError, match="state"):
            algo.compute_single_action(obs)

        path = algo.save(tmp_path / "ckpt").checkpoint.path
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        assert restored.evaluate()["env_runners"]["episode_return_mean"] >= 12
    finally:
        restored.stop()


def test_use_lstm_is_refused_where_there_is_no_recurrent_module() -> None:
    with pytest.raises(NotImplementedError, match="use_lstm"):
        DQNConfig().environment(RepeatAfterMe).rl_module(model_config={"use_lstm": True}).build()
    with pytest.raises(NotImplementedError, match="use_lstm"):
        PPOConfig().environment(make_multi_agent("CartPole-v1")).rl_module(
            model_config={"use_lstm": True}
        ).build()
    with pytest.raises(ValueError, match="max_seq_len"):
        PPOConfig().environment(RepeatAfterMe).rl_module(
            model_config={"use_lstm": True, "max_seq_len": 0}
        ).build()
