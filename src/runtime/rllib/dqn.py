"""DQN (Mnih et al. 2015) with double Q, dueling heads and n-step returns, top to bottom.

1. ``DQNConfig``: the hyperparameters, with defaults that learn CartPole-v1.
2. ``QNetwork``: an MLP from observation to one Q-value per action (``dueling``: a value
   and an advantage stream, Q = V + A - mean(A)); epsilon-greedy ``act``.
3. ``epsilon_at``: the linear exploration schedule (or Ray's ``epsilon`` schedule).
4. ``dqn_loss``: Huber TD error against a target network (double Q: the online network
   picks the next action, the target network scores it).
5. ``DQN.training_step``: sample a round from the env runners into the replay buffer (as
   n-step transitions, ``_replay_buffer.n_step_transitions``), then
   a number of gradient steps on replayed minibatches; every ``target_network_update_freq``
   env steps, move the target network ``tau`` of the way to the online one.

Discrete actions only: a Box action space is a clear ``UnsupportedSpaceError`` at build.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from runtime.rllib._algorithm import Algorithm
from runtime.rllib._config import AlgorithmConfig, check_schedule, scheduled
from runtime.rllib._learner import (
    TorchLearner,
    mlp,
    obs_size,
    obs_to_tensor,
    seeded_init,
    sync_actor,
)
from runtime.rllib._numpy_policy import DQNActor
from runtime.rllib._replay_buffer import ReplayBuffer, n_step_transitions

__all__ = ["DQN", "DQNConfig", "n_step_transitions"]


# --- 1. config ----------------------------------------------------------------------------


class DQNConfig(AlgorithmConfig):
    """DQN's settings. ``.training()`` takes any of the attributes set here.

    Defaults: ``lr=5e-4``, ``gamma=0.99``, ``train_batch_size=64`` (the replayed minibatch),
    ``replay_buffer_config={"capacity": 50000}``, ``num_steps_sampled_before_learning_starts
    =1000``, ``target_network_update_freq=500`` env steps, ``double_q=True``, epsilon from
    1.0 to 0.05 over ``epsilon_timesteps=10000`` env steps, ``training_intensity=16``
    (replayed transitions trained per sampled one: 16 x 64-batches per 64 env steps),
    ``rollout_fragment_length=32`` per env per round, ``grad_clip=10``, a 64x64 ReLU MLP,
    ``n_step=1``, ``tau=1.0`` (a hard copy), ``dueling=False`` (Ray's default is True).
    ``epsilon`` (Ray's form, a schedule ``[[0, 1.0], [10000, 0.05]]``) replaces the linear
    ``initial_epsilon``/``final_epsilon``/``epsilon_timesteps`` schedule when given.
    """

    ray_training_options = frozenset(
        {
            "store_buffer_in_checkpoints",
            "lr_schedule",
            "adam_epsilon",
            "num_atoms",
            "v_min",
            "v_max",
            "noisy",
            "sigma0",
            "hiddens",
            "before_learn_on_batch",
            "categorical_distribution_temperature",
            "burn_in_len",
            "num_epochs",
            "minibatch_size",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.lr = 5e-4
        self.train_batch_size = 64
        self.rollout_fragment_length = 32
        self.replay_buffer_config: dict[str, Any] = {"capacity": 50_000}
        self.num_steps_sampled_before_learning_starts = 1000
        self.target_network_update_freq = 500
        self.double_q = True
        self.dueling = False
        self.n_step = 1
        self.tau = 1.0
        self.epsilon: list[Any] | None = None
        self.initial_epsilon = 1.0
        self.final_epsilon = 0.05
        self.epsilon_timesteps = 10_000
        self.training_intensity: float = 16.0
        self.td_error_loss_fn = "huber"
        self.grad_clip = 10.0
        self.model = {"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"}
        self.min_sample_timesteps_per_iteration = 1000  # Ray's DQN default

    def validate(self) -> None:
        super().validate()
        if self.model.get("conv_filters"):
            raise NotImplementedError(
                f"model_config conv_filters: {type(self).__name__} has no CNN encoder here "
                "(PPO, APPO and IMPALA do)"
            )
        capacity = self.replay_buffer_config.get("capacity")
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"replay_buffer_config['capacity'] must be an int >= 1: {capacity!r}")
        if self.td_error_loss_fn not in ("huber", "mse"):
            raise ValueError(
                f"td_error_loss_fn must be 'huber' or 'mse': {self.td_error_loss_fn!r}"
            )
        if not isinstance(self.target_network_update_freq, int) or (
            self.target_network_update_freq < 1
        ):
            raise ValueError("target_network_update_freq must be an int >= 1 (env steps)")
        if float(self.training_intensity) <= 0:
            raise ValueError(f"training_intensity must be > 0, got {self.training_intensity!r}")
        if not 0.0 <= float(self.final_epsilon) <= float(self.initial_epsilon) <= 1.0:
            raise ValueError("need 0 <= final_epsilon <= initial_epsilon <= 1")
        if self.epsilon is not None:
            check_schedule("epsilon", self.epsilon, strict=False)
        if isinstance(self.n_step, bool) or not isinstance(self.n_step, int) or self.n_step < 1:
            raise ValueError(f"n_step must be an int >= 1, got {self.n_step!r}")
        if not 0.0 < float(self.tau) <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")


# --- 2. model -----------------------------------------------------------------------------


class QNetwork(nn.Module):
    """Q(s, .) for every action of a Discrete space.

    With ``dueling`` the MLP's last layer has one more output, the state value V(s), and
    the others are advantages: Q = V + A - mean(A) (Wang et al. 2016).
    """

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        model: dict[str, Any],
        dueling: bool = False,
    ):
        super().__init__()
        self.observation_space = observation_space
        self.num_actions = int(action_space.n)
        self.action_start = int(action_space.start)
        self.dueling = dueling
        self.q = mlp(
            obs_size(observation_space),
            list(model["fcnet_hiddens"]),
            self.num_actions + int(dueling),
            model["fcnet_activation"],
        )
        self.actor = DQNActor(observation_space, action_space, model, dueling)  # runners'

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.q(obs)
        if self.dueling:
            value, adv = out[:, :1], out[:, 1:]
            return value + adv - adv.mean(-1, keepdim=True)
        return out

    def forward_inference(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Ray's RLModule call: ``{"obs": tensor}`` -> ``{"q_values", "action_dist_inputs"}``."""
        obs = obs_to_tensor(np.asarray(batch["obs"]), self.observation_space)
        with torch.no_grad():
            q = self(obs)
        return {"q_values": q, "action_dist_inputs": q}

    forward_exploration = forward_inference

    def act(
        self, obs: Any, explore: bool, rng: np.random.Generator, epsilon: float = 0.0
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions, each replaced by a uniform one with probability ``epsilon``.

        The same numpy ``DQNActor`` the env runners act with (kept in sync with these weights).
        """
        sync_actor(self, self.actor)
        return self.actor.act(obs, explore, rng, epsilon)


# --- 3. exploration -----------------------------------------------------------------------


def epsilon_at(step: int, config: DQNConfig) -> float:
    """Linear decay from ``initial_epsilon`` to ``final_epsilon`` over ``epsilon_timesteps``.

    When ``epsilon`` (Ray's schedule form) is set, its value at ``step`` instead.
    """
    if config.epsilon is not None:
        return scheduled(config.epsilon, step)
    frac = min(1.0, step / max(1, config.epsilon_timesteps))
    return float(config.initial_epsilon + frac * (config.final_epsilon - config.initial_epsilon))


# --- 4. loss ------------------------------------------------------------------------------


def dqn_loss(
    q_net: QNetwork, target_net: QNetwork, mb: dict[str, torch.Tensor], config: DQNConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD error of Q(s, a) against r + gamma * Q_target(s', a*) (0 past a terminal state)."""
    q_all = q_net(mb["obs"])
    q = q_all.gather(1, mb["actions"].unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next_target = target_net(mb["next_obs"])
        if config.double_q:
            best = q_net(mb["next_obs"]).argmax(-1, keepdim=True)
        else:
            best = q_next_target.argmax(-1, keepdim=True)
        q_next = q_next_target.gather(1, best).squeeze(1)
        target = mb["rewards"] + mb["discounts"] * (1.0 - mb["terminateds"]) * q_next
    if config.td_error_loss_fn == "huber":
        loss = nn.functional.smooth_l1_loss(q, target)
    else:
        loss = nn.functional.mse_loss(q, target)
    return loss, {"qf_loss": loss.item(), "qf_mean": q.mean().item()}


# --- 5. the algorithm ---------------------------------------------------------------------


class DQN(Algorithm):
    """Deep Q-learning (double Q, target network, uniform replay) on Discrete actions.

    Example::

        algo = DQNConfig().environment("CartPole-v1").build()
        for _ in range(100):
            result = algo.train()
    """

    config_class = DQNConfig
    supports_box_actions = False
    config: DQNConfig

    def setup(self) -> None:
        c = self.config
        spec = (self.observation_space, self.action_space, dict(c.model))
        self.module = seeded_init(c.seed, functools.partial(QNetwork, *spec, c.dueling))
        self.actor_ctor = functools.partial(DQNActor, *spec, c.dueling)  # the runners' policy
        self.target = copy.deepcopy(self.module)
        self.learner = TorchLearner(self.module, self.current_lr(), c.grad_clip)
        self.buffer = ReplayBuffer(int(c.replay_buffer_config["capacity"]))
        self.last_target_update = 0
        self.num_target_updates = 0

    def act_kwargs(self) -> dict[str, Any]:
        return {"epsilon": epsilon_at(self.num_env_steps_sampled_lifetime, self.config)}

    def training_step(self) -> dict[str, Any]:
        c = self.config
        lr = self.current_lr()
        self.learner.set_lr(lr)
        epsilon = self.act_kwargs()["epsilon"]

        # Sample one round into the replay buffer (arrays [T, N, ...] flattened to [T*N, ...]).
        sampled = 0
        for b in self.sample(c.get_rollout_fragment_length()):
            flat = {k: _flatten_tn(v) for k, v in n_step_transitions(b, c.n_step, c.gamma).items()}
            flat["terminateds"] = flat["terminateds"].astype(np.float32)
            flat["actions"] = flat["actions"].astype(np.int64) - self.module.action_start
            self.buffer.add(flat)
            sampled += int(b["env_steps"])

        stats: dict[str, list[float]] = {}
        if len(self.buffer) >= c.num_steps_sampled_before_learning_starts:
            num_updates = max(1, round(sampled * float(c.training_intensity) / c.train_batch_size))
            space = self.observation_space
            for _ in range(num_updates):
                raw = self.buffer.sample(c.train_batch_size, self._rng)
                mb = {
                    "obs": obs_to_tensor(raw["obs"], space),
                    "next_obs": obs_to_tensor(raw["next_obs"], space),
                    "actions": torch.as_tensor(raw["actions"]),
                    "rewards": torch.as_tensor(raw["rewards"], dtype=torch.float32),
                    "terminateds": torch.as_tensor(raw["terminateds"]),
                    "discounts": torch.as_tensor(raw["discounts"]),
                }
                loss, mb_stats = dqn_loss(self.module, self.target, mb, c)
                mb_stats["grad_norm"] = float(self.learner.update(loss))
                for k, v in mb_stats.items():
                    stats.setdefault(k, []).append(v)
            self.num_env_steps_trained_lifetime += num_updates * c.train_batch_size

        # Every target_network_update_freq env steps, move the target network tau of the way
        # to the online one (tau=1: a copy).
        steps = self.num_env_steps_sampled_lifetime
        if steps - self.last_target_update >= c.target_network_update_freq:
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.module.parameters(), strict=True):
                    t.copy_(o) if c.tau == 1.0 else t.lerp_(o, float(c.tau))
            self.last_target_update = steps
            self.num_target_updates += 1

        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["epsilon"] = epsilon
        out["replay_buffer_size"] = len(self.buffer)
        out["num_target_updates"] = self.num_target_updates
        out["curr_lr"] = lr
        return out

    def get_extra_state(self) -> dict[str, Any]:
        from runtime.rllib._learner import get_module_weights

        return {
            "target": get_module_weights(self.target),
            "last_target_update": self.last_target_update,
            "num_target_updates": self.num_target_updates,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        from runtime.rllib._learner import set_module_weights

        if "target" in state:
            set_module_weights(self.target, state["target"])
            self.last_target_update = int(state["last_target_update"])
            self.num_target_updates = int(state["num_target_updates"])


def _flatten_tn(x: np.ndarray) -> np.ndarray:
    """``[T, N, ...]`` -> ``[T*N, ...]``."""
    return np.asarray(x).reshape(-1, *np.asarray(x).shape[2:])


DQNConfig.algo_class = DQN
