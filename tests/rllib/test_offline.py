"""Offline RL: a PPO run records its transitions as Parquet (through runtime.data); BC and
MARWIL learn CartPole from them and are evaluated online."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime import data
from runtime.rllib import BC, MARWIL, BCConfig, MARWILConfig, PPOConfig
from runtime.rllib.marwil import load_episodes

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Transitions of a PPO policy that reached a mean return of 200 (4000 env steps)."""
    path = tmp_path_factory.mktemp("offline") / "cartpole"
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    algo = config.env_runners(num_env_runners=2, num_envs_per_env_runner=4).build()
    try:
        for _ in range(40):
            if algo.train()["env_runners"]["episode_return_mean"] >= 200:
                break
        algo.config.offline_data(output=str(path))  # record from now on
        for _ in range(2):
            algo.train()
    finally:
        algo.stop()
    return path


@pytest.mark.timeout(300)
def test_sampled_transitions_are_recorded_as_parquet(recorded: Path) -> None:
    ds = data.read_parquet(str(recorded))
    assert ds.count() == 4000
    row = ds.take(1)[0]
    assert set(row) >= {"eps_id", "t", "obs", "actions", "rewards", "terminateds", "next_obs"}
    assert len(row["obs"]) == 4 and row["actions"] in (0, 1)
    episodes = load_episodes(str(recorded), gamma=0.99)
    assert episodes["obs"].shape == (4000, 4)
    # Returns-to-go: within an episode each is r + gamma * the next one.
    assert np.all(episodes["returns"] >= episodes["rewards"] - 1e-6)
    assert episodes["returns"].max() > 50


def test_bc_and_marwil_need_their_data() -> None:
    with pytest.raises(ValueError, match="offline_data"):
        BCConfig().environment("CartPole-v1").build()
    with pytest.raises(NotImplementedError, match="input_read_method"):
        BCConfig().offline_data(input_read_method="read_json")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config_class", [BCConfig, MARWILConfig])
def test_bc_and_marwil_learn_cartpole_from_the_recording(
    recorded: Path, config_class: type[BCConfig]
) -> None:
    config = config_class().environment("CartPole-v1").offline_data(input_=str(recorded))
    algo = config.evaluation(evaluation_duration=5).debugging(seed=0).build()
    try:
        assert isinstance(algo, BC if config_class is BCConfig else MARWIL)
        before = algo.evaluate()["env_runners"]["episode_return_mean"]
        for _ in range(40):  # 40 x 2000 transitions drawn from the 4000
            result = algo.train()
        after = algo.evaluate()["env_runners"]["episode_return_mean"]
        assert after >= 150 and after > before + 50, (before, after)
        stats = result["learners"]["default_policy"]
        assert np.isfinite(stats["policy_loss"])
        assert ("vf_loss" in stats) == (config_class is MARWILConfig)
        assert result["num_env_steps_sampled_lifetime"] == 0  # learned from data only
    finally:
        algo.stop()
