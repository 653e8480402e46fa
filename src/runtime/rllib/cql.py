"""CQL (Kumar et al. 2020) over SAC, offline, in one file you can read top to bottom.

1. ``CQLConfig``: SAC's settings plus CQL's (``min_q_weight``, ``temperature``,
   ``num_actions``, ``bc_iters``, ``deterministic_backup``); ``.offline_data(input_=path)``
   names the recorded transitions (written by any algorithm with ``.offline_data(output=)``).
2. The model is SAC's ``SACModule`` (tanh-squashed Gaussian policy, twin Q, target critics).
3. ``load_transitions``: the recorded transitions, into SAC's replay buffer once.
4. ``cql_penalty``: the conservative term, per critic ``min_q_weight * (temperature *
   logsumexp(Q(s, a_i) / temperature) - Q(s, a_data))`` over random, current-policy and
   next-state-policy actions a_i (importance-corrected by their log-densities), so the
   critics push down Q on actions the data does not back; ``bc_log_likelihood``: the
   policy's log-density of the data's actions (the actor's loss for the first ``bc_iters``
   updates is behaviour cloning).
5. ``CQL.training_step``: ``dataset_num_iters_per_learner`` updates on minibatches drawn
   from the data; no env sampling. Evaluate online with ``evaluate()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from runtime.rllib._replay_buffer import ReplayBuffer
from runtime.rllib.sac import SAC, SACConfig, SACModule, actor_loss, alpha_loss, critic_loss

__all__ = ["CQL", "CQLConfig", "cql_penalty", "load_transitions"]


# --- 1. config ----------------------------------------------------------------------------


class CQLConfig(SACConfig):
    """CQL's settings: SAC's (``.training()`` takes them all) plus, with Ray's names and
    defaults, ``min_q_weight=5.0``, ``temperature=1.0``, ``num_actions=10`` (sampled
    actions per state and kind), ``bc_iters=20000`` (updates whose actor loss is behaviour
    cloning), ``deterministic_backup=True`` (no entropy term in the critics' target).

    ``.offline_data(input_=dir, dataset_num_iters_per_learner=N)``: the data, and the
    updates per ``train()`` (None: 100 here). ``num_env_runners=0`` (nothing is sampled;
    the env gives the spaces and ``evaluate()``). Ray's ``lagrangian`` variant is refused.
    """

    ray_training_options = SACConfig.ray_training_options | {"lagrangian", "lagrangian_thresh"}
    uses_dataset_num_iters = True

    def __init__(self) -> None:
        super().__init__()
        self.min_q_weight = 5.0
        self.temperature = 1.0
        self.num_actions = 10
        self.bc_iters = 20_000
        self.deterministic_backup = True
        self.num_env_runners = 0
        self.num_steps_sampled_before_learning_starts = 0
        self.min_sample_timesteps_per_iteration = 0  # nothing is sampled: one step per train()

    def validate(self) -> None:
        super().validate()
        if self.input_ is None:
            raise ValueError("CQL learns from data: set .offline_data(input_=path)")
        if float(self.min_q_weight) < 0 or float(self.temperature) <= 0:
            raise ValueError("min_q_weight must be >= 0 and temperature > 0")
        for name in ("num_actions", "bc_iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.num_actions < 1:
            raise ValueError("num_actions must be >= 1")


# --- 3. data ------------------------------------------------------------------------------


def load_transitions(path: str, gamma: float) -> dict[str, np.ndarray]:
    """The transitions recorded under ``path`` (Parquet) as replay columns: ``obs``,
    ``next_obs``, ``actions`` (env scale), ``rewards``, ``terminateds``, ``discounts``."""
    from runtime import data

    rows = data.read_parquet(path).take_all()
    if not rows:
        raise ValueError(f"no recorded transitions under {path!r}")
    n = len(rows)
    return {
        "obs": np.stack([np.asarray(r["obs"], np.float32) for r in rows]),
        "next_obs": np.stack([np.asarray(r["next_obs"], np.float32) for r in rows]),
        "actions": np.stack([np.asarray(r["actions"], np.float32).reshape(-1) for r in rows]),
        "rewards": np.array([r["rewards"] for r in rows], np.float32),
        "terminateds": np.array([r["terminateds"] for r in rows], np.float32),
        "discounts": np.full(n, gamma, np.float32),
    }


# --- 4. losses ----------------------------------------------------------------------------


def cql_penalty(
    module: SACModule, mb: dict[str, torch.Tensor], config: CQLConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The conservative term of CQL(H), summed over the critics.

    For each state, ``num_actions`` actions of each kind: uniform in [-1, 1] (log-density
    ``dim * log 1/2``), drawn from the current policy at s, and at s'; their Q(s, .) minus
    their log-densities enter a soft maximum (``temperature * logsumexp(. / temperature)``)
    from which the Q of the data's action is subtracted.
    """
    obs, n = mb["obs"], int(config.num_actions)
    batch, dim = mb["actions"].shape
    obs_rep = obs.repeat_interleave(n, 0)
    with torch.no_grad():
        curr, curr_logp = module.sample(obs_rep)
        nxt, next_logp = module.sample(mb["next_obs"].repeat_interleave(n, 0))
    rand = torch.empty(batch * n, dim).uniform_(-1.0, 1.0)
    rand_logp = dim * math.log(0.5)
    temp = float(config.temperature)
    penalty = torch.zeros(())
    q_data_mean = torch.zeros(())
    for critic in module.critics():
        soft = torch.cat(
            [
                module.q(critic, obs_rep, rand).view(batch, n) - rand_logp,
                module.q(critic, obs_rep, curr).view(batch, n) - curr_logp.view(batch, n),
                module.q(critic, obs_rep, nxt).view(batch, n) - next_logp.view(batch, n),
            ],
            1,
        )
        q_data = module.q(critic, obs, mb["actions"]).mean()
        penalty = penalty + config.min_q_weight * (
            temp * torch.logsumexp(soft / temp, 1).mean() - q_data
        )
        q_data_mean = q_data.detach()
    return penalty, {"cql_loss": penalty.detach(), "q_data_mean": q_data_mean}


def bc_log_likelihood(module: SACModule, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of the data's actions (in [-1, 1]) under the squashed Gaussian."""
    mean, log_std = module.pi(obs).chunk(2, -1)
    log_std = log_std.clamp(-20.0, 2.0)
    a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
    u = torch.atanh(a)
    logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    return logp - torch.log1p(-(a**2)).sum(-1)


# --- 5. the algorithm ---------------------------------------------------------------------


class CQL(SAC):
    """Conservative Q-learning from recorded transitions (Box actions); evaluates online.

    Example::

        algo = (CQLConfig().environment("Pendulum-v1")
                .offline_data(input_="/data/pendulum").build())
        for _ in range(10):
            algo.train()
        print(algo.evaluate()["env_runners"]["episode_return_mean"])
    """

    config_class = CQLConfig
    config: CQLConfig

    def setup(self) -> None:
        if self.module_specs is not None:
            raise NotImplementedError("CQL: multi-agent is PPO-only here")
        super().setup()
        c = self.config
        self.data = load_transitions(str(c.input_), float(c.gamma))
        self.buffer = ReplayBuffer(len(self.data["rewards"]))
        self.buffer.add(self.data)
        self.num_updates = 0

    def training_step(self) -> dict[str, Any]:
        c = self.config
        for learner, lr in (
            (self.actor_learner, c.actor_lr),
            (self.critic_learner, c.critic_lr),
            (self.alpha_learner, c.alpha_lr),
        ):
            learner.set_lr(float(lr))
        iters = c.dataset_num_iters_per_learner or 100
        stats: dict[str, list[torch.Tensor]] = {}
        for _ in range(int(iters)):
            for k, v in self.update(self._minibatch()).items():
                stats.setdefault(k, []).append(v)
        self.num_env_steps_trained_lifetime += int(iters) * c.train_batch_size
        out = {k: float(torch.stack(v).mean()) for k, v in stats.items()}
        out["alpha_value"] = float(self.temperature.log_alpha.detach().exp())
        out["num_updates"] = self.num_updates
        out["curr_lr"] = float(c.actor_lr)
        return out

    def update(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Critics (Bellman error + CQL penalty), policy (BC for the first ``bc_iters``),
        temperature, then the target critics by ``tau``."""
        c = self.config
        alpha = self.temperature.log_alpha.exp().detach()
        backup_alpha = torch.zeros(()) if c.deterministic_backup else alpha
        bellman, stats = critic_loss(self.module, mb, backup_alpha)
        penalty, cql_stats = cql_penalty(self.module, mb, c)
        self.critic_learner.update(bellman + penalty)
        if self.num_updates < c.bc_iters:
            action, logp = self.module.sample(mb["obs"])
            del action
            policy_loss = (
                alpha * logp - bc_log_likelihood(self.module, mb["obs"], mb["actions"])
            ).mean()
            logp = logp.detach()
        else:
            policy_loss, logp = actor_loss(self.module, mb["obs"], alpha)
        self.actor_learner.update(policy_loss)
        temperature_loss = alpha_loss(self.temperature.log_alpha, logp, self.target_entropy)
        self.alpha_learner.update(temperature_loss)
        with torch.no_grad():
            self.target_flat.lerp_(self.critic_learner.flat, float(c.tau))
        self.num_updates += 1
        return {
            **stats,
            **cql_stats,
            "policy_loss": policy_loss.detach(),
            "entropy": -logp.mean(),
            "alpha_loss": temperature_loss.detach(),
        }

    def get_extra_state(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state.get("num_updates", 0))


CQLConfig.algo_class = CQL
