"""MARWIL and BC (Wang et al. 2018; behaviour cloning) from recorded episodes, top to bottom.

1. ``MARWILConfig`` / ``BCConfig``: the hyperparameters; ``.offline_data(input_=path)``
   names the Parquet episodes to learn from (recorded by any algorithm with
   ``.offline_data(output=path)``, through ``runtime.data``).
2. The model is PPO's ``ActorCritic``.
3. ``load_episodes``: the recorded transitions, with discounted returns-to-go per episode.
4. ``marwil_loss``: ``-exp(beta * A / c) * log pi(a|s)`` with A = return - V(s) and c the
   running root-mean-square of A, plus the value loss; ``beta=0`` is behaviour cloning
   (BC: only ``-log pi(a|s)``).
5. ``MARWIL.training_step``: ``train_batch_size`` transitions drawn from the data, in
   minibatches. Evaluate online with ``evaluate()`` (the env is still needed for that).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from runtime.rllib._algorithm import Algorithm
from runtime.rllib._config import AlgorithmConfig
from runtime.rllib._learner import TorchLearner, obs_to_tensor, seeded_init
from runtime.rllib._numpy_policy import PPOActor
from runtime.rllib.ppo import ActorCritic

__all__ = ["BC", "MARWIL", "BCConfig", "MARWILConfig", "load_episodes"]


# --- 1. config ----------------------------------------------------------------------------


class MARWILConfig(AlgorithmConfig):
    """MARWIL's settings. Defaults: ``beta=1.0``, ``vf_coeff=1.0``, ``lr=1e-3`` (Ray: 1e-4),
    ``train_batch_size=2000`` transitions per training step, ``minibatch_size=256``,
    ``moving_average_sqd_adv_norm_update_rate=1e-2`` (Ray: 1e-8),
    ``moving_average_sqd_adv_norm_start=100``, ``num_env_runners=0`` (no sampling; the
    env is made for its spaces and for evaluation)."""

    supports_vf_share_layers = True

    ray_training_options = frozenset({"bc_logstd_coeff", "vf_clip_param"})

    def __init__(self) -> None:
        super().__init__()
        self.beta = 1.0
        self.vf_coeff = 1.0
        self.lr = 1e-3
        self.train_batch_size = 2000
        self.minibatch_size = 256
        self.moving_average_sqd_adv_norm_update_rate = 1e-2
        self.moving_average_sqd_adv_norm_start = 100.0
        self.num_env_runners = 0
        self.grad_clip = None

    def validate(self) -> None:
        super().validate()
        if self.input_ is None:
            raise ValueError(
                f"{type(self).__name__} learns from data: set .offline_data(input_=path)"
            )
        if float(self.beta) < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}")
        if not isinstance(self.minibatch_size, int) or self.minibatch_size < 1:
            raise ValueError(f"minibatch_size must be an int >= 1, got {self.minibatch_size!r}")


class BCConfig(MARWILConfig):
    """Behaviour cloning: MARWIL with ``beta=0`` (no value function, no weighting)."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = 0.0


# --- 3. data ------------------------------------------------------------------------------


def load_episodes(path: str, gamma: float) -> dict[str, np.ndarray]:
    """The transitions recorded under ``path`` (Parquet), with ``returns`` per episode.

    A return is the discounted sum of the rewards from that step to the end of its recorded
    episode piece (an episode cut by the end of a sampling round ends there, unbootstrapped).
    """
    from runtime import data

    rows = data.read_parquet(path).take_all()
    if not rows:
        raise ValueError(f"no recorded transitions under {path!r}")
    rows.sort(key=lambda r: (str(r["eps_id"]), int(r["t"])))
    out = {
        "obs": np.stack([np.asarray(r["obs"], np.float32) for r in rows]),
        "actions": np.stack([np.asarray(r["actions"]) for r in rows]),
        "rewards": np.array([r["rewards"] for r in rows], np.float32),
    }
    returns = np.zeros(len(rows), np.float32)
    acc, last = 0.0, None
    for i in range(len(rows) - 1, -1, -1):
        if rows[i]["eps_id"] != last:
            acc, last = 0.0, rows[i]["eps_id"]
        acc = float(out["rewards"][i]) + gamma * acc
        returns[i] = acc
    out["returns"] = returns
    return out


