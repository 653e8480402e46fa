"""PPO (Schulman et al. 2017), in one file you can read top to bottom.

1. ``PPOConfig``: the hyperparameters, with defaults that solve CartPole-v1 quickly.
2. ``ActorCritic``: separate policy and value MLPs; a categorical policy for Discrete
   actions, a Gaussian with a learned state-independent log-std for Box actions. With
   ``use_lstm`` an LSTM cell under both heads, trained on sequences (``to_sequences``).
3. ``compute_gae``: advantages by generalized advantage estimation.
4. ``ppo_loss``: clipped surrogate + value loss - entropy bonus.
5. ``PPO.training_step``: sample from the env runners, then per module (one, or one per
   trained policy of a multi-agent setup) ``update_module``: GAE, then ``num_epochs``
   passes of shuffled minibatches (of ``max_seq_len``-step sequences with ``use_lstm``).

Sampling, checkpoints, evaluation and the Tune shape come from ``Algorithm``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from runtime.rllib._algorithm import Algorithm
from runtime.rllib._config import AlgorithmConfig, check_schedule, scheduled
from runtime.rllib._learner import (
    TorchLearner,
    cnn,
    mlp,
    obs_size,
    obs_to_tensor,
    seeded_init,
    sync_actor,
)
from runtime.rllib._numpy_policy import PPOActor
from runtime.rllib.core import DEFAULT_MODULE_ID

__all__ = ["PPO", "PPOConfig"]


# --- 1. config ----------------------------------------------------------------------------


class PPOConfig(AlgorithmConfig):
    """PPO's settings. ``.training()`` takes any of the attributes set here.

    Defaults (tuned to reach a mean return of 150 on CartPole-v1 in a few seconds with
    2 env runners): ``lr=3e-4``, ``gamma=0.99``, ``lambda_=0.95``, ``train_batch_size=2000``
    env steps per iteration, ``minibatch_size=128``, ``num_epochs=10``, ``clip_param=0.2``,
    ``vf_loss_coeff=0.5``, ``entropy_coeff=0.0``, ``grad_clip=0.5``, ``use_kl_loss=False``
    (Ray's default is True with ``kl_coeff=0.2``, ``kl_target=0.01``: set ``use_kl_loss=True``
    for Ray's adaptive KL penalty). ``lr`` and ``entropy_coeff`` take Ray's schedule form
    ``[[timestep, value], ...]``.
    """

    ray_training_options = frozenset(
        {"use_critic", "entropy_coeff_schedule", "lr_schedule", "vf_share_layers"}
    )
    supports_lstm = True
    supports_learners = True
    supports_vf_share_layers = True

    def __init__(self) -> None:
        super().__init__()
        self.lr = 3e-4
        self.train_batch_size = 2000
        self.minibatch_size = 128
        self.num_epochs = 10
        self.lambda_ = 0.95
        self.use_gae = True
        self.clip_param = 0.2
        self.vf_clip_param: float | None = None
        self.vf_loss_coeff = 0.5
        self.entropy_coeff = 0.0
        self.normalize_advantages = True
        self.grad_clip = 0.5
        self.use_kl_loss = False
        self.kl_coeff = 0.2
        self.kl_target = 0.01

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.minibatch_size, int) or self.minibatch_size < 1:
            raise ValueError(f"minibatch_size must be an int >= 1, got {self.minibatch_size!r}")
        if not isinstance(self.num_epochs, int) or self.num_epochs < 1:
            raise ValueError(f"num_epochs must be an int >= 1, got {self.num_epochs!r}")
        if not 0.0 <= float(self.lambda_) <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {self.lambda_!r}")
        if float(self.clip_param) <= 0:
            raise ValueError(f"clip_param must be > 0, got {self.clip_param!r}")
        check_schedule("entropy_coeff", self.entropy_coeff, strict=False)
        if float(self.kl_coeff) < 0 or float(self.kl_target) <= 0:
            raise ValueError("kl_coeff must be >= 0 and kl_target > 0")


# --- 2. model -----------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Policy and value function as two MLPs (no shared layers, as in CleanRL).

    With ``model_config["vf_share_layers"]`` (Ray's option) the value is one linear layer on
    the policy MLP's last hidden layer instead, so both losses train the shared layers.

    With ``model_config["use_lstm"]`` one ``nn.LSTMCell`` (``lstm_cell_size`` units) sits
    between the observation (or its CNN encoding) and both heads: the policy and the value
    share the recurrent state, one ``(h, c)`` per env, which is what the env runners carry.
    """

    def __init__(self, observation_space: Any, action_space: Any, model: dict[str, Any]):
        from gymnasium import spaces

        super().__init__()
        self.observation_space = observation_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        hiddens, act = list(model["fcnet_hiddens"]), model["fcnet_activation"]
        n_in = obs_size(observation_space)
        # Images ([H, W, C] Box) with ``conv_filters``: a CNN encoder under each MLP head.
        self.pi_enc: nn.Module = nn.Identity()
        self.vf_enc: nn.Module = nn.Identity()
        self.recurrent = bool(model.get("use_lstm"))
        if model.get("conv_filters"):
            self.pi_enc, n_in = cnn(observation_space, model["conv_filters"])
            if not self.recurrent:  # with an LSTM both heads read the one encoding
                self.vf_enc, _ = cnn(observation_space, model["conv_filters"])
        if self.recurrent:
            self.cell_size = int(model.get("lstm_cell_size", 256))
            self.max_seq_len = int(model.get("max_seq_len", 20))
            self.lstm = nn.LSTMCell(n_in, self.cell_size)
            n_in = self.cell_size
        n_out = int(action_space.n) if self.discrete else int(action_space.shape[0])
        self.pi = mlp(n_in, hiddens, n_out, act, out_gain=0.01)
        self.shared = bool(model.get("vf_share_layers"))
        # Shared: the value head reads the policy's last hidden layer (``trunk``).
        self.vf = mlp(
            hiddens[-1] if self.shared and hiddens else n_in,
            [] if self.shared else hiddens,
            1,
            act,
            out_gain=1.0,
        )
        self.actor = PPOActor(observation_space, action_space, model)  # what runners run
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def logp_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` under the policy, and the policy's entropy.

        The categorical case is written out (``log_softmax`` + ``gather``) rather than going
        through ``torch.distributions``: the learner calls this 160 times an iteration on
        minibatches of 128, where each extra autograd node costs more than its arithmetic.
        """
        return self.head_logp_entropy(self.pi(self.pi_enc(obs)), actions)

    def head_logp_entropy(
        self, out: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logp_entropy`` from the policy head's output."""
        if self.discrete:
            logp_all = torch.log_softmax(out, -1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            return logp, -(logp_all.exp() * logp_all).sum(-1)
        dist = Normal(out, self.log_std.exp().expand_as(out), validate_args=False)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy MLP's hidden layers (what a shared value head reads)."""
        x = self.pi_enc(obs)
        for layer in list(self.pi)[:-1]:
            x = layer(x)
        return x

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.vf(self.trunk(obs)).squeeze(-1)
        return self.vf(self.vf_enc(obs)).squeeze(-1)

    def unroll(
        self, obs: torch.Tensor, starts: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The LSTM over sequences: ``obs [S, L, D]`` from states ``h, c [S, H]``, the state
        zeroed before each step where ``starts [S, L]`` says an episode began.

        Returns the outputs and the states after each step, each ``[S, L, H]``.
        """
        num, length = obs.shape[:2]
        x = self.pi_enc(obs.reshape(num * length, -1)).reshape(num, length, -1)
        keep = (~starts).to(torch.float32).unsqueeze(-1)
        hs, cs = [], []
        for t in range(length):
            h, c = self.lstm(x[:, t], (h * keep[:, t], c * keep[:, t]))
            hs.append(h)
            cs.append(c)
        h_all, c_all = torch.stack(hs, 1), torch.stack(cs, 1)
        return h_all, h_all, c_all

    def forward_train(
        self, mb: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities of the minibatch's actions, entropies and values, flat ``[B]``
        (recurrent: over its ``[S, L]`` sequence steps, padding included)."""
        if self.shared:  # one pass through the shared layers for both heads
            features = self.trunk(mb["obs"])
            logp, entropy = self.head_logp_entropy(self.pi[-1](features), mb["actions"])
            return logp, entropy, self.vf(features).squeeze(-1)
        if not self.recurrent:
            logp, entropy = self.logp_entropy(mb["obs"], mb["actions"])
            return logp, entropy, self.value(mb["obs"])
        features = self.unroll(mb["obs"], mb["starts"], mb["state_h"], mb["state_c"])[0]
        features = features.reshape(-1, self.cell_size)
        logp, entropy = self.head_logp_entropy(
            self.pi(features), mb["actions"].reshape(-1, *mb["actions"].shape[2:])
        )
        return logp, entropy, self.vf(features).squeeze(-1)

    def get_initial_state(self) -> dict[str, np.ndarray]:
        """The recurrent state of a fresh episode, unbatched (Ray's ``get_initial_state``);
        ``{}`` for a feed-forward module."""
        if not self.recurrent:
            return {}
        return {k: v[0] for k, v in self.actor.initial_state(1).items()}

    def forward_inference(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Ray's RLModule call: ``{"obs": ...}`` -> ``{"action_dist_inputs", "vf_preds"}``.

        ``action_dist_inputs`` are the logits (Discrete) or the Gaussian's mean and log-std
        concatenated (Box), as Ray's default PPO module gives them.
        A recurrent module takes one step: ``batch["state_in"]`` (``{"h", "c"}``, ``[B, H]``)
        is required, and ``state_out`` comes back.
        """
        obs = obs_to_tensor(np.asarray(batch["obs"]), self.observation_space)
        with torch.no_grad():
            if not self.recurrent:
                features, vf_preds = self.pi_enc(obs), self.value(obs)
                extra = {}
            else:
                if "state_in" not in batch:
                    raise ValueError("a recurrent module (use_lstm) needs batch['state_in']")
                state = batch["state_in"]
                h, c = self.lstm(
                    self.pi_enc(obs),
                    (torch.as_tensor(state["h"]), torch.as_tensor(state["c"])),
                )
                features, vf_preds = h, self.vf(h).squeeze(-1)
                extra = {"state_out": {"h": h, "c": c}}
            out = self.pi(features)
            if not self.discrete:
                out = torch.cat([out, self.log_std.expand_as(out)], -1)
            return {"action_dist_inputs": out, "vf_preds": vf_preds, **extra}

    forward_exploration = forward_inference

    def act(
        self,
        obs: Any,
        explore: bool,
        rng: np.random.Generator,
        state: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Actions for a batch of observations, and their log-probabilities.

        The same numpy ``PPOActor`` the env runners act with (kept in sync with these
        weights): the same math as ``logp_entropy``, sampled with the caller's ``rng``.
        A recurrent module needs ``state`` and returns the next one as ``state_out``.
        """
        sync_actor(self, self.actor)
        return self.actor.act(obs, explore, rng, state=state)


# --- 3. advantages ------------------------------------------------------------------------


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    *,
    gamma: float,
    lambda_: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE over ``[T, N]`` arrays; returns (advantages, value targets).

    ``next_values`` are the values of the true next observations, so a truncated episode
    (and the end of the fragment) bootstraps from V(s'), while a terminated one does not.
    The recursion stops at every episode end (terminated or truncated).
    """
    deltas = rewards + gamma * next_values * (1.0 - terminateds) - values
    not_done = 1.0 - np.logical_or(terminateds, truncateds)
    advantages = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * lambda_ * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


# --- 4. loss ------------------------------------------------------------------------------


def ppo_loss(
    module: ActorCritic,
    mb: dict[str, torch.Tensor],
    config: PPOConfig,
    *,
    entropy_coeff: float,
    kl_coeff: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective, value loss, entropy bonus (and KL penalty) on a minibatch.

    With ``use_kl_loss`` the loss adds ``kl_coeff * KL(behaviour || current)``, estimated
    from the sampled actions' log-ratio with the low-variance k3 estimator; ``kl_coeff``
    adapts after each iteration (``PPO.training_step``).

    ``mb["action_logp"]`` is the log-probability under the policy that *sampled* the batch
    (the behaviour policy), so the ratio is an importance ratio against it, also when that
    policy is an iteration older than the learner's (``sample_ahead``). The stats come back
    as detached tensors: the learner sums them over the minibatches and converts once.
    """
    logp, entropy, values = module.forward_train(mb)
    log_ratio = logp - mb["action_logp"].reshape(-1)
    ratio = log_ratio.exp()
    adv = mb["advantages"].reshape(-1)  # standardized over the whole batch (``postprocess``)
    # Sequences (use_lstm) are padded to max_seq_len: padded steps count for nothing.
    mask = mb["mask"].reshape(-1) if "mask" in mb else None

    def mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean() if mask is None else (x * mask).sum() / mask.sum()

    if not entropy_coeff:
        entropy = entropy.detach()  # only a statistic then: no backward through it
    surrogate = torch.min(
        ratio * adv, ratio.clamp(1 - config.clip_param, 1 + config.clip_param) * adv
    )
    policy_loss = -mean(surrogate)
    vf_err = (values - mb["value_targets"].reshape(-1)) ** 2
    if config.vf_clip_param is not None:
        vf_err = vf_err.clamp(max=config.vf_clip_param)
    vf_loss = mean(vf_err)  # Ray's: the mean squared error, without a factor 1/2
    entropy = mean(entropy)
    kl = mean((ratio - 1) - log_ratio)  # the low-variance k3 estimator
    loss = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy
    if config.use_kl_loss:
        loss = loss + kl_coeff * kl
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "vf_loss": vf_loss.detach(),
            "entropy": entropy.detach(),
            "mean_kl_loss": kl.detach(),
            "clip_fraction": mean(((ratio - 1).abs() > config.clip_param).float()),
        }
    return loss, stats


def run_epochs(
    module: ActorCritic,
    learner: TorchLearner,
    data: dict[str, torch.Tensor],
    *,
    config: PPOConfig,
    rng: np.random.Generator,
    minibatch_size: int,
    entropy_coeff: float,
    kl_coeff: float,
) -> tuple[torch.Tensor, int]:
    """``num_epochs`` passes over shuffled minibatches of ``data``; returns the summed stats
    (``_STAT_NAMES`` and the gradient norm) and the number of updates.

    One gather per column and epoch, then each minibatch is a slice (a view); stats stay
    tensors until the end. Rows are steps, or sequences of ``max_seq_len`` steps with an
    LSTM (``minibatch_size`` counts steps either way).
    """
    size = len(data["advantages"])
    per_row = module.max_seq_len if module.recurrent else 1
    mb_size = min(max(1, minibatch_size // per_row), size)
    device = data["advantages"].device  # a learner actor's GPU, or the CPU
    totals = torch.zeros(len(_STAT_NAMES) + 1, device=device)
    num_updates = 0
    for _epoch in range(config.num_epochs):
        order = torch.from_numpy(rng.permutation(size)).to(device)
        shuffled = {k: v[order] for k, v in data.items()}
        for start in range(0, size - mb_size + 1, mb_size):
            mb = {k: v[start : start + mb_size] for k, v in shuffled.items()}
            loss, mb_stats = ppo_loss(
                module, mb, config, entropy_coeff=entropy_coeff, kl_coeff=kl_coeff
            )
            grad_norm = learner.update(loss)
            totals += torch.stack([*mb_stats.values(), grad_norm])
            num_updates += 1
    return totals, num_updates


# --- 5. the algorithm ---------------------------------------------------------------------


class PPO(Algorithm):
    """Proximal Policy Optimization on Discrete or Box actions.

    Example::

        algo = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=2).build()
        for _ in range(20):
            print(algo.train()["env_runners"]["episode_return_mean"])
    """

    config_class = PPOConfig
    supports_box_actions = True
    config: PPOConfig

    def build_module(self, observation_space: Any, action_space: Any) -> tuple[Any, Any, Any]:
        """One module for these spaces: (torch module, runners' policy ctor, learner)."""
        c = self.config
        spec = (observation_space, action_space, dict(c.model))
        build = functools.partial(seeded_init, c.seed, functools.partial(ActorCritic, *spec))
        module = build()
        actor_ctor = functools.partial(PPOActor, *spec)  # the env runners' policy
        learner = TorchLearner(module, self.current_lr(), c.grad_clip)
        if c.num_learners:  # data-parallel learner actors, each with a copy of the module
            from runtime.rllib._learner_group import LearnerGroup

            return module, actor_ctor, LearnerGroup(learner, build, c)
        return module, actor_ctor, learner

    def setup(self) -> None:
        self.curr_kl_coeffs: dict[str, float] = {}  # per module, with use_kl_loss
        super().setup()  # build_module, once or per module

    def training_step(self) -> dict[str, Any]:
        c = self.config
        lr = self.current_lr()
        self.learner.set_lr(lr)  # a schedule, or Tune's PBT, may have changed it
        entropy_coeff = scheduled(c.entropy_coeff, self.num_env_steps_sampled_lifetime)
        batches = self.sample(c.get_rollout_fragment_length())
        if not self.is_multi_agent:
            return self.update_module(
                DEFAULT_MODULE_ID, self.module, self.learner, batches, lr, entropy_coeff
            )
        # Multi-agent: each trained module learns from its agents' trajectories (a batch per
        # runner, grouped by trajectory piece).
        return {
            mid: self.update_module(
                mid, self.modules[mid], self.learner.learners[mid], chunks, lr, entropy_coeff
            )
            for mid in self.modules_to_train()
            if (chunks := [chunk for b in batches for chunk in b["modules"].get(mid, [])])
        }

    def update_module(  # noqa: PLR0917 -- the module, its learner, its data, two coefficients
        self,
        module_id: str,
        module: ActorCritic,
        learner: TorchLearner,
        batches: list[dict[str, Any]],
        lr: float,
        entropy_coeff: float,
    ) -> dict[str, Any]:
        """GAE on ``batches``, then ``num_epochs`` passes of shuffled minibatches."""
        c = self.config
        data = (self.postprocess_sequences if module.recurrent else self.postprocess)(
            batches, module
        )
        vf_preds = data.pop("vf_preds")
        kl_coeff = self.curr_kl_coeffs.setdefault(module_id, float(c.kl_coeff))

        # Here, or split among the learner actors (.learners(num_learners=N)).
        totals, num_updates = learner.run(
            run_epochs,
            data,
            config=c,
            rng=self._rng,
            minibatch_size=c.minibatch_size,
            entropy_coeff=entropy_coeff,
            kl_coeff=kl_coeff,
        )
        stat_names = (*_STAT_NAMES, "grad_norm")
        valid = data["mask"].reshape(-1) > 0 if module.recurrent else slice(None)
        targets = data["value_targets"].reshape(-1)[valid]
        num_steps = len(targets)
        self.num_env_steps_trained_lifetime += num_steps * c.num_epochs

        out = dict(zip(stat_names, (totals / max(1, num_updates)).tolist(), strict=True))
        var = float(targets.var())
        resid = float((targets - vf_preds.reshape(-1)[valid]).var())
        out["vf_explained_var"] = 1.0 - resid / var if var else 0.0
        out["curr_lr"] = lr
        out["curr_entropy_coeff"] = entropy_coeff
        if c.use_kl_loss:
            # Ray's adaptive KL coefficient: grow it when the policy moved too far, shrink it
            # when it barely moved.
            if out["mean_kl_loss"] > 2.0 * c.kl_target:
                kl_coeff *= 1.5
            elif out["mean_kl_loss"] < 0.5 * c.kl_target:
                kl_coeff *= 0.5
            self.curr_kl_coeffs[module_id] = kl_coeff
            out["curr_kl_coeff"] = kl_coeff
        out["num_env_steps_trained"] = num_steps
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"curr_kl_coeffs": dict(self.curr_kl_coeffs)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.curr_kl_coeffs = dict(state.get("curr_kl_coeffs", {}))

    def postprocess(
        self, batches: list[dict[str, Any]], module: ActorCritic
    ) -> dict[str, torch.Tensor]:
        """The runners' ``[T, N]`` batches as one flat batch of tensors, with GAE.

        Values (for GAE) come from the learner's current weights. The behaviour log-probs:
        with synchronous sampling the learner's weights right now are the ones that sampled
        the batch, so they are recomputed here in torch (which keeps a seeded run repeatable
        bit for bit); with ``sample_ahead`` the batch was sampled with the previous
        iteration's weights, and the log-probs the runners recorded while acting are used.
        """
        c = self.config
        space = module.observation_space
        columns: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("obs", "actions", "advantages", "value_targets", "action_logp", "vf_preds")
        }
        for b in batches:
            t, n = b["rewards"].shape
            with torch.no_grad():
                flat_obs = obs_to_tensor(b["obs"].reshape(t * n, *b["obs"].shape[2:]), space)
                flat_next = obs_to_tensor(
                    b["next_obs"].reshape(t * n, *b["next_obs"].shape[2:]), space
                )
                values = module.value(flat_obs).numpy().reshape(t, n)
                next_values = module.value(flat_next).numpy().reshape(t, n)
            # A multi-agent batch's trajectory pieces end at ``chunk_ends`` too: the
            # recursion stops there, and the value of the true next observation bootstraps.
            cuts = b["truncateds"] | b["chunk_ends"] if "chunk_ends" in b else b["truncateds"]
            adv, targets = compute_gae(
                b["rewards"],
                values,
                next_values,
                b["terminateds"].astype(np.float32),
                cuts.astype(np.float32),
                gamma=c.gamma,
                lambda_=c.lambda_,
            )
            columns["obs"].append(flat_obs.numpy())
            columns["actions"].append(b["actions"].reshape(t * n, *b["actions"].shape[2:]))
            columns["advantages"].append(adv.reshape(-1))
            columns["value_targets"].append(targets.reshape(-1))
            columns["vf_preds"].append(values.reshape(-1))
            columns["action_logp"].append(b["action_logp"].reshape(-1))
        if c.normalize_advantages:
            # Over the whole train batch, as Ray's GAE connector does (std floored at 1e-4).
            adv = np.concatenate(columns["advantages"])
            columns["advantages"] = [(adv - adv.mean()) / max(1e-4, float(adv.std()))]
        data = {k: torch.as_tensor(np.concatenate(v)) for k, v in columns.items() if v}
        actions = data["actions"]
        data["actions"] = actions.long() if module.discrete else actions.float()
        if not c.sample_ahead:
            with torch.no_grad():
                data["action_logp"] = module.logp_entropy(data["obs"], data["actions"])[0]
        return data

    def postprocess_sequences(
        self, batches: list[dict[str, Any]], module: ActorCritic
    ) -> dict[str, torch.Tensor]:
        """``postprocess`` for a recurrent module: the batch as ``[S, max_seq_len]`` sequences.

        Each env's column of a runner's ``[T, N]`` batch is cut into sequences of
        ``max_seq_len`` steps (the last one zero-padded, ``mask`` 0 there); a sequence starts
        from the LSTM state its first step was acted with (``state_in_h/c``, recorded by the
        runner) and zeroes the state where an episode began inside it (``starts``), so an
        episode may span sequences and a sequence episodes. Values for GAE come from the
        LSTM unrolled over the sequences; V(s') of a step from one more LSTM step on its
        ``next_obs``, from the state after the step.
        """
        c = self.config
        length, space = module.max_seq_len, module.observation_space
        columns: dict[str, list[np.ndarray]] = {}
        for b in batches:
            t, n = b["rewards"].shape
            seqs = {
                "obs": _flat_obs(b["obs"], space),
                "next_obs": _flat_obs(b["next_obs"], space),
                "actions": b["actions"],
                "action_logp": b["action_logp"],
                "starts": b["starts"],
                "mask": np.ones((t, n), np.float32),
            }
            seq = {k: to_sequences(v, length) for k, v in seqs.items()}
            seq["state_h"] = to_sequences(b["state_in_h"], length)[:, 0]
            seq["state_c"] = to_sequences(b["state_in_c"], length)[:, 0]
            tensors = {k: torch.as_tensor(v) for k, v in seq.items()}
            with torch.no_grad():
                feats, hs, cs = module.unroll(
                    tensors["obs"], tensors["starts"], tensors["state_h"], tensors["state_c"]
                )
                values = module.vf(feats).squeeze(-1).numpy()
                cell = module.cell_size
                num = feats.shape[0] * length
                next_x = module.pi_enc(tensors["next_obs"].reshape(num, -1))
                next_h, _ = module.lstm(next_x, (hs.reshape(num, cell), cs.reshape(num, cell)))
                next_values = module.vf(next_h).squeeze(-1).numpy().reshape(-1, length)
            adv, targets = compute_gae(
                b["rewards"],
                from_sequences(values, t, n),
                from_sequences(next_values, t, n),
                b["terminateds"].astype(np.float32),
                b["truncateds"].astype(np.float32),
                gamma=c.gamma,
                lambda_=c.lambda_,
            )
            seq["advantages"] = to_sequences(adv, length)
            seq["value_targets"] = to_sequences(targets, length)
            seq["vf_preds"] = values
            del seq["next_obs"]
            for k, v in seq.items():
                columns.setdefault(k, []).append(v)
        data = {k: np.concatenate(v) for k, v in columns.items()}
        if c.normalize_advantages:
            valid = data["mask"] > 0
            adv = data["advantages"]
            adv_valid = adv[valid]
            std = max(1e-4, float(adv_valid.std()))
            data["advantages"] = np.where(valid, (adv - adv_valid.mean()) / std, 0.0)
        out = {k: torch.as_tensor(v) for k, v in data.items()}
        out["actions"] = out["actions"].long() if module.discrete else out["actions"].float()
        out["advantages"] = out["advantages"].float()
        if not c.sample_ahead:
            with torch.no_grad():
                out["action_logp"] = module.forward_train(out)[0].reshape(out["mask"].shape)
        return out


def _flat_obs(obs: np.ndarray, space: Any) -> np.ndarray:
    """``[T, N, ...]`` observations encoded as ``[T, N, obs_size]`` float32."""
    t, n = obs.shape[:2]
    return obs_to_tensor(obs.reshape(t * n, *obs.shape[2:]), space).numpy().reshape(t, n, -1)


def to_sequences(x: np.ndarray, length: int) -> np.ndarray:
    """``[T, N, ...]`` time-major columns as ``[N * ceil(T / length), length, ...]``
    sequences: each env's column cut in order, the last piece zero-padded."""
    t, n = x.shape[:2]
    pad = (-t) % length
    cols = np.swapaxes(x, 0, 1)
    if pad:
        cols = np.concatenate([cols, np.zeros((n, pad, *x.shape[2:]), x.dtype)], axis=1)
    return cols.reshape(n * (t + pad) // length, length, *x.shape[2:])


def from_sequences(x: np.ndarray, t: int, n: int) -> np.ndarray:
    """The inverse of ``to_sequences``: ``[S, length, ...]`` back to ``[T, N, ...]``."""
    return np.swapaxes(x.reshape(n, -1, *x.shape[2:])[:, :t], 0, 1)


_STAT_NAMES = ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "clip_fraction")


PPOConfig.algo_class = PPO
