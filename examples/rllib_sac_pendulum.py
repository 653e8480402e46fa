"""SAC on Pendulum-v1, with a callback that logs a custom metric into every result.

Run it with `python examples/rllib_sac_pendulum.py [--target -250] [--max-iterations 30]`.
`--env HalfCheetah-v5` (or another MuJoCo task; needs the `mujoco` package) runs the same
SAC on it; pass a `--target` that suits the task (HalfCheetah's random return is about -300).
One env-runner actor samples 16 steps per round; the driver stores them in its replay buffer
and takes one gradient step (critics, policy, temperature) per sampled step. A random policy
scores about -1200 to -1500; SAC gets past -250 in roughly 10-15k env steps.
"""

from __future__ import annotations

import argparse
from typing import Any

import runtime
from runtime.rllib.algorithms.sac import SACConfig
from runtime.rllib.callbacks.callbacks import RLlibCallback


class UprightFraction(RLlibCallback):
    """Logs, per episode, the fraction of steps the pendulum spent near upright."""

    def on_episode_end(self, *, episode: Any, metrics_logger: Any, **kwargs: Any) -> None:
        cosines = [obs[0] for obs in episode.get_observations()]
        upright = sum(c > 0.95 for c in cosines) / len(cosines)
        metrics_logger.log_value("upright_fraction", upright, reduce="mean")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1", help="a gymnasium id with Box actions")
    parser.add_argument("--target", type=float, default=-250.0)
    parser.add_argument("--max-iterations", type=int, default=30)
    parser.add_argument("--hiddens", type=int, default=256, help="width of the two layers")
    args = parser.parse_args()

    runtime.init(num_cpus=2)
    config = (
        SACConfig()
        .environment(args.env)
        .env_runners(num_env_runners=1)
        .training(model={"fcnet_hiddens": [args.hiddens, args.hiddens]})
        .debugging(seed=0)
    )
    if args.env == "Pendulum-v1":  # the metric reads Pendulum's observation
        config.callbacks(UprightFraction)
    algo = config.build()
    try:
        for _ in range(args.max_iterations):
            result = algo.train()
            runners = result["env_runners"]
            mean = runners["episode_return_mean"]
            print(
                f"iteration {result['training_iteration']:2d}: mean return {mean:7.1f}, "
                f"upright {runners.get('upright_fraction', float('nan')):.2f}, alpha "
                f"{result['learners']['default_policy']['alpha_value']:.3f} "
                f"({result['num_env_steps_sampled_lifetime']} env steps, "
                f"{result['time_this_iter_s']:.1f} s)"
            )
            if mean >= args.target:
                print(f"reached a mean return of {mean:.1f}")
                break
        evaluation = algo.evaluate()["env_runners"]
        print(f"greedy evaluation: mean return {evaluation['episode_return_mean']:.1f}")
    finally:
        algo.stop()
        runtime.shutdown()


if __name__ == "__main__":
    main()
