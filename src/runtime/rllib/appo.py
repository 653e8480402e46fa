"""APPO and IMPALA (Espeholt et al. 2018): asynchronous sampling, V-trace, top to bottom.

1. ``APPOConfig`` / ``IMPALAConfig``: the hyperparameters (defaults that learn CartPole-v1).
2. The model is PPO's ``ActorCritic`` (separate policy and value MLPs); runners record the
   log-probabilities of the actions they take (the behaviour policy).
3. ``vtrace``: off-policy value targets and policy-gradient advantages from importance
   ratios between the learner's policy and the (older) behaviour policy, truncated at
   ``vtrace_clip_rho_threshold`` / ``vtrace_clip_pg_rho_threshold``.
4. ``appo_loss``: PPO's clipped surrogate on the V-trace advantages (IMPALA: the plain
   policy gradient ``-rho * A * log pi``), value loss toward the V-trace targets, entropy.
5. ``APPO.training_step``: pull the batches the runners have ready (``AsyncSampler``: each
   runner always has calls queued, so sampling never waits for learning) until
   ``train_batch_size`` env steps are in, V-trace them, then ``num_epochs`` passes of
   minibatches.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from runtime.rllib._algorithm import Algorithm
from runtime.rllib._async_sampler import AsyncSampler
from runtime.rllib._config import AlgorithmConfig, scheduled
from runtime.rllib._learner import TorchLearner, obs_to_tensor, seeded_init
from runtime.rllib._numpy_policy import PPOActor
from runtime.rllib.ppo import ActorCritic

__all__ = ["APPO", "IMPALA", "APPOConfig", "IMPALAConfig", "vtrace"]


# --- 1. config ----------------------------------------------------------------------------


class IMPALAConfig(AlgorithmConfig):
    """IMPALA's settings. ``.training()`` takes any of the attributes set here.

    Defaults: ``lr=5e-4``, ``gamma=0.99``, ``train_batch_size=1000`` env steps per update
    round, ``rollout_fragment_length=50`` steps per env per runner call, ``num_epochs=1``,
    ``minibatch_size=250``, ``vf_loss_coeff=0.5``, ``entropy_coeff=0.0``, ``grad_clip=40``,
    ``vtrace_clip_rho_threshold=1.0``, ``vtrace_clip_pg_rho_threshold=1.0``, ``lambda_=1.0``;
    ``max_requests_in_flight_per_env_runner`` (``.env_runners()``, default 2) calls queued
    per runner.
    """

    supports_vf_share_layers = True

    ray_training_options = frozenset(
        {
            "vtrace_drop_last_ts",
            "gamma_schedule",
            "entropy_coeff_schedule",
            "lr_schedule",
            "learner_queue_size",
            "timeout_s_sampler_manager",
            "timeout_s_aggregator_manager",
            "broadcast_interval",
            "num_gpu_loader_threads",
            "grad_clip_by",
            "opt_type",
            "decay",
            "momentum",
            "epsilon",
            "_separate_vf_optimizer",
            "_lr_vf",
            "vtrace",
            "use_critic",
            "use_gae",
            "use_kl_loss",
            "kl_coeff",
            "kl_target",
            "target_network_update_freq",
            "tau",
            "target_worker_clipping",
            "use_circular_buffer",
            "circular_buffer_num_batches",
            "circular_buffer_iterations_per_batch",
            "simple_queue_size",
            "target_update_frequency",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.lr = 5e-4
        self.train_batch_size = 1000
        self.rollout_fragment_length = 50
        self.num_epochs = 1
        self.minibatch_size = 250
        self.vf_loss_coeff = 0.5
        self.entropy_coeff = 0.0
        self.grad_clip = 40.0
        self.lambda_ = 1.0
        self.vtrace_clip_rho_threshold = 1.0
        self.vtrace_clip_pg_rho_threshold = 1.0

    def validate(self) -> None:
        super().validate()
        for name in ("num_epochs", "minibatch_size", "max_requests_in_flight_per_env_runner"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("vtrace_clip_rho_threshold", "vtrace_clip_pg_rho_threshold"):
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0")


class APPOConfig(IMPALAConfig):
    """APPO's settings: IMPALA's, plus PPO's ``clip_param`` (default 0.4, as Ray's), and
    ``num_epochs=2`` (Ray: 1; the clipped surrogate makes a second pass safe, and it halved
    the env steps to a CartPole return of 150 here)."""

    def __init__(self) -> None:
        super().__init__()
        self.clip_param = 0.4
        self.num_epochs = 2

    def validate(self) -> None:
        super().validate()
        if float(self.clip_param) <= 0:
            raise ValueError(f"clip_param must be > 0, got {self.clip_param!r}")


# --- 3. V-trace ---------------------------------------------------------------------------


def vtrace(  # noqa: PLR0917 -- the [T, N] columns V-trace reads, in the paper's order
    behaviour_logp: np.ndarray,
    target_logp: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    *,
    gamma: float,
    lambda_: float = 1.0,
    clip_rho: float = 1.0,
    clip_pg_rho: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """V-trace value targets ``vs`` and policy-gradient advantages over ``[T, N]`` arrays.

    ``next_values`` are V of the true next observations (so a truncated episode, and the
    end of the fragment, bootstrap from V(s')); the recursion stops at every episode end.
    With the behaviour policy equal to the target one and ``lambda_=1`` the targets are the
    bootstrapped discounted returns.
    """
    rho = np.exp(target_logp - behaviour_logp)
    rho_c = np.minimum(clip_rho, rho)
    cs = lambda_ * np.minimum(1.0, rho)
    discounts = gamma * (1.0 - terminateds)
    not_done = 1.0 - np.logical_or(terminateds, truncateds)
    deltas = rho_c * (rewards + discounts * next_values - values)
    vs_minus_v = np.zeros_like(rewards)
    acc = np.zeros(rewards.shape[1], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * not_done[t] * acc
        vs_minus_v[t] = acc
    vs = values + vs_minus_v
    # v_{s+1}: the next step's target inside an episode, V(s') at its end or the fragment's.
    vs_next = next_values.copy()
    inside = not_done[:-1].astype(bool)
    vs_next[:-1][inside] = vs[1:][inside]
    pg_adv = np.minimum(clip_pg_rho, rho) * (rewards + discounts * vs_next - values)
    return vs.astype(np.float32), pg_adv.astype(np.float32)


# --- 4. loss ------------------------------------------------------------------------------


def appo_loss(
    module: ActorCritic,
    mb: dict[str, torch.Tensor],
    config: IMPALAConfig,
    *,
    clip: float | None,
    entropy_coeff: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Surrogate (clipped with ``clip``, or IMPALA's plain gradient), value and entropy terms."""
    logp, entropy = module.logp_entropy(mb["obs"], mb["actions"])
    adv = mb["advantages"]
    if clip is None:
        policy_loss = -(logp * adv).mean()
    else:
        ratio = (logp - mb["action_logp"]).exp()
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
        policy_loss = -surrogate.mean()
    vf_loss = 0.5 * ((module.value(mb["obs"]) - mb["value_targets"]) ** 2).mean()
    entropy = entropy.mean()
    loss = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy
    stats = {
        "policy_loss": policy_loss.detach(),
        "vf_loss": vf_loss.detach(),
        "entropy": entropy.detach(),
    }
    return loss, stats


# --- 5. the algorithm ---------------------------------------------------------------------


class IMPALA(Algorithm):
    """IMPALA: asynchronous env runners, V-trace-corrected actor-critic updates."""

    config_class = IMPALAConfig
    supports_box_actions = True
    config: IMPALAConfig
    #: PPO's surrogate clip (APPO); None: IMPALA's plain policy gradient.
    clip_param: float | None = None

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
        self.sampler: AsyncSampler | None = None

    def training_step(self) -> dict[str, Any]:
        c = self.config
        if self.sampler is None:
            self.sampler = AsyncSampler(
                self.env_runner_group, c.max_requests_in_flight_per_env_runner
            )
        lr = self.current_lr()
        self.learner.set_lr(lr)
        entropy_coeff = scheduled(c.entropy_coeff, self.num_env_steps_sampled_lifetime)

        # Take what the runners have ready until a train batch is in (they keep sampling).
        batches: list[dict[str, Any]] = []
        staleness: list[int] = []
        while sum(int(b["env_steps"]) for b in batches) < c.train_batch_size:
            got = self.sampler.pull(
                self._runner_payload(), c.get_rollout_fragment_length(), c.explore, {}
            )
            self.account(got)
            batches += got
            staleness += self.sampler.staleness
        data = self.vtrace_batch(batches)

        size = len(data["advantages"])
        mb_size = min(c.minibatch_size, size)
        totals: dict[str, float] = {}
        num_updates = 0
        for _epoch in range(c.num_epochs):
            order = torch.from_numpy(self._rng.permutation(size))
            for start in range(0, size - mb_size + 1, mb_size):
                idx = order[start : start + mb_size]
                mb = {k: v[idx] for k, v in data.items()}
                loss, stats = appo_loss(
                    self.module, mb, c, clip=self.clip_param, entropy_coeff=entropy_coeff
                )
                stats["grad_norm"] = self.learner.update(loss)
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
                num_updates += 1
        self.num_env_steps_trained_lifetime += size * c.num_epochs
        out = {k: v / max(1, num_updates) for k, v in totals.items()}
        out["curr_lr"] = lr
        out["mean_staleness"] = float(np.mean(staleness)) if staleness else 0.0
        out["num_env_steps_trained"] = size
        return out

    def vtrace_batch(self, batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The runners' ``[T, N]`` batches as one flat batch with V-trace targets/advantages."""
        c = self.config
        space = self.observation_space
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "actions", "action_logp", "advantages", "value_targets")
        }
        for b in batches:
            t, n = b["rewards"].shape
            flat_obs = obs_to_tensor(b["obs"].reshape(t * n, *b["obs"].shape[2:]), space)
            flat_next = obs_to_tensor(b["next_obs"].reshape(t * n, *b["next_obs"].shape[2:]), space)
            actions = torch.as_tensor(b["actions"].reshape(t * n, *b["actions"].shape[2:]))
            actions = actions.long() if self.module.discrete else actions.float()
            with torch.no_grad():
                values = self.module.value(flat_obs).numpy().reshape(t, n)
                next_values = self.module.value(flat_next).numpy().reshape(t, n)
                target_logp = self.module.logp_entropy(flat_obs, actions)[0].numpy().reshape(t, n)
            vs, adv = vtrace(
                b["action_logp"],
                target_logp,
                b["rewards"],
                values,
                next_values,
                b["terminateds"].astype(np.float32),
                b["truncateds"].astype(np.float32),
                gamma=c.gamma,
                lambda_=c.lambda_,
                clip_rho=c.vtrace_clip_rho_threshold,
                clip_pg_rho=c.vtrace_clip_pg_rho_threshold,
            )
            cols["obs"].append(flat_obs.numpy())
            cols["actions"].append(actions.numpy())
            cols["action_logp"].append(b["action_logp"].reshape(-1))
            cols["advantages"].append(adv.reshape(-1))
            cols["value_targets"].append(vs.reshape(-1))
        data = {k: torch.as_tensor(np.concatenate(v)) for k, v in cols.items()}
        advantages = data["advantages"]
        data["advantages"] = (advantages - advantages.mean()) / advantages.std().clamp(min=1e-4)
        return data

    def stop(self) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.stop()
        super().stop()


class APPO(IMPALA):
    """APPO: IMPALA with PPO's clipped surrogate on the V-trace advantages."""

    config_class = APPOConfig
    config: APPOConfig

    def setup(self) -> None:
        super().setup()
        self.clip_param = float(self.config.clip_param)


IMPALAConfig.algo_class = IMPALA
APPOConfig.algo_class = APPO
