"""APPO / IMPALA: V-trace against hand computations, and (on a mesh) learning CartPole with
runners that keep sampling while the learner trains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.rllib import APPO, IMPALA, APPOConfig, IMPALAConfig, get_algorithm_class
from runtime.rllib.appo import vtrace
from runtime.rllib.ppo import compute_gae


def columns(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (6, 3)
    terms = np.zeros(shape, np.float32)
    truncs = np.zeros(shape, np.float32)
    terms[2, 0] = 1.0
    truncs[4, 1] = 1.0
    return {
        "rewards": rng.normal(size=shape).astype(np.float32),
        "values": rng.normal(size=shape).astype(np.float32),
        "next_values": rng.normal(size=shape).astype(np.float32),
        "terminateds": terms,
        "truncateds": truncs,
    }


def test_on_policy_vtrace_is_the_bootstrapped_discounted_return() -> None:
    c = columns()
    logp = np.log(np.full(c["rewards"].shape, 0.3, np.float32))
    vs, adv = vtrace(
        logp,
        logp,
        c["rewards"],
        c["values"],
        c["next_values"],
        c["terminateds"],
        c["truncateds"],
        gamma=0.9,
    )
    _, targets = compute_gae(
        c["rewards"],
        c["values"],
        c["next_values"],
        c["terminateds"],
        c["truncateds"],
        gamma=0.9,
        lambda_=1.0,
    )
    np.testing.assert_allclose(vs, targets, rtol=1e-5, atol=1e-5)
    # The advantage bootstraps from the next step's target inside an episode, else V(s').
    t, n = 1, 0
    np.testing.assert_allclose(
        adv[t, n], c["rewards"][t, n] + 0.9 * vs[t + 1, n] - c["values"][t, n], rtol=1e-5
    )
    t = 2  # terminated: no bootstrap
    np.testing.assert_allclose(adv[t, n], c["rewards"][t, n] - c["values"][t, n], rtol=1e-5)
    t, n = 5, 2  # the fragment's end: V of the true next observation
    np.testing.assert_allclose(
        adv[t, n], c["rewards"][t, n] + 0.9 * c["next_values"][t, n] - c["values"][t, n], rtol=1e-5
    )


def test_vtrace_truncates_the_importance_ratios() -> None:
    c = columns(1)
    behaviour = np.log(np.full(c["rewards"].shape, 0.1, np.float32))
    target = np.log(np.full(c["rewards"].shape, 0.5, np.float32))  # rho = 5
    vs, adv = vtrace(
        behaviour,
        target,
        c["rewards"],
        c["values"],
        c["next_values"],
        c["terminateds"],
        c["truncateds"],
        gamma=0.9,
        clip_rho=1.0,
        clip_pg_rho=1.0,
    )
    same = vtrace(
        target,
        target,
        c["rewards"],
        c["values"],
        c["next_values"],
        c["terminateds"],
        c["truncateds"],
        gamma=0.9,
    )
    np.testing.assert_allclose(vs, same[0], rtol=1e-5)  # rho and c clipped to 1: on-policy
    np.testing.assert_allclose(adv, same[1], rtol=1e-5)
    half = vtrace(
        target,
        behaviour,
        c["rewards"],
        c["values"],
        c["next_values"],
        c["terminateds"],
        c["truncateds"],
        gamma=0.9,
    )  # rho = 0.2
    np.testing.assert_allclose(
        half[1],
        0.2 * (c["rewards"] + 0.9 * (1 - c["terminateds"]) * _next(half[0], c) - c["values"]),
        rtol=1e-4,
        atol=1e-6,
    )


def _next(vs: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
    out = c["next_values"].copy()
    inside = (1 - np.logical_or(c["terminateds"], c["truncateds"]))[:-1].astype(bool)
    out[:-1][inside] = vs[1:][inside]
    return out


def test_names_and_bad_settings() -> None:
    assert get_algorithm_class("appo") is APPO and get_algorithm_class("IMPALA") is IMPALA
    from runtime.rllib.algorithms.appo import APPOConfig as Exported

    assert Exported is APPOConfig
    with pytest.raises(ValueError, match="max_requests_in_flight_per_env_runner"):
        APPOConfig().environment("CartPole-v1").env_runners(
            max_requests_in_flight_per_env_runner=0
        ).build()
    with pytest.raises(NotImplementedError, match="circular_buffer_num_batches"):
        APPOConfig().training(circular_buffer_num_batches=4)


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_appo_learns_cartpole_while_the_runners_keep_sampling() -> None:
    config = APPOConfig().environment("CartPole-v1").debugging(seed=0)
    config.env_runners(num_env_runners=2, num_envs_per_env_runner=4)
    algo = config.build()
    try:
        means, staleness = [], []
        for _ in range(80):
            result = algo.train()
            means.append(result["env_runners"]["episode_return_mean"])
            staleness.append(result["learners"]["default_policy"]["mean_staleness"])
            # Between iterations every runner has its calls queued: sampling goes on.
            assert algo.sampler is not None and len(algo.sampler.in_flight) == 2 * 2
            if means[-1] >= 150:
                break
        assert means[-1] >= 150, means  # random play: about 20
        assert result["num_env_steps_sampled_lifetime"] <= 81_000
        # Batches were sampled with weights older than the learner's: off-policy, V-trace.
        assert max(staleness) > 0
        stats = result["learners"]["default_policy"]
        assert all(math.isfinite(stats[k]) for k in ("policy_loss", "vf_loss", "entropy"))
    finally:
        algo.stop()


@pytest.mark.usefixtures("cluster")
@pytest.mark.timeout(300)
def test_impala_learns_cartpole_with_the_plain_vtrace_policy_gradient() -> None:
    config = IMPALAConfig().environment("CartPole-v1").debugging(seed=0)
    config.env_runners(num_env_runners=2, num_envs_per_env_runner=4)
    algo = config.build()
    try:
        means = []
        for _ in range(80):
            means.append(algo.train()["env_runners"]["episode_return_mean"])
            if means[-1] >= 100:
                break
        assert means[-1] >= 100, means
    finally:
        algo.stop()
