"""Data-parallel learners: ``.learners(num_learners=N)`` runs N learner actors, each with a
copy of the module, that split every train batch and average their gradients.

The driver keeps its own copy of the module (the env runners' weights and the values for
GAE come from it). Each iteration it cuts the postprocessed batch into N equal shards (by
rows: steps, or sequences for an LSTM) and sends one to each learner actor, which runs the
algorithm's update loop (PPO's ``run_epochs``) on it with ``minibatch_size / N`` rows per
minibatch. Before each optimizer step every learner's ``TorchLearner`` all-reduces its flat
gradient buffer over a process group of its own and divides by N, so all N take the same
step from the same weights: the update is one learner's on the whole minibatch, up to the
order of the rows. Rank 0's weights come back to the driver.

The group is private (a ``torch.distributed`` process group over a ``TCPStore`` that rank 0
opens on its node's address), not torch's default process group, so learner actors may share
a process with each other or with Train ranks.

GPUs (``num_gpus_per_learner``): each learner actor asks for that many GPUs through the
actor options (``num_gpus``) and runs in a process of its own (``dedicated_process``, so
``CUDA_VISIBLE_DEVICES`` is its grant alone); its module, optimizer state and shards live
on ``cuda:0`` of what it sees. The group is **nccl** when every learner holds at least one
whole GPU (``learner_backend``), **gloo** otherwise: on CPU, and for fractional GPUs, where
two learners may share a device (NCCL refuses two ranks on one device); a GPU learner in a
gloo group all-reduces through a host copy of its gradient. A cluster with fewer GPUs than
``num_learners * num_gpus_per_learner`` raises ``InfeasibleError`` before any actor starts;
a learner granted a GPU that torch cannot see (a CPU build of torch, no driver) fails the
build with a ``RuntimeError`` saying so.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

import runtime

__all__ = ["LearnerGroup", "LearnerWorker", "learner_backend"]

#: Bound on joining the group and on each collective.
TIMEOUT_S = 120.0


def learner_backend(num_gpus_per_learner: float) -> str:
    """The ``torch.distributed`` backend of a learner group: nccl when every learner holds
    at least one whole GPU, gloo otherwise (CPU learners, or fractions of a GPU that two
    learners may share: NCCL refuses two ranks on one device)."""
    return "nccl" if float(num_gpus_per_learner) >= 1.0 else "gloo"


class LearnerWorker:
    """One learner actor: a module copy on its device, its ``TorchLearner``, a rank in the
    group (``backend``: "gloo" or "nccl", see ``learner_backend``)."""

    def __init__(  # noqa: PLR0917 -- what one rank of the group is made of
        self,
        build: bytes,
        lr: float,
        grad_clip: float | None,
        rank: int,
        world_size: int,
        num_gpus: float = 0.0,
        backend: str = "gloo",
    ):
        import torch

        from runtime.rllib._learner import TorchLearner

        torch.set_num_threads(1)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.device = torch.device("cpu")
        if num_gpus:
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"learner {rank} was granted GPU {runtime.get_gpu_ids()} "
                    f"(num_gpus_per_learner={num_gpus}) but torch sees no CUDA device "
                    f"(torch {torch.__version__}, torch.cuda.is_available() is False: a "
                    "CPU build of torch, or no driver). Use num_gpus_per_learner=0 here"
                )
            # The process is this actor's alone (dedicated_process): CUDA_VISIBLE_DEVICES
            # holds its grant, so its first GPU is cuda:0.
            self.device = torch.device("cuda", 0)
            torch.cuda.set_device(self.device)
        self.module = pickle.loads(build)().to(self.device)
        self.learner = TorchLearner(self.module, lr, grad_clip)
        if backend == "gloo" and self.device.type == "cuda":
            self.learner.host_grad = torch.empty_like(self.learner.flat_grad, device="cpu")
        self.store: Any = None

    def where(self) -> dict[str, Any]:
        """Where this learner runs: its device, backend, GPU ids and process."""
        return {
            "device": str(self.device),
            "backend": self.backend,
            "gpu_ids": runtime.get_gpu_ids(),
            "pid": os.getpid(),
            "param_device": str(next(self.module.parameters()).device),
        }

    def open_store(self) -> tuple[str, int]:
        """Rank 0: open the rendezvous store on this node's address; returns where it is."""
        from torch.distributed import TCPStore

        host = _node_address()
        self.store = TCPStore(
            host,
            0,
            self.world_size,
            True,
            timeout=datetime.timedelta(seconds=TIMEOUT_S),
            wait_for_workers=False,
        )
        return host, int(self.store.port)

    def join(self, host: str, port: int) -> int:
        """Join the group (blocks until every rank has); returns this rank."""
        from torch.distributed import TCPStore

        timeout = datetime.timedelta(seconds=TIMEOUT_S)
        if self.store is None:
            self.store = TCPStore(host, port, self.world_size, False, timeout=timeout)
        if self.backend == "nccl":
            self.learner.process_group = self._nccl_group(timeout)
        else:
            from torch.distributed import ProcessGroupGloo

            # torch's stubs do not list the options class the constructor takes.
            options = ProcessGroupGloo._Options()  # type: ignore[attr-defined]
            options._timeout = timeout
            options._devices = [ProcessGroupGloo.create_device(hostname=host)]
            self.learner.process_group = ProcessGroupGloo(
                self.store, self.rank, self.world_size, options
            )
        self.learner.world_size = self.world_size
        return self.rank

    def _nccl_group(self, timeout: datetime.timedelta) -> Any:
        """An NCCL group over the store, on this learner's GPU."""
        import torch.distributed as dist

        if not dist.is_nccl_available():
            raise RuntimeError(
                f"learner {self.rank}: every learner has a GPU, so the group is nccl, but "
                "this build of torch has no NCCL"
            )
        # Only CUDA builds of torch have the class; mypy sees the CPU build's stubs.
        nccl: Any = getattr(dist, "ProcessGroupNCCL")  # noqa: B009
        options = nccl.Options()
        options._timeout = timeout
        return nccl(self.store, self.rank, self.world_size, options)

    def run(
        self,
        fn: Callable[..., Any],
        shard: dict[str, np.ndarray],
        lr: float,
        kwargs: dict[str, Any],
    ) -> tuple[Any, dict[str, np.ndarray] | None]:
        """``fn`` on this learner's shard; rank 0 also returns the new weights."""
        import torch

        self.learner.set_lr(lr)
        data = {k: torch.as_tensor(np.array(v)).to(self.device) for k, v in shard.items()}
        out = fn(self.module, self.learner, data, **kwargs)
        return _on_host(out), (self.learner.get_weights() if self.rank == 0 else None)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.learner.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state)

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.learner.set_weights(weights)


