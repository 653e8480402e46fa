"""RLlibCallback hooks in the driver and in the env-runner actors, and custom metrics in results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtime
from runtime.rllib import PPOConfig
from runtime.rllib.callbacks.callbacks import RLlibCallback

pytestmark = pytest.mark.usefixtures("cluster")


class Recorder(RLlibCallback):
    """Logs per-episode metrics in the runners and notes the driver-side hooks it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        self.seen.append("init")

    def on_environment_created(
        self, *, metrics_logger: Any, env_context: Any, **kwargs: Any
    ) -> None:
        metrics_logger.log_value("envs_created", 1, reduce="sum")

    def on_episode_start(self, *, episode: Any, **kwargs: Any) -> None:
        episode.custom_data["first_obs"] = episode.get_observations(0)

    def on_episode_step(self, *, episode: Any, metrics_logger: Any, **kwargs: Any) -> None:
        metrics_logger.log_value("steps_seen", 1, reduce="sum")

    def on_episode_end(
        self, *, episode: Any, metrics_logger: Any, env_index: int, **kwargs: Any
    ) -> None:
        assert np.array_equal(episode.custom_data["first_obs"], episode.get_observations(0))
        assert len(episode.get_observations()) == len(episode) + 1 and episode.is_done
        metrics_logger.log_value("my_return", episode.get_return())
        metrics_logger.log_value(("lens", "max"), len(episode), reduce="max")
        metrics_logger.log_value("episodes_seen", 1, reduce="sum")

    def on_train_result(
        self, *, algorithm: Any, metrics_logger: Any, result: dict[str, Any], **kwargs: Any
    ) -> None:
        self.seen.append("train_result")
        result["custom_in_result"] = 10 * result["training_iteration"]
        metrics_logger.log_value("driver_metric", 5.0)

    def on_evaluate_end(self, *, evaluation_metrics: dict[str, Any], **kwargs: Any) -> None:
        self.seen.append("evaluate_end")

    def on_env_runners_recreated(
        self, *, env_runner_indices: list[int], is_evaluation: bool, **kwargs: Any
    ) -> None:
        self.seen.append(f"recreated {env_runner_indices} {is_evaluation}")

    def on_checkpoint_loaded(self, *, algorithm: Any, **kwargs: Any) -> None:
        self.seen.append("checkpoint_loaded")


def config() -> PPOConfig:
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        .training(train_batch_size=400, num_epochs=1)
        .evaluation(evaluation_duration=2)
        .debugging(seed=0)
    )


@pytest.mark.timeout(200)
def test_runner_hooks_log_custom_metrics_into_the_result(tmp_path: Path) -> None:
    algo = config().callbacks(Recorder).build()
    try:
        driver = algo.callbacks[0]
        assert driver.seen == ["init"]
        first = algo.train()
        runners = first["env_runners"]
        # One runner, fewer than 100 episodes: Ray's episode figures are over the same ones.
        assert runners["episodes_seen"] == runners["num_episodes"] > 0
        assert runners["my_return"] == pytest.approx(runners["episode_return_mean"])
        assert runners["lens"]["max"] == runners["episode_return_max"]  # CartPole: 1 a step
        assert first["env_runners/lens/max"] == runners["lens"]["max"]
        assert runners["envs_created"] == 1  # logged at the runner's start, reported once
        assert runners["steps_seen"] == 400 - runners["episodes_seen"]  # ends are not steps
        assert first["custom_in_result"] == 10 and first["driver_metric"] == 5.0
        second = algo.train()
        assert "envs_created" not in second["env_runners"]
        assert second["custom_in_result"] == 20

        evaluation = algo.evaluate()["env_runners"]
        assert evaluation["episodes_seen"] == 2
        assert evaluation["my_return"] == pytest.approx(evaluation["episode_return_mean"])

        runtime.kill(algo.env_runner_group.runners[0], no_restart=True)
        algo.train()
        path = algo.save(tmp_path / "ckpt")
        algo.restore(path)
        assert driver.seen == [
            "init",
            "train_result",
            "train_result",
            "evaluate_end",
            "recreated [1] False",
            "train_result",
            "checkpoint_loaded",
        ]
    finally:
        algo.stop()


@pytest.mark.timeout(200)
def test_hooks_given_as_functions_run_in_order() -> None:
    calls: list[str] = []

    def first(*, result: dict[str, Any], **kwargs: Any) -> None:
        result["order"] = ["first"]

    def second(*, result: dict[str, Any], **kwargs: Any) -> None:
        result["order"].append("second")

    def episode_end(*, episode: Any, metrics_logger: Any, **kwargs: Any) -> None:
        metrics_logger.log_value("neg_len", -len(episode), reduce="min")

    algo = (
        config()
        .env_runners(num_env_runners=0)
        .callbacks(on_train_result=[first, second], on_episode_end=episode_end)
        .callbacks(on_algorithm_init=lambda **kw: calls.append("init"))
        .build()
    )
    try:
        result = algo.train()
        assert result["order"] == ["first", "second"]
        assert result["env_runners"]["neg_len"] == -result["env_runners"]["episode_return_max"]
        assert calls == ["init"]
    finally:
        algo.stop()


def test_bad_callbacks_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="RLlibCallback subclass"):
        PPOConfig().environment("CartPole-v1").callbacks(int).validate()
    with pytest.raises(TypeError, match="on_nope"):
        PPOConfig().callbacks(on_nope=print)
    with pytest.raises(TypeError, match="callable"):
        PPOConfig().environment("CartPole-v1").callbacks(on_train_result=3).validate()


def test_rays_module_paths_for_callbacks() -> None:
    from runtime.rllib.algorithms.callbacks import DefaultCallbacks
    from runtime.rllib.callbacks import RLlibCallback as Exported

    assert DefaultCallbacks is RLlibCallback is Exported
