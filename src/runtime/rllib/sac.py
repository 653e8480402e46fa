"""SAC (Haarnoja et al. 2018) for continuous actions, in one file you can read top to bottom.

1. ``SACConfig``: the hyperparameters, with defaults that learn Pendulum-v1.
2. ``SACModule``: a tanh-squashed Gaussian policy and twin Q networks (with their target
   copies), actions scaled to the space's bounds.
3. ``sac_losses``: the critics' soft Bellman error against the target critics, the policy's
   ``alpha * log pi - min Q``, and the temperature's loss toward ``target_entropy``.
4. ``SAC.training_step``: sample a round from the env runners into the replay buffer, then
   gradient steps on replayed minibatches (critics, policy, temperature, in that order),
   each followed by a Polyak update of the target critics by ``tau``.

Box actions only (``UnsupportedSpaceError`` otherwise). Sampling, checkpoints, evaluation
and the Tune shape come from ``Algorithm``; the three optimizers are ``TorchLearner`` s.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.rllib._algorithm import Algorithm
from runtime.rllib._config import AlgorithmConfig
from runtime.rllib._env import UnsupportedSpaceError
from runtime.rllib._learner import (
    LearnerSet,
    TorchLearner,
    flatten_parameters,
    mlp,
    obs_size,
    obs_to_tensor,
    seeded_init,
    sync_actor,
)
from runtime.rllib._numpy_policy import SACActor
from runtime.rllib._replay_buffer import ReplayBuffer, n_step_transitions

__all__ = ["SAC", "SACConfig"]


# --- 1. config ----------------------------------------------------------------------------


class SACConfig(AlgorithmConfig):
    """SAC's settings. ``.training()`` takes any of the attributes set here.

    Defaults: ``actor_lr=3e-4``, ``critic_lr=1e-3``, ``alpha_lr=1e-3`` (Ray's are 3e-5,
    3e-4, 3e-4), ``gamma=0.99``, ``tau=0.005``, ``initial_alpha=1.0``,
    ``target_entropy="auto"`` (minus the action dimension), ``twin_q=True``, ``n_step=1``,
    ``train_batch_size=256`` (the replayed minibatch), ``replay_buffer_config={"capacity":
    100000}``, ``num_steps_sampled_before_learning_starts=1000``, ``training_intensity=None``
    (one gradient step per sampled env step), ``rollout_fragment_length=16`` per env per
    round, ``min_sample_timesteps_per_iteration=1000``, 256x256 ReLU MLPs.
    """

    ray_training_options = frozenset(
        {
            "q_model_config",
            "policy_model_config",
            "store_buffer_in_checkpoints",
            "clip_actions",
            "optimization_config",
            "target_network_update_freq",
            "_deterministic_loss",
            "_use_beta_distribution",
            "num_epochs",
            "minibatch_size",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.actor_lr = 3e-4
        self.critic_lr = 1e-3
        self.alpha_lr = 1e-3
        self.lr = 3e-4  # unused by SAC's three optimizers; kept for the shared checks
        self.train_batch_size = 256
        self.rollout_fragment_length = 16
        self.replay_buffer_config: dict[str, Any] = {"capacity": 100_000}
        self.num_steps_sampled_before_learning_starts = 1000
        self.training_intensity: float | None = None
        self.tau = 0.005
        self.initial_alpha = 1.0
        self.target_entropy: float | str = "auto"
        self.twin_q = True
        self.n_step = 1
        self.grad_clip = None
        self.model = {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"}
        self.min_sample_timesteps_per_iteration = 1000

    def validate(self) -> None:
        super().validate()
        if self.model.get("conv_filters"):
            raise NotImplementedError(
                f"model_config conv_filters: {type(self).__name__} has no CNN encoder here "
                "(PPO, APPO and IMPALA do)"
            )
        for name in ("actor_lr", "critic_lr", "alpha_lr", "initial_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if not 0.0 < float(self.tau) <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        if self.target_entropy != "auto" and not isinstance(self.target_entropy, int | float):
            raise ValueError(f"target_entropy must be 'auto' or a number: {self.target_entropy!r}")
        capacity = self.replay_buffer_config.get("capacity")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"replay_buffer_config['capacity'] must be an int >= 1: {capacity!r}")
        if isinstance(self.n_step, bool) or not isinstance(self.n_step, int) or self.n_step < 1:
            raise ValueError(f"n_step must be an int >= 1, got {self.n_step!r}")
        if self.training_intensity is not None and float(self.training_intensity) <= 0:
            raise ValueError(f"training_intensity must be > 0, got {self.training_intensity!r}")


# --- 2. model -----------------------------------------------------------------------------


class SACModule(nn.Module):
    """Policy ``pi`` (mean and log-std of ``u``, action ``tanh(u)``), critics ``q1``/``q2``
    on (observation, action in [-1, 1]), and their frozen targets ``target_q1/2``."""

    def __init__(
        self, observation_space: Any, action_space: Any, model: dict[str, Any], twin_q: bool
    ):
        super().__init__()
        self.observation_space = observation_space
        hiddens, act = list(model["fcnet_hiddens"]), model["fcnet_activation"]
        n_obs, n_act = obs_size(observation_space), int(action_space.shape[0])
        self.pi = mlp(n_obs, hiddens, 2 * n_act, act, out_gain=0.01)
        self.q1 = mlp(n_obs + n_act, hiddens, 1, act)
        self.q2 = mlp(n_obs + n_act, hiddens, 1, act) if twin_q else None
        self.target_q1 = copy.deepcopy(self.q1)
        self.target_q2 = copy.deepcopy(self.q2)
        low = torch.as_tensor(action_space.low, dtype=torch.float32)
        high = torch.as_tensor(action_space.high, dtype=torch.float32)
        self.action_mid: torch.Tensor
        self.action_half: torch.Tensor
        self.register_buffer("action_mid", (high + low) / 2)
        self.register_buffer("action_half", (high - low) / 2)
        self.actor = SACActor(observation_space, action_space, model)  # what runners run

    def critics(self) -> list[nn.Module]:
        return [q for q in (self.q1, self.q2) if q is not None]

    def targets(self) -> list[nn.Module]:
        return [q for q in (self.target_q1, self.target_q2) if q is not None]

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized actions in [-1, 1] and their log-probabilities (tanh-corrected)."""
        mean, log_std = self.pi(obs).chunk(2, -1)
        log_std = log_std.clamp(SACActor.LOG_STD_MIN, SACActor.LOG_STD_MAX)
        u = mean + log_std.exp() * torch.randn_like(mean)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - _HALF_LOG_2PI).sum(-1)
        # log(1 - tanh(u)^2), written stably: 2 * (log 2 - u - softplus(-2u)).
        logp = logp - (2 * (math.log(2.0) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), logp

    @staticmethod
    def q(critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = critic(torch.cat([obs, action], -1)).squeeze(-1)
        return out

    def normalize(self, env_actions: torch.Tensor) -> torch.Tensor:
        """Env-scale actions (what the replay holds) back into [-1, 1]."""
        return ((env_actions - self.action_mid) / self.action_half).clamp(-1.0, 1.0)

    def act(
        self, obs: Any, explore: bool, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Env-scale actions through the runners' numpy ``SACActor`` (synced weights)."""
        sync_actor(self, self.actor)
        return self.actor.act(obs, explore, rng)

    def forward_inference(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Ray's RLModule call: ``{"obs": ...}`` -> ``{"action_dist_inputs"}`` (mean, log-std)."""
        obs = obs_to_tensor(np.asarray(batch["obs"]), self.observation_space)
        with torch.no_grad():
            return {"action_dist_inputs": self.pi(obs)}

    forward_exploration = forward_inference


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# --- 3. losses ----------------------------------------------------------------------------


def critic_loss(
    module: SACModule, mb: dict[str, torch.Tensor], alpha: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean squared soft Bellman error of each critic against the target critics' minimum.

    target = r + discount * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s')),
    with a' drawn from the current policy at s'.
    """
    with torch.no_grad():
        next_action, next_logp = module.sample(mb["next_obs"])
        q_next = torch.stack([module.q(t, mb["next_obs"], next_action) for t in module.targets()])
        soft_next = q_next.min(0).values - alpha * next_logp
        target = mb["rewards"] + mb["discounts"] * (1.0 - mb["terminateds"]) * soft_next
    q_values = [module.q(c, mb["obs"], mb["actions"]) for c in module.critics()]
    loss = sum((nn.functional.mse_loss(q, target) for q in q_values), torch.zeros(()))
    return loss, {"qf_loss": loss.detach(), "qf_mean": q_values[0].detach().mean()}


def actor_loss(
    module: SACModule, obs: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha * log pi(a|s) - min_i Q_i(s, a)`` for reparameterized a; also the log-probs."""
    action, logp = module.sample(obs)
    q = torch.stack([module.q(c, obs, action) for c in module.critics()]).min(0).values
    return (alpha * logp - q).mean(), logp.detach()


def alpha_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Moves alpha so that the policy's entropy (-log pi) tends to ``target_entropy``."""
    return -(log_alpha * (logp + target_entropy)).mean()


# --- 4. the algorithm ---------------------------------------------------------------------


class _Temperature(nn.Module):
    def __init__(self, initial_alpha: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor([math.log(initial_alpha)]))


class SAC(Algorithm):
    """Soft Actor-Critic on Box actions: twin Q, automatic entropy tuning, uniform replay.

    Example::

        algo = SACConfig().environment("Pendulum-v1").build()
        for _ in range(10):
            print(algo.train()["env_runners"]["episode_return_mean"])
    """

    config_class = SACConfig
    supports_box_actions = True
    config: SACConfig

    def setup(self) -> None:
        from gymnasium import spaces

        c = self.config
        space = self.action_space
        if not isinstance(space, spaces.Box) or not (
            np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        ):
            raise UnsupportedSpaceError(
                f"SAC here supports Box action spaces with finite bounds, got {space}; use "
                "DQN or PPO for Discrete actions"
            )
        spec = (self.observation_space, space, dict(c.model))
        self.module = seeded_init(c.seed, functools.partial(SACModule, *spec, c.twin_q))
        self.temperature = _Temperature(float(c.initial_alpha))
        self.module.add_module("temperature", self.temperature)  # saved with the weights
        self.actor_ctor = functools.partial(SACActor, *spec)  # the env runners' policy
        critics = nn.ModuleList(self.module.critics())
        self.actor_learner = TorchLearner(self.module.pi, c.actor_lr, c.grad_clip)
        self.critic_learner = TorchLearner(critics, c.critic_lr, c.grad_clip)
        self.alpha_learner = TorchLearner(self.temperature, c.alpha_lr, None)
        self.target_flat = flatten_parameters(nn.ModuleList(self.module.targets()))
        self.learner = LearnerSet(
            self.module,
            {
                "actor": self.actor_learner,
                "critic": self.critic_learner,
                "alpha": self.alpha_learner,
            },
        )
        self.buffer = ReplayBuffer(int(c.replay_buffer_config["capacity"]))
        self.target_entropy = (
            -float(np.prod(space.shape)) if c.target_entropy == "auto" else float(c.target_entropy)
        )

    def runner_weights(self) -> dict[str, Any]:
        return {k: v for k, v in self.get_weights().items() if k.startswith("pi.")}

    def training_step(self) -> dict[str, Any]:
        c = self.config
        for learner, lr in (
            (self.actor_learner, c.actor_lr),
            (self.critic_learner, c.critic_lr),
            (self.alpha_learner, c.alpha_lr),
        ):
            learner.set_lr(float(lr))  # Tune's PBT may have changed them

        # Sample one round into the replay buffer (n-step transitions, [T*N, ...]).
        sampled = 0
        for b in self.sample(c.get_rollout_fragment_length()):
            steps = n_step_transitions(b, c.n_step, c.gamma)
            flat = {
                k: np.asarray(v).reshape(-1, *np.asarray(v).shape[2:]) for k, v in steps.items()
            }
            flat["terminateds"] = flat["terminateds"].astype(np.float32)
            flat["actions"] = flat["actions"].astype(np.float32)
            self.buffer.add(flat)
            sampled += int(b["env_steps"])

        stats: dict[str, list[torch.Tensor]] = {}
        if len(self.buffer) >= c.num_steps_sampled_before_learning_starts:
            intensity = c.training_intensity or c.train_batch_size
            num_updates = max(1, round(sampled * float(intensity) / c.train_batch_size))
            for _ in range(num_updates):
                for k, v in self.update(self._minibatch()).items():
                    stats.setdefault(k, []).append(v)
            self.num_env_steps_trained_lifetime += num_updates * c.train_batch_size

        out = {k: float(torch.stack(v).mean()) for k, v in stats.items()}
        out["alpha_value"] = float(self.temperature.log_alpha.detach().exp())
        out["replay_buffer_size"] = len(self.buffer)
        out["curr_lr"] = float(c.actor_lr)
        return out

    def _minibatch(self) -> dict[str, torch.Tensor]:
        raw = self.buffer.sample(self.config.train_batch_size, self._rng)
        space = self.observation_space
        return {
            "obs": obs_to_tensor(raw["obs"], space),
            "next_obs": obs_to_tensor(raw["next_obs"], space),
            "actions": self.module.normalize(torch.as_tensor(raw["actions"])),
            "rewards": torch.as_tensor(raw["rewards"], dtype=torch.float32),
            "terminateds": torch.as_tensor(raw["terminateds"]),
            "discounts": torch.as_tensor(raw["discounts"]),
        }

    def update(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step each for the critics, the policy and the temperature."""
        alpha = self.temperature.log_alpha.exp().detach()
        loss, stats = critic_loss(self.module, mb, alpha)
        self.critic_learner.update(loss)
        # The policy loss backpropagates into the critics too; their gradient buffer is
        # zeroed at the start of their next update, so that does not leak into it.
        policy_loss, logp = actor_loss(self.module, mb["obs"], alpha)
        self.actor_learner.update(policy_loss)
        self.alpha_learner.update(alpha_loss(self.temperature.log_alpha, logp, self.target_entropy))
        with torch.no_grad():
            self.target_flat.lerp_(self.critic_learner.flat, float(self.config.tau))
        stats["policy_loss"] = policy_loss.detach()
        stats["entropy"] = -logp.mean()
        stats["alpha_loss"] = alpha_loss(self.temperature.log_alpha, logp, self.target_entropy)
        stats["alpha_loss"] = stats["alpha_loss"].detach()
        return stats


SACConfig.algo_class = SAC