# --- 4. loss ------------------------------------------------------------------------------


def marwil_loss(
    module: ActorCritic, mb: dict[str, torch.Tensor], beta: float, vf_coeff: float, c2: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Advantage-weighted log-likelihood (+ value loss when ``beta > 0``); BC when 0."""
    logp, _ = module.logp_entropy(mb["obs"], mb["actions"])
    if beta == 0.0:
        policy_loss = -logp.mean()
        return policy_loss, {"policy_loss": policy_loss.detach()}
    values = module.value(mb["obs"])
    adv = (mb["returns"] - values).detach()
    weights = torch.exp((beta * adv / math.sqrt(c2 + 1e-8)).clamp(max=20.0))
    policy_loss = -(weights * logp).mean()
    vf_loss = 0.5 * ((values - mb["returns"]) ** 2).mean()
    stats = {
        "policy_loss": policy_loss.detach(),
        "vf_loss": vf_loss.detach(),
        "mean_sqd_advantage": (adv**2).mean(),
    }
    return policy_loss + vf_coeff * vf_loss, stats


# --- 5. the algorithm ---------------------------------------------------------------------


class MARWIL(Algorithm):
    """Learns a policy from recorded episodes (no env sampling); evaluates online."""

    config_class = MARWILConfig
    supports_box_actions = True
    config: MARWILConfig

    def build_module(self, observation_space: Any, action_space: Any) -> tuple[Any, Any, Any]:
        c = self.config
        spec = (observation_space, action_space, dict(c.model))
        module = seeded_init(c.seed, functools.partial(ActorCritic, *spec))
        actor_ctor = functools.partial(PPOActor, *spec)
        return module, actor_ctor, TorchLearner(module, self.current_lr(), c.grad_clip)

    def setup(self) -> None:
        if self.module_specs is not None:
            raise NotImplementedError(f"{type(self).__name__}: multi-agent is PPO-only here")
        super().setup()
        c = self.config
        self.dataset = load_episodes(str(c.input_), c.gamma)
        self.c2 = float(c.moving_average_sqd_adv_norm_start)

    def training_step(self) -> dict[str, Any]:
        c = self.config
        lr = self.current_lr()
        self.learner.set_lr(lr)
        size = len(self.dataset["rewards"])
        idx = self._rng.integers(0, size, c.train_batch_size)
        obs = obs_to_tensor(self.dataset["obs"][idx], self.observation_space)
        actions = torch.as_tensor(self.dataset["actions"][idx])
        batch = {
            "obs": obs,
            "actions": actions.long() if self.module.discrete else actions.float(),
            "returns": torch.as_tensor(self.dataset["returns"][idx]),
        }
        totals: dict[str, float] = {}
        num_updates = 0
        mb_size = min(c.minibatch_size, c.train_batch_size)
        for start in range(0, c.train_batch_size - mb_size + 1, mb_size):
            mb = {k: v[start : start + mb_size] for k, v in batch.items()}
            loss, stats = marwil_loss(self.module, mb, float(c.beta), float(c.vf_coeff), self.c2)
            stats["grad_norm"] = self.learner.update(loss)
            if "mean_sqd_advantage" in stats:  # the running normalizer of the advantages
                rate = float(c.moving_average_sqd_adv_norm_update_rate)
                self.c2 += rate * (float(stats["mean_sqd_advantage"]) - self.c2)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            num_updates += 1
        self.num_env_steps_trained_lifetime += num_updates * mb_size
        out = {k: v / max(1, num_updates) for k, v in totals.items()}
        out["curr_lr"] = lr
        out["num_env_steps_trained"] = num_updates * mb_size
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"c2": self.c2}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.c2 = float(state.get("c2", self.c2))


class BC(MARWIL):
    """Behaviour cloning from recorded episodes (MARWIL with ``beta=0``)."""

    config_class = BCConfig
    config: BCConfig


MARWILConfig.algo_class = MARWIL
BCConfig.algo_class = BC
