"""PPO on CartPole-v1 with two env-runner actors: train, evaluate greedily, checkpoint, restore.

Run it with `python examples/rllib_cartpole.py [--target 150] [--max-iterations 40]`.
Each iteration the driver broadcasts the policy's weights once through the object store,
both runners step four CartPole copies each and send their batches back, and the driver
runs PPO's minibatch epochs on them.
"""

from __future__ import annotations

import argparse
import tempfile

import runtime
from runtime.rllib import Algorithm, PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=150.0)
    parser.add_argument("--max-iterations", type=int, default=40)
    args = parser.parse_args()

    runtime.init(num_cpus=2)
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
        .training(lr=3e-4, train_batch_size=2000, minibatch_size=128, num_epochs=10)
        .evaluation(evaluation_duration=5)
        .debugging(seed=0)
    )
    algo = config.build()
    try:
        for _ in range(args.max_iterations):
            result = algo.train()
            mean = result["env_runners"]["episode_return_mean"]
            print(
                f"iteration {result['training_iteration']:2d}: mean return {mean:6.1f} "
                f"({result['num_env_steps_sampled_lifetime']} env steps, "
                f"{result['time_this_iter_s']:.2f} s)"
            )
            if mean >= args.target:
                break
        print(f"reached a mean return of {mean:.1f}")
        evaluation = algo.evaluate()["env_runners"]
        print(f"greedy evaluation: mean return {evaluation['episode_return_mean']:.1f}")

        with tempfile.TemporaryDirectory() as tmp:
            path = algo.save(tmp).checkpoint.path
            restored = Algorithm.from_checkpoint(path)
            obs = [0.01, -0.02, 0.03, 0.0]
            same = restored.compute_single_action(obs, explore=False) == algo.compute_single_action(
                obs, explore=False
            )
            print(f"restored from {path}: same greedy action = {same}")
            restored.stop()
    finally:
        algo.stop()
        runtime.shutdown()


if __name__ == "__main__":
    main()