def _on_host(value: Any) -> Any:
    """``value`` with every tensor in it (tuples, lists, dicts) moved to the CPU: what a GPU
    learner returns must unpickle in a driver without CUDA."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple | list):
        return type(value)(_on_host(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    return value


def _node_address() -> str:
    """The address this learner's node process listens on (its host's, across hosts)."""
    me = runtime.get_runtime_context().get_node_id()
    for node in runtime.nodes():
        if node["NodeID"] == me:
            return str(node.get("NodeManagerAddress") or "127.0.0.1")
    return "127.0.0.1"


def _check_gpus(num_learners: int, num_gpus: float) -> None:
    """Raise ``InfeasibleError`` at once when the cluster has fewer GPUs than the learners
    ask for (rather than leave learners waiting for GPUs that no node has)."""
    from runtime.exceptions import InfeasibleError

    have = float(runtime.cluster_resources().get("GPU", 0.0))
    need = num_learners * num_gpus
    if have + 1e-9 < need:
        raise InfeasibleError(
            f".learners(num_learners={num_learners}, num_gpus_per_learner={num_gpus:g}) "
            f"needs {need:g} GPUs and the cluster has {have:g}: start nodes with GPUs "
            "(runtime.init(num_gpus=...) or `python -m runtime.node --num-gpus N`) or set "
            "num_gpus_per_learner=0"
        )


class LearnerGroup:
    """The driver's view of N learner actors, with a ``TorchLearner``'s interface.

    ``local`` is the driver's ``TorchLearner`` (its module is the one the algorithm reads);
    ``build`` makes a module identical to it (the same seeded constructor), pickled to every
    actor. Weights set here go to every actor; checkpoints hold rank 0's optimizer state.
    """

    def __init__(self, local: Any, build: Callable[[], Any], config: Any):
        import cloudpickle

        self.local = local
        self.module = local.module
        self.num_learners = int(config.num_learners)
        cpus = config.num_cpus_per_learner
        num_cpus = 1.0 if cpus == "auto" else float(cpus)
        num_gpus = float(config.num_gpus_per_learner)
        self.backend = learner_backend(num_gpus)
        options: dict[str, Any] = {"num_cpus": num_cpus}
        if num_gpus:
            _check_gpus(self.num_learners, num_gpus)
            # A process of its own: CUDA_VISIBLE_DEVICES is per process, and so is CUDA.
            options |= {"num_gpus": num_gpus, "dedicated_process": ["torch"]}
        cls = runtime.remote(LearnerWorker).options(**options)
        blob = cloudpickle.dumps(build)
        self.actors = [
            cls.remote(
                blob, local.lr, local.grad_clip, rank, self.num_learners, num_gpus, self.backend
            )
            for rank in range(self.num_learners)
        ]
        try:
            host, port = runtime.get(self.actors[0].open_store.remote(), timeout=TIMEOUT_S)
            runtime.get([a.join.remote(host, port) for a in self.actors], timeout=TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def run(self, fn: Callable[..., Any], data: dict[str, Any], **kwargs: Any) -> Any:
        """``fn`` on N equal shards of ``data``'s rows, one per learner, in parallel.

        ``minibatch_size`` is divided among the learners, ``rng`` (a numpy Generator) seeds
        one generator per learner. The outputs (PPO: summed stats and the update count) are
        averaged; rank 0's weights become the driver's.
        """
        n = self.num_learners
        size = len(next(iter(data.values())))
        if size < n:
            raise ValueError(f"a train batch of {size} rows cannot be split among {n} learners")
        per = size // n  # equal shards: every learner must take the same number of steps
        seeds = kwargs.pop("rng").integers(2**63, size=n)
        kwargs["minibatch_size"] = max(1, int(kwargs["minibatch_size"]) // n)
        refs = []
        for rank, actor in enumerate(self.actors):
            shard = {k: np.asarray(v[rank * per : (rank + 1) * per]) for k, v in data.items()}
            rank_kwargs = {**kwargs, "rng": np.random.default_rng(int(seeds[rank]))}
            refs.append(actor.run.remote(fn, shard, self.local.lr, rank_kwargs))
        results = runtime.get(refs, timeout=TIMEOUT_S * 5)
        self.local.set_weights(results[0][1])
        outs = [out for out, _ in results]
        return type(outs[0])(sum(values) / n for values in zip(*outs, strict=True))

    def set_lr(self, lr: float) -> None:
        self.local.set_lr(lr)

    @property
    def lr(self) -> float:
        return float(self.local.lr)

    def get_weights(self) -> dict[str, np.ndarray]:
        weights: dict[str, np.ndarray] = self.local.get_weights()
        return weights

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.local.set_weights(weights)
        runtime.get([a.set_weights.remote(weights) for a in self.actors], timeout=TIMEOUT_S)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = runtime.get(self.actors[0].get_state.remote(), timeout=TIMEOUT_S)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.local.set_state(state)
        runtime.get([a.set_state.remote(state) for a in self.actors], timeout=TIMEOUT_S)

    def stop(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # one already gone is what stop wants
                runtime.kill(actor, no_restart=True)
        self.actors = []
