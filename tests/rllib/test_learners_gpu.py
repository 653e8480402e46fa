"""Learners with GPUs (``.learners(num_gpus_per_learner=...)``).

Without a GPU (here and in CI) this checks what runs on CPU: the options, the backend a
group picks (nccl only when every learner holds a whole GPU), and that learner actors ask
for their GPUs through the actor options (a mesh that declares GPUs grants them; torch, a
CPU build, then cannot see them and the build fails saying so). The tests that run
learners on a real GPU skip with the reason when ``torch.cuda.is_available()`` is false.
(A cluster without GPUs: ``test_learners.py``.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import runtime
from runtime.exceptions import InfeasibleError
from runtime.rllib import PPOConfig
from runtime.rllib._learner_group import LearnerGroup, learner_backend
from tests.conftest import local_mesh
from tests.rllib.test_learners import against_one_learner

CUDA = torch.cuda.is_available()
NUM_CUDA = torch.cuda.device_count() if CUDA else 0
needs_gpu = pytest.mark.skipif(
    not CUDA, reason="no CUDA device: torch.cuda.is_available() is false"
)


@pytest.fixture(scope="module")
def gpu_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A mesh that offers GPUs: the machine's, or two declared ones where it has none."""
    gpus = NUM_CUDA or 2
    with local_mesh(tmp_path_factory.mktemp("gpu-mesh"), num_cpus=2, num_gpus=gpus):
        yield gpus


def ppo_on_cartpole(**learners: float) -> PPOConfig:
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=8)
        .learners(**learners)  # type: ignore[arg-type]
        .debugging(seed=0)
    )
    return config


def test_a_group_uses_nccl_only_when_every_learner_holds_a_whole_gpu() -> None:
    assert learner_backend(0) == "gloo"
    assert learner_backend(0.5) == "gloo"  # two learners may share a device: NCCL refuses
    assert learner_backend(1) == "nccl"
    assert learner_backend(2) == "nccl"


def test_learner_gpu_options_are_checked_when_given() -> None:
    with pytest.raises(TypeError, match="num_gpus_per_learner"):
        PPOConfig().learners(num_gpus_per_learner="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_gpus_per_learner"):
        PPOConfig().learners(num_gpus_per_learner=True)
    for bad in (-1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="num_gpus_per_learner"):
            PPOConfig().learners(num_gpus_per_learner=bad)
    config = PPOConfig().learners(num_learners=2, num_gpus_per_learner=0.5)
    assert (config.num_learners, config.num_gpus_per_learner) == (2, 0.5)
    # Ray's GPU learner in the driver (num_learners=0) is refused by name.
    with pytest.raises(NotImplementedError, match="num_learners >= 1"):
        ppo_on_cartpole(num_gpus_per_learner=1).build()


@pytest.mark.skipif(CUDA, reason="checks the CPU-only path: this machine has a GPU")
@pytest.mark.timeout(120)
def test_learners_granted_gpus_that_torch_cannot_see_fail_the_build_saying_so(
    gpu_mesh: int,
) -> None:
    # The mesh declares two GPUs; each learner actor asks for one through the actor options
    # and is granted it, and then finds torch (a CPU build) without CUDA.
    with pytest.raises(RuntimeError, match=r"was granted GPU \[[01]\].*torch sees no CUDA device"):
        ppo_on_cartpole(num_learners=2, num_gpus_per_learner=1).build()
    # Asking for more GPUs than the mesh declares is refused before any actor starts.
    with pytest.raises(InfeasibleError, match="needs 3 GPUs and the cluster has 2"):
        ppo_on_cartpole(num_learners=3, num_gpus_per_learner=1).build()


# --- on a GPU -----------------------------------------------------------------------------


def equivalent_step(num_gpus: float) -> list[dict[str, object]]:
    """Two learners (``num_gpus`` each) take the step one CPU learner takes on the whole
    batch; returns where the two ran."""

    def where(group: LearnerGroup, totals: torch.Tensor) -> list[dict[str, object]]:
        assert totals.device.type == "cpu"
        out: list[dict[str, object]] = runtime.get([a.where.remote() for a in group.actors])
        return out

    return against_one_learner(where, num_gpus=num_gpus, rtol=1e-3, atol=1e-5)


@needs_gpu
@pytest.mark.timeout(300)
def test_a_learner_on_a_gpu_keeps_its_module_there_and_trains_ppo(gpu_mesh: int) -> None:
    algo = ppo_on_cartpole(num_learners=1, num_gpus_per_learner=1).build()
    try:
        assert isinstance(algo.learner, LearnerGroup)
        where = runtime.get(algo.learner.actors[0].where.remote())
        assert where["device"] == where["param_device"] == "cuda:0"
        assert where["backend"] == "nccl" and len(where["gpu_ids"]) == 1
        returns = []
        for _ in range(25):
            returns.append(algo.train()["env_runners"]["episode_return_mean"])
            if returns[-1] >= 150:
                break
        assert returns[-1] >= 150, returns
    finally:
        algo.stop()


@needs_gpu
@pytest.mark.timeout(180)
def test_two_learners_sharing_one_gpu_average_their_gradients_over_gloo(gpu_mesh: int) -> None:
    where = equivalent_step(0.5)
    assert {w["backend"] for w in where} == {"gloo"}
    assert {w["param_device"] for w in where} == {"cuda:0"}


@pytest.mark.skipif(NUM_CUDA < 2, reason=f"needs 2 CUDA devices, this machine has {NUM_CUDA}")
@pytest.mark.timeout(180)
def test_two_learners_with_a_gpu_each_average_their_gradients_over_nccl(gpu_mesh: int) -> None:
    where = equivalent_step(1)
    assert {w["backend"] for w in where} == {"nccl"}
    assert sorted(str(w["gpu_ids"]) for w in where) == ["[0]", "[1]"]
    assert len({w["pid"] for w in where}) == 2  # a process each
