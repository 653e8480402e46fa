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
    "LearnerSet",
    "TorchLearner",
    "cnn",
    "flatten_parameters",
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


def cnn(observation_space: Any, filters: list[Any]) -> tuple[nn.Sequential, int]:
    """Conv layers (Ray's ``conv_filters``: ``[out_channels, kernel, stride]`` each; valid
    padding, ReLU) over ``[B, H, W, C]`` images, flattened; and the output width."""
    shape = getattr(observation_space, "shape", None) or ()
    if len(shape) != 3:
        raise ValueError(
            f"conv_filters need image observations (a [H, W, C] Box), got {observation_space}"
        )
    height, width, channels = (int(d) for d in shape)
    layers: list[nn.Module] = [_ChannelsFirst(height, width, channels)]
    for out_channels, kernel, stride in filters:
        k = int(kernel[0] if isinstance(kernel, list | tuple) else kernel)
        conv = nn.Conv2d(channels, int(out_channels), k, int(stride))
        nn.init.orthogonal_(conv.weight, math.sqrt(2))
        nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # Conv2d(bias=True) has one
        layers += [conv, nn.ReLU()]
        channels = int(out_channels)
        height, width = (height - k) // int(stride) + 1, (width - k) // int(stride) + 1
        if height < 1 or width < 1:
            raise ValueError(f"conv_filters {filters} shrink {observation_space.shape} to nothing")
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels * height * width


