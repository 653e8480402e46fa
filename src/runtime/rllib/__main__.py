"""The rllib command line: train an algorithm until a stop condition, evaluate a checkpoint.

    python -m runtime.rllib train --algo PPO --env CartPole-v1 \\
        --stop '{"env_runners/episode_return_mean": 450}' --checkpoint-dir /tmp/ppo
    python -m runtime.rllib evaluate /tmp/ppo --episodes 10

For ``train``, ``--address`` joins a running cluster (``auto`` or ``HOST:PORT``); without it a
local mesh of ``--num-cpus`` nodes is started for the command. ``evaluate`` runs its greedy
episodes in this process and needs no cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.rllib", description=__doc__)
    parser.add_argument("--address", default=None, help="a running cluster (default: local)")
    parser.add_argument("--num-cpus", type=int, default=None, help="local mesh size")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train until --stop is met; save a checkpoint")
    train.add_argument("--algo", required=True, help="PPO, DQN or SAC")
    train.add_argument("--env", required=True, help="a gymnasium id such as CartPole-v1")
    train.add_argument("--env-config", default="{}", help="JSON dict passed to the env")
    train.add_argument("--config", default="{}", help="JSON dict of settings (lr, gamma, ...)")
    train.add_argument("--num-env-runners", type=int, default=None)
    train.add_argument("--num-envs-per-env-runner", type=int, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument(
        "--stop",
        default='{"training_iteration": 100}',
        help='JSON: stop when any result key reaches its value, e.g. {"training_iteration": 50}',
    )
    train.add_argument("--checkpoint-dir", default=None, help="where to save at the end")
    evaluate = sub.add_parser("evaluate", help="greedy episodes with a saved checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--episodes", type=int, default=10)
    return parser


def _json_dict(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{what} must be a JSON object, got {text!r}")
    return value


def _stop_reached(result: dict[str, Any], stop: dict[str, Any]) -> bool:
    for key, target in stop.items():
        value = result.get(key)
        if isinstance(value, int | float) and not math.isnan(value) and value >= target:
            return True
    return False


def _train(args: argparse.Namespace) -> int:
    from runtime.rllib import get_algorithm_class

    cls = get_algorithm_class(args.algo)
    stop = _json_dict(args.stop, "--stop")
    config = cls.get_default_config().update_from_dict(_json_dict(args.config, "--config"))
    config.environment(args.env, env_config=_json_dict(args.env_config, "--env-config"))
    if args.num_env_runners is not None:
        config.env_runners(num_env_runners=args.num_env_runners)
    if args.num_envs_per_env_runner is not None:
        config.env_runners(num_envs_per_env_runner=args.num_envs_per_env_runner)
    if args.seed is not None:
        config.debugging(seed=args.seed)
    algo = config.build()
    try:
        while True:
            result = algo.train()
            print(
                f"iter {result['training_iteration']:4d}  "
                f"return {result['env_runners']['episode_return_mean']:8.2f}  "
                f"steps {result['num_env_steps_sampled_lifetime']:8d}  "
                f"time {result['time_total_s']:7.1f}s",
                flush=True,
            )
            if _stop_reached(result, stop):
                break
        path = algo.save(args.checkpoint_dir).checkpoint.path
        print(f"checkpoint saved to {path}")
    finally:
        algo.stop()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from runtime.rllib import Algorithm

    # Evaluation runs in this process: the algorithm is rebuilt without env-runner actors.
    algo = Algorithm.from_checkpoint(args.checkpoint, num_env_runners=0)
    try:
        algo.config.evaluation(evaluation_duration=args.episodes)
        print(json.dumps(algo.evaluate()["env_runners"], indent=2))
    finally:
        algo.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        return _evaluate(args)  # no cluster needed: greedy episodes in this process
    runtime.init(address=args.address, num_cpus=args.num_cpus)
    try:
        return _train(args)
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    sys.exit(main())
