"""Torch-free policies: what the env runners act with (the algorithms' MLPs, in numpy).

Runners act once per env step on a handful of observations. At that size torch's
per-operation overhead costs several times the arithmetic, so acting runs in numpy; and a
runner that never touches torch does not import it either, which is most of the time it
takes to start (``import torch`` is about two seconds here, per process). The learner's
torch modules (``ppo.ActorCritic``, ``dqn.QNetwork``) act through these same classes, so a
runner and ``compute_single_action`` compute the same actions from the same weights.

Weights arrive as the learner's state dict in numpy (``{"pi.0.weight": ..., ...}``): an
MLP built by ``_learner.mlp`` is a ``Sequential`` of Linear layers with an activation after
every hidden one, so layer ``i`` of ``prefix`` is ``{prefix}.{i}.weight`` / ``.bias``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DQNActor",
    "NumpyCNN",
    "NumpyLSTMCell",
    "NumpyMLP",
    "PPOActor",
    "SACActor",
    "obs_to_numpy",
]


def obs_to_numpy(obs: Any, space: Any) -> np.ndarray:
    """A float32 batch ``[B, obs_size]``: a Box flattened, a Discrete one-hot."""
    from gymnasium import spaces

    arr = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        index = arr.astype(np.int64).reshape(-1) - int(space.start)
        return np.eye(int(space.n), dtype=np.float32)[index]
    return np.asarray(arr, dtype=np.float32).reshape(arr.shape[0], -1)


class NumpyMLP:
    """The forward pass of an ``_learner.mlp`` in numpy, from its state dict's arrays."""

    def __init__(self, activation: str):
        self.activation = activation
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []

    def load(self, weights: dict[str, Any], prefix: str) -> None:
        """Take layers ``{prefix}.{i}.weight`` / ``.bias`` (copies: store arrays are read-only)."""
        indices = sorted({int(k.split(".")[1]) for k in weights if k.startswith(prefix + ".")})
        if not indices:
            raise KeyError(f"no {prefix!r} layers in the weights ({', '.join(weights)})")
        self.layers = [
            (
                np.array(weights[f"{prefix}.{i}.weight"], dtype=np.float32).T.copy(),
                np.array(weights[f"{prefix}.{i}.bias"], dtype=np.float32),
            )
            for i in indices
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.layers:
            raise RuntimeError("the policy has no weights yet: call set_weights first")
        last = len(self.layers) - 1
        for j, (w, b) in enumerate(self.layers):
            # einsum, not BLAS: BLAS kernels may round differently with the buffers'
            # alignment, which would break "same seed, same results".
            x = np.einsum("bi,io->bo", x, w) + b
            if j < last:
                x = np.tanh(x) if self.activation == "tanh" else np.maximum(x, 0.0)
        return x


class NumpyCNN:
    """The forward pass of an ``_learner.cnn`` in numpy: valid convolutions + ReLU, flattened.

    Input ``[B, H, W, C]`` (channels last, as gymnasium images); layer ``i`` of ``prefix`` is
    ``{prefix}.{i}.weight`` ``[out, in, k, k]`` / ``.bias`` with its stride from ``strides``.
    """

    def __init__(self, strides: list[int]):
        self.strides = strides
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []

    def load(self, weights: dict[str, Any], prefix: str) -> None:
        indices = sorted(
            {int(k.split(".")[1]) for k in weights if k.startswith(prefix + ".") and "weight" in k}
        )
        self.layers = [
            (
                np.array(weights[f"{prefix}.{i}.weight"], dtype=np.float32),
                np.array(weights[f"{prefix}.{i}.bias"], dtype=np.float32),
            )
            for i in indices
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.layers:
            raise RuntimeError("the policy has no weights yet: call set_weights first")
        x = np.asarray(x, dtype=np.float32).transpose(0, 3, 1, 2)  # NHWC -> NCHW
        for (w, b), stride in zip(self.layers, self.strides, strict=True):
            k = w.shape[-1]
            windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
            windows = windows[:, :, ::stride, ::stride]  # [B, C, H', W', k, k]
            x = np.einsum("bchwij,ocij->bohw", windows, w) + b[None, :, None, None]
            x = np.maximum(x, 0.0)
        return x.reshape(x.shape[0], -1)


class NumpyLSTMCell:
    """The step of a ``torch.nn.LSTMCell`` in numpy (gates in torch's order: i, f, g, o)."""

    def __init__(self) -> None:
        self.w = np.zeros((0, 0), dtype=np.float32)
        self.b = np.zeros(0, dtype=np.float32)
        self.input_size = 0

    def load(self, weights: dict[str, Any], prefix: str) -> None:
        w_ih = np.array(weights[f"{prefix}.weight_ih"], dtype=np.float32)
        w_hh = np.array(weights[f"{prefix}.weight_hh"], dtype=np.float32)
        self.input_size = w_ih.shape[1]
        self.w = np.concatenate([w_ih, w_hh], axis=1).T.copy()  # [in + H, 4H]
        self.b = np.array(weights[f"{prefix}.bias_ih"], dtype=np.float32) + np.array(
            weights[f"{prefix}.bias_hh"], dtype=np.float32
        )

    def __call__(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.w.size:
            raise RuntimeError("the policy has no weights yet: call set_weights first")
        gates = np.einsum("bi,io->bo", np.concatenate([x, h], axis=1), self.w) + self.b
        i, f, g, o = np.split(gates, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return (_sigmoid(o) * np.tanh(c)).astype(np.float32), c.astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def encoded_obs(obs: Any, space: Any, encoder: NumpyCNN | None) -> np.ndarray:
    """The observation batch as the policy MLP's input (through the CNN for images)."""
    if encoder is None:
        return obs_to_numpy(obs, space)
    return encoder(np.asarray(obs, dtype=np.float32))


class PPOActor:
    """PPO's policy head: categorical for Discrete actions, Gaussian for Box actions.

    ``act`` samples with the caller's ``rng`` and returns the actions' log-probabilities,
    which PPO's learner uses as the behaviour policy's with ``sample_ahead``.

    With ``use_lstm`` the policy is recurrent (``is_recurrent``): an LSTM cell between the
    encoder and the MLP head, whose state the caller keeps (``initial_state(n)``) and passes
    to ``act(..., state=...)``; ``act`` returns the next state as ``extras["state_out"]``.
    """

    def __init__(self, observation_space: Any, action_space: Any, model: dict[str, Any]):
        from gymnasium import spaces

        self.observation_space = observation_space
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.pi = NumpyMLP(model["fcnet_activation"])
        filters = model.get("conv_filters")
        self.pi_enc = NumpyCNN([f[2] for f in filters]) if filters else None
        self.log_std = np.zeros(0, dtype=np.float32)
        self.is_recurrent = bool(model.get("use_lstm"))
        self.cell_size = int(model.get("lstm_cell_size", 256))
        self.lstm = NumpyLSTMCell() if self.is_recurrent else None

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.pi.load(weights, "pi")
        if self.pi_enc is not None:
            self.pi_enc.load(weights, "pi_enc")
        if self.lstm is not None:
            self.lstm.load(weights, "lstm")
        if not self.discrete:
            self.log_std = np.array(weights["log_std"], dtype=np.float32)

    def initial_state(self, n: int) -> dict[str, np.ndarray]:
        """The recurrent state of ``n`` fresh episodes (zeros), as Ray's ``get_initial_state``."""
        zeros = np.zeros((n, self.cell_size), dtype=np.float32)
        return {"h": zeros, "c": zeros.copy()}

    def act(
        self,
        obs: Any,
        explore: bool,
        rng: np.random.Generator,
        state: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Actions for a batch of observations, and their log-probabilities."""
        features = encoded_obs(obs, self.observation_space, self.pi_enc)
        new_state: dict[str, np.ndarray] | None = None
        if self.lstm is not None:
            if state is None:
                raise ValueError("a recurrent policy (use_lstm) needs its state to act")
            h, c = self.lstm(features, state["h"], state["c"])
            features, new_state = h, {"h": h, "c": c}
        out = self.pi(features)
        if self.discrete:
            z = out - out.max(-1, keepdims=True)
            logp_all = z - np.log(np.exp(z).sum(-1, keepdims=True))
            if explore:
                cdf = np.exp(logp_all).cumsum(-1)
                u = rng.random((len(out), 1)) * cdf[:, -1:]
                actions = np.minimum((cdf < u).sum(-1), out.shape[-1] - 1)
            else:
                actions = out.argmax(-1)
            logp = logp_all[np.arange(len(actions)), actions]
        else:
            noise = rng.standard_normal(out.shape) if explore else np.zeros_like(out)
            actions = (out + np.exp(self.log_std) * noise).astype(np.float32)
            logp = (-0.5 * noise**2 - self.log_std - _HALF_LOG_2PI).sum(-1)
        extras: dict[str, Any] = {"action_logp": logp.astype(np.float32)}
        if new_state is not None:
            extras["state_out"] = new_state
        return actions, extras


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DQNActor:
    """DQN's epsilon-greedy policy over an MLP's Q-values (``dueling``: V + A - mean(A))."""

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        model: dict[str, Any],
        dueling: bool = False,
    ):
        self.dueling = dueling
        self.observation_space = observation_space
        self.num_actions = int(action_space.n)
        self.action_start = int(action_space.start)
        self.q = NumpyMLP(model["fcnet_activation"])

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.q.load(weights, "q")

    def act(
        self, obs: Any, explore: bool, rng: np.random.Generator, epsilon: float = 0.0
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy actions, each replaced by a uniform one with probability ``epsilon``."""
        q = self.q(obs_to_numpy(obs, self.observation_space))
        if self.dueling:
            q = q[:, 1:]  # V(s) shifts every action's Q alike: the argmax is A's
        actions = q.argmax(-1)
        if explore and epsilon > 0:
            n = len(actions)
            random = rng.integers(self.num_actions, size=n)
            actions = np.where(rng.random(n) < epsilon, random, actions)
        return actions + self.action_start, {}


class SACActor:
    """SAC's tanh-squashed Gaussian policy, scaled to the action space's bounds.

    The ``pi`` MLP gives the mean and log-std of a Gaussian over ``u``; the action is
    ``tanh(u)`` (the mean's ``tanh`` when not exploring) mapped from [-1, 1] onto
    ``[low, high]``. Only the ``pi.*`` weights are read (the runners never get the critics).
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, observation_space: Any, action_space: Any, model: dict[str, Any]):
        self.observation_space = observation_space
        self.low = np.asarray(action_space.low, dtype=np.float32)
        self.high = np.asarray(action_space.high, dtype=np.float32)
        self.pi = NumpyMLP(model["fcnet_activation"])

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.pi.load(weights, "pi")

    def act(
        self, obs: Any, explore: bool, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions in the env's bounds for a batch of observations."""
        out = self.pi(obs_to_numpy(obs, self.observation_space))
        mean, log_std = np.split(out, 2, axis=-1)
        if explore:
            log_std = np.clip(log_std, self.LOG_STD_MIN, self.LOG_STD_MAX)
            mean = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
        squashed = np.tanh(mean)
        actions = self.low + (squashed + 1.0) * 0.5 * (self.high - self.low)
        return actions.astype(np.float32), {}
