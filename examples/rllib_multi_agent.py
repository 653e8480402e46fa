"""Multi-agent PPO: a two-agent CartPole, and a PettingZoo game (MPE's ``simple_spread``).

Run it with one of::

    python examples/rllib_multi_agent.py                      # two CartPoles, one shared module
    python examples/rllib_multi_agent.py --separate           # a module per agent
    python examples/rllib_multi_agent.py --env simple_spread  # PettingZoo (pip install mpe2)

``cartpole``: ``make_multi_agent("CartPole-v1")`` steps two independent CartPoles, agent ``i``
in copy ``i``; the episode ends when both poles fell. Random play scores about 22 per agent;
the run stops when every agent's mean return reaches ``--target`` (default 150).

``simple_spread``: two agents (``agent_0``, ``agent_1``) must cover two landmarks without
colliding; PettingZoo's ``ParallelEnv`` comes in through ``ParallelPettingZooEnv``, and both
agents share one module. The reward is shared and negative (the landmarks' distances to
the nearest agent): random play scores about -40 an episode (both agents' rewards summed,
25 steps); the run stops at ``--target`` (default -34, reached in ~15-20 iterations of
2000 steps).
"""

from __future__ import annotations

import argparse
from typing import Any

import runtime
from runtime.rllib.algorithms.ppo import PPOConfig
from runtime.rllib.env.multi_agent_env import make_multi_agent
from runtime.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
from runtime.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN


def simple_spread(env_config: dict[str, Any]) -> ParallelPettingZooEnv:
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=2, max_cycles=25, continuous_actions=False)
    return ParallelPettingZooEnv(env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", choices=("cartpole", "simple_spread"), default="cartpole")
    parser.add_argument("--separate", action="store_true", help="one module per agent")
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--max-iterations", type=int, default=40)
    args = parser.parse_args()

    config = PPOConfig().debugging(seed=0)
    if args.env == "cartpole":
        target = 150.0 if args.target is None else args.target
        config.environment(make_multi_agent("CartPole-v1"), env_config={"num_agents": 2})
        config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        config.training(train_batch_size=1000)
        agents: list[Any] = [0, 1]
    else:
        target = -34.0 if args.target is None else args.target
        config.environment(simple_spread)
        config.env_runners(num_env_runners=1, num_envs_per_env_runner=4)
        config.training(train_batch_size=2000, lr=1e-3, minibatch_size=256, entropy_coeff=0.01)
        agents = ["agent_0", "agent_1"]
    if args.separate:
        config.multi_agent(
            policies={f"p{i}" for i in range(len(agents))},
            policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agents.index(agent_id)}",
        )

    runtime.init(num_cpus=2)
    algo = config.build()
    try:
        for _ in range(args.max_iterations):
            result = algo.train()
            runners = result[ENV_RUNNER_RESULTS]
            per_agent = runners["agent_episode_returns_mean"]
            print(
                f"iteration {result['training_iteration']:2d}: episode return "
                f"{runners[EPISODE_RETURN_MEAN]:7.1f}, per agent "
                + ", ".join(f"{a} {v:6.1f}" for a, v in sorted(per_agent.items()))
                + f" ({result['num_env_steps_sampled_lifetime']} env steps)",
                flush=True,
            )
            if args.env == "cartpole":  # every agent at the target
                done = bool(per_agent) and min(per_agent.values()) >= target
            else:  # a shared reward: the episode's (both agents' sum)
                done = runners[EPISODE_RETURN_MEAN] >= target
            if done:
                print(f"reached the target {target:g} with modules {sorted(algo.modules)}")
                break
        else:
            print(f"not at the target {target:g} after {args.max_iterations} iterations")
    finally:
        algo.stop()
        runtime.shutdown()


if __name__ == "__main__":
    main()
