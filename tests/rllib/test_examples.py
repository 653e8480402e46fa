"""The rllib examples run to the end and print what they learned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, tmp_path: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env={**os.environ, "RUNTIME_TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.timeout(300)
def test_cartpole_example_trains_evaluates_and_restores(tmp_path: Path) -> None:
    stdout = run_example("rllib_cartpole.py", tmp_path, "--target", "60")
    assert "reached a mean return of" in stdout
    assert "greedy evaluation: mean return" in stdout
    assert "same greedy action = True" in stdout


@pytest.mark.timeout(300)
def test_custom_env_example_finds_the_shortest_path(tmp_path: Path) -> None:
    stdout = run_example("rllib_custom_env.py", tmp_path)
    assert "(6 steps; the shortest is 6)" in stdout, stdout


@pytest.mark.timeout(300)
def test_cli_trains_until_the_stop_condition_then_evaluates_the_checkpoint(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "RUNTIME_TMPDIR": str(tmp_path)}
    ckpt = tmp_path / "ckpt"
    cli = [sys.executable, "-m", "runtime.rllib", "--num-cpus", "2"]
    train = subprocess.run(
        [
            *cli,
            "train",
            "--algo",
            "PPO",
            "--env",
            "CartPole-v1",
            "--num-env-runners",
            "1",
            "--config",
            '{"train_batch_size": 200, "num_epochs": 1}',
            "--stop",
            '{"training_iteration": 2}',
            "--checkpoint-dir",
            str(ckpt),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "iter    2" in train.stdout and f"checkpoint saved to {ckpt}" in train.stdout
    evaluate = subprocess.run(
        [*cli, "evaluate", str(ckpt), "--episodes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert '"num_episodes": 2' in evaluate.stdout


@pytest.mark.timeout(300)
def test_sac_example_learns_and_logs_its_custom_metric(tmp_path: Path) -> None:
    # A short bar (random play scores -1200 to -1500): the full run to -250 is the default.
    stdout = run_example(
        "rllib_sac_pendulum.py",
        tmp_path,
        "--target",
        "-900",
        "--hiddens",
        "64",
        "--max-iterations",
        "8",
    )
    assert "reached a mean return of" in stdout, stdout
    assert "upright" in stdout and "upright nan" not in stdout.splitlines()[1]
    assert "greedy evaluation: mean return" in stdout


@pytest.mark.timeout(300)
def test_multi_agent_example_trains_both_cartpole_agents_with_a_module_each(
    tmp_path: Path,
) -> None:
    stdout = run_example("rllib_multi_agent.py", tmp_path, "--separate", "--target", "100")
    assert "reached the target 100 with modules ['p0', 'p1']" in stdout, stdout


@pytest.mark.timeout(300)
def test_multi_agent_example_learns_pettingzoos_simple_spread(tmp_path: Path) -> None:
    pytest.importorskip("mpe2", reason="PettingZoo's MPE games come in the mpe2 package")
    # Random play scores about -40; -35 is past it by more than the iterations' noise.
    stdout = run_example(
        "rllib_multi_agent.py", tmp_path, "--env", "simple_spread", "--target", "-35"
    )
    assert "reached the target -35 with modules ['default_policy']" in stdout, stdout


@pytest.mark.timeout(300)
def test_sac_example_runs_a_mujoco_task_where_mujoco_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("mujoco", reason="MuJoCo tasks need the mujoco package")
    args = ["--env", "HalfCheetah-v5", "--max-iterations", "2", "--target", "1e9"]
    stdout = run_example("rllib_sac_pendulum.py", tmp_path, *args, "--hiddens", "32")
    # A HalfCheetah episode is 1000 steps: one per iteration on the one runner.
    assert "iteration  2: mean return" in stdout and "(2016 env steps" in stdout, stdout
    assert "greedy evaluation: mean return" in stdout, stdout