class _ChannelsFirst(nn.Module):
    """Flattened ``[B, H*W*C]`` observations (``obs_to_tensor``) back to ``[B, C, H, W]``."""

    def __init__(self, height: int, width: int, channels: int):
        super().__init__()
        self.shape = (height, width, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape).permute(0, 3, 1, 2)


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

    Written for many small updates (PPO: 10 epochs x 15 minibatches of 128 per iteration on
    64x64 MLPs), where per-call overhead, not arithmetic, is the cost. So the module's
    parameters live in **one flat buffer** and their gradients in another: every parameter's
    data and ``.grad`` are views into them (backward accumulates into the views in place),
    and zeroing, the global gradient norm, clipping and the Adam step are each a few
    whole-buffer operations instead of a pass over a dozen tensors through
    ``torch.optim``'s machinery (measured: 0.14 s against 0.17-0.28 s with torch's fused
    Adam for the 150 updates of a PPO iteration). The step is exactly ``torch.optim.Adam``'s
    (no weight decay, no amsgrad; tested against it). One torch thread: the cores are
    shared with the env runners, and two are no faster at this size. ``update`` returns the
    gradient norm as a tensor, so the loop never waits on a Python float.
    """

    betas = (0.9, 0.999)
    eps = 1e-5  # CleanRL's (torch's default is 1e-8)

    def __init__(self, module: nn.Module, lr: float, grad_clip: float | None):
        torch.set_num_threads(1)
        self.module = module
        self.lr = float(lr)
        self.grad_clip = grad_clip
        self.params = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.flat_grad = torch.zeros_like(self.flat)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = 0
        #: With ``.learners(num_learners=N)``: the process group (gloo, or nccl between GPU
        #: learners) whose ranks' gradients are averaged before every step
        #: (``_learner_group``), and its size.
        self.process_group: Any = None
        self.world_size = 1
        #: A host buffer the gradient is all-reduced in when the group cannot take the
        #: module's device (gloo with a GPU learner); None: in place.
        self.host_grad: torch.Tensor | None = None
        self.slices: list[slice] = []
        offset = 0
        for p in self.params:
            self.slices.append(slice(offset, offset + p.numel()))
            offset += p.numel()
        self._link()

    def _link(self) -> None:
        """Point every parameter's data and ``.grad`` at its slice of the flat buffers."""
        for p, part in zip(self.params, self.slices, strict=True):
            p.data = self.flat[part].view_as(p)
            p.grad = self.flat_grad[part].view_as(p)
        self._grads = [p.grad for p in self.params]

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """One gradient step on ``loss``; returns the gradient norm before clipping (a tensor)."""
        if any(p.grad is not g for p, g in zip(self.params, self._grads, strict=True)):
            self._link()  # someone replaced a .grad (e.g. module.zero_grad()): views again
        self.flat_grad.zero_()
        loss.backward()
        grad = self.flat_grad
        if self.process_group is not None:
            # Data-parallel: every learner takes the same step with the mean gradient.
            if self.host_grad is None:
                self.process_group.allreduce([grad]).wait()
            else:  # a GPU learner in a gloo group: the sum goes through a host copy
                self.host_grad.copy_(grad)
                self.process_group.allreduce([self.host_grad]).wait()
                grad.copy_(self.host_grad)
            grad.div_(self.world_size)
        norm = torch.linalg.vector_norm(grad)
        if self.grad_clip is not None:
            grad.mul_((self.grad_clip / (norm + 1e-6)).clamp(max=1.0))
        # Adam, as torch.optim.Adam computes it.
        beta1, beta2 = self.betas
        self.step_count += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**self.step_count
        bias2 = 1 - beta2**self.step_count
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(self.eps)
        with torch.no_grad():
            self.flat.addcdiv_(self.exp_avg, denom, value=-self.lr / bias1)
        # The parameters changed through the flat buffer, which does not move their own
        # version counters; move them, so that numpy copies (sync_actor) see the change.
        torch.autograd.graph.increment_version(self.params)
        return norm

    def run(self, fn: Any, data: dict[str, Any], **kwargs: Any) -> Any:
        """``fn(module, learner, data, **kwargs)``: the algorithm's update loop, here (a
        ``LearnerGroup`` runs it on shards of ``data`` in its learner actors instead)."""
        return fn(self.module, self, data, **kwargs)

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_module_weights(self.module)

    def set_weights(self, weights: dict[str, Any]) -> None:
        set_module_weights(self.module, weights)

    def get_state(self) -> dict[str, Any]:
        return {
            "weights": self.get_weights(),
            "optimizer": {
                "adam": {
                    "step": self.step_count,
                    "exp_avg": self.exp_avg.cpu().numpy().copy(),
                    "exp_avg_sq": self.exp_avg_sq.cpu().numpy().copy(),
                }
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_weights(state["weights"])
        optimizer = state["optimizer"]
        if "adam" in optimizer:
            adam = optimizer["adam"]
            self.step_count = int(adam["step"])
            self.exp_avg.copy_(torch.as_tensor(np.array(adam["exp_avg"])))
            self.exp_avg_sq.copy_(torch.as_tensor(np.array(adam["exp_avg_sq"])))
            return
        # A checkpoint written with torch.optim.Adam (its state_dict: per-parameter state).
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        for index, part in enumerate(self.slices):
            param_state = optimizer["state"].get(index)
            if param_state:
                self.step_count = int(param_state["step"])
                self.exp_avg[part] = param_state["exp_avg"].reshape(-1)
                self.exp_avg_sq[part] = param_state["exp_avg_sq"].reshape(-1)


def flatten_parameters(module: nn.Module) -> torch.Tensor:
    """One flat buffer holding ``module``'s parameters (each becomes a view into it).

    For a frozen copy such as a target network: moving it toward its online twin is then a
    single ``lerp_`` on two flat buffers (the twin's ``TorchLearner.flat``), provided both
    list their parameters in the same order.
    """
    params = list(module.parameters())
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        p.requires_grad_(False)
        offset += p.numel()
    return flat


class LearnerSet:
    """Several ``TorchLearner`` s on parts of one module, one optimizer each (SAC: actor,
    critics, entropy temperature), seen by the ``Algorithm`` as one learner.

    Weights are the whole module's state dict; state holds each part's optimizer. ``set_lr``
    does nothing: each part's learning rate is set by the algorithm at every step.
    """

    def __init__(self, module: nn.Module, parts: dict[str, TorchLearner]):
        self.module = module
        self.parts = parts

    def set_lr(self, lr: float) -> None:
        del lr

    def get_weights(self) -> dict[str, np.ndarray]:
        return get_module_weights(self.module)

    def set_weights(self, weights: dict[str, Any]) -> None:
        set_module_weights(self.module, weights)

    def get_state(self) -> dict[str, Any]:
        return {
            "weights": self.get_weights(),
            "parts": {name: part.get_state()["optimizer"] for name, part in self.parts.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_weights(state["weights"])
        for name, part in self.parts.items():
            part.set_state({"weights": part.get_weights(), "optimizer": state["parts"][name]})
