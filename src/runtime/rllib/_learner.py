"""The torch side shared by the algorithms: MLPs, observation encoding, weights, the optimizer.

Everything here imports torch at module import, so only the env runners, the learner and
the algorithm files import this module (``import runtime`` never does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "NumpyMLP",
    "TorchLearner",
    "get_module_weights",
    "mlp",
    "obs_size",
    "obs_to_numpy",
    "obs_to_tensor",
]


def obs_size(space: Any) -> int:
    """Width of the encoded observation: a Box flattened, a Discrete one-hot."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return int(space.n)
    return int(np.prod(space.shape))


def obs_to_tensor(obs: Any, space: Any) -> torch.Tensor:
    """A float32 batch ``[B, obs_size]`` from a batch of observations."""
    from gymnasium import spaces

    arr = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        index = torch.as_tensor(arr.astype(np.int64).reshape(-1) - int(space.start))
        return nn.functional.one_hot(index, int(space.n)).to(torch.float32)
    flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(arr.shape[0], -1)
    return torch.from_numpy(flat.copy())


def obs_to_numpy(obs: Any, space: Any) -> np.ndarray:
    """:func:`obs_to_tensor` in numpy (for acting in env runners)."""
    from gymnasium import spaces

    arr = np.asarray(obs)
    if isinstance(space, spaces.Discrete):
        index = arr.astype(np.int64).reshape(-1) - int(space.start)
        return np.eye(int(space.n), dtype=np.float32)[index]
    return np.asarray(arr, dtype=np.float32).reshape(arr.shape[0], -1)


class NumpyMLP:
    """An inference-only numpy copy of an :func:`mlp`, refreshed when its weights change.

    Env runners act once per env step on a handful of observations; at that size torch's
    per-operation overhead costs several times the arithmetic, so acting runs in numpy. The
    copy is rebuilt whenever a parameter's version counter moves (``load_state_dict`` and
    optimizer steps update parameters in place, which bumps it).
    """

    def __init__(self, seq: nn.Sequential):
        self.seq = seq
        self.params = list(seq.parameters())
        self.key: tuple[int, ...] = ()
        self.layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []

    def _refresh(self) -> None:
        key = tuple(p._version for p in self.params)
        if key == self.key:
            return
        modules = list(self.seq)
        layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
        for i, m in enumerate(modules):
            if isinstance(m, nn.Linear):
                nxt = modules[i + 1] if i + 1 < len(modules) else None
                act = (
                    "tanh"
                    if isinstance(nxt, nn.Tanh)
                    else "relu"
                    if isinstance(nxt, nn.ReLU)
                    else None
                )
                w = m.weight.detach().numpy().T.copy()
                layers.append((w, m.bias.detach().numpy().copy(), act))
        self.layers, self.key = layers, key

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._refresh()
        for w, b, act in self.layers:
            # einsum, not BLAS: BLAS kernels may round differently with the buffers'
            # alignment, which would break "same seed, same results".
            x = np.einsum("bi,io->bo", x, w) + b
            if act == "tanh":
                x = np.tanh(x)
            elif act == "relu":
                x = np.maximum(x, 0.0)
        return x


def mlp(
    in_size: int,
    hiddens: list[int],
    out_size: int,
    activation: str = "tanh",
    out_gain: float = 1.0,
) -> nn.Sequential:
    """Linear layers with orthogonal init (CleanRL's ``layer_init``): hidden gain sqrt(2)."""
    act: type[nn.Module] = nn.Tanh if activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    size = in_size
    for h in hiddens:
        layers += [_layer(size, h, math.sqrt(2)), act()]
        size = h
    layers.append(_layer(size, out_size, out_gain))
    return nn.Sequential(*layers)


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def get_module_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict as numpy arrays (what travels through the object store)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def set_module_weights(module: nn.Module, weights: dict[str, Any]) -> None:
    """Load weights from :func:`get_module_weights` (copies: store arrays are read-only)."""
    module.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})


def seeded_init(seed: int | None, build: Any) -> Any:
    """``build()`` with torch's global RNG seeded, leaving that RNG as it was."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class TorchLearner:
    """Adam on a module, with global-norm gradient clipping; one ``update(loss)`` per minibatch.

    Written for many small updates (PPO: 10 epochs x 16 minibatches of 128 per iteration on
    64x64 MLPs), where per-call overhead, not arithmetic, is the cost: one thread (measured
    faster than two for these matmuls, and the cores are shared with the env runners),
    torch's *fused* CPU Adam (one kernel for every parameter instead of a chain of
    multi-tensor ops; ``foreach`` where fused is unavailable), a ``foreach`` norm for
    clipping, and ``update`` returns the gradient norm as a tensor so that the loop never
    waits on a Python float.
    """

    def __init__(self, module: nn.Module, lr: float, grad_clip: float | None):
        torch.set_num_threads(1)
        self.module = module
        self.grad_clip = grad_clip
        self.params = [p for p in module.parameters() if p.requires_grad]
        try:
            self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=1e-5, fused=True)
        except (RuntimeError, ValueError):  # a torch without fused CPU Adam
            self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=1e-5, foreach=True)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """One gradient step on ``loss``; returns the gradient norm before clipping (a tensor)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.params if p.grad is not None]
        if self.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
        else:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self.optimizer.step()
        return norm.detach()

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_module_weights(self.module)

    def set_weights(self, weights: dict[str, Any]) -> None:
        set_module_weights(self.module, weights)

    def get_state(self) -> dict[str, Any]:
        return {"weights": self.get_weights(), "optimizer": self.optimizer.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
