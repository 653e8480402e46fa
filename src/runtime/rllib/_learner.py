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
    "TorchLearner",
    "get_module_weights",
    "mlp",
    "obs_size",
    "obs_to_tensor",
    "sync_actor",
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


def sync_actor(module: nn.Module, actor: Any) -> None:
    """Give ``actor`` (a ``_numpy_policy`` policy) ``module``'s weights if they changed since.

    ``load_state_dict`` and optimizer steps update parameters in place, which moves their
    version counters; the actor is reloaded only when one moved.
    """
    key = tuple(p._version for p in module.parameters())
    if getattr(actor, "_synced_version", None) != key:
        actor.set_weights(get_module_weights(module))
        actor._synced_version = key


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
        """One gradient step on ``loss``; returns the gradient norm before clipping (a tensor).

        The global-norm clipping is ``clip_grad_norm_``'s arithmetic without its per-call
        checks (a fifth of an update's time at this size): one multi-tensor norm, one scale.
        """
        for p in self.params:
            p.grad = None
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.grad_clip is not None:
            torch._foreach_mul_(grads, (self.grad_clip / (norm + 1e-6)).clamp(max=1.0))
        self.optimizer.step()
        return norm

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_module_weights(self.module)

    def set_weights(self, weights: dict[str, Any]) -> None:
        set_module_weights(self.module, weights)

    def get_state(self) -> dict[str, Any]:
        return {"weights": self.get_weights(), "optimizer": self.optimizer.state_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
