"""RLlib benchmark, side by side: runtime.rllib and Ray RLlib 2.60, same PPO workload, same run.

Two measurements, each on CartPole-v1 with 2 env runners (4 envs each) and the same PPO
hyperparameters on both sides (lr 3e-4, 2000 env steps per iteration, minibatches of 128,
10 epochs, clip 0.2, GAE lambda 0.95, no KL penalty, 64x64 tanh MLPs without shared layers):

* PPO: wall time (after the algorithm is built) to an ``env_runners/episode_return_mean``
  of 150 and of 450, and the end-to-end env steps per second of that run;
* sampling: then, with the trained policy, env steps per second of pure sampling rounds
  (weights fixed, no learning).

Our half then trains again with ``sample_ahead=True`` (runners sample the next batch while
the learner trains; see docs/rllib.md): the ``sample_ahead:`` rows, compared with the same
Ray run. ``episode_return_mean`` is computed the same way on both sides (ours reproduces
Ray 2.60's definition). ``--seed`` seeds both halves.

This process runs our half; the Ray half runs as a child in a network namespace where only
loopback is up (``unshare -n``), with usage stats off. Ratios are oriented so that > 1 means
runtime.rllib did better. Without Ray RLlib installed, only our half runs.

Usage (from the repository root)::

    .venv/bin/python benchmarks/rllib.py            # both halves, up to ~10 minutes
    .venv/bin/python benchmarks/rllib.py --quick    # target 150 only, shorter sampling
    .venv/bin/python benchmarks/rllib.py --only runtime
    .venv/bin/python benchmarks/rllib.py --seed 1     # another seed, both halves

``--workload appo`` runs APPO side by side: CartPole-v1, 2 runners x 4 envs, each side's
APPO with the shared settings in ``APPO_SETTINGS`` (Ray's own defaults otherwise: its
learner queue, circular buffer and target network are Ray's), time and env steps to 150,
300 and 450 and the end-to-end env steps/s.

``--workload sac|multi|bc`` runs the other workloads of issue 21 side by side the same way:
SAC on Pendulum-v1 to a mean return of -250 (1 runner; ``SAC_SETTINGS`` on both sides, one
update per sampled env step, uniform replay), multi-agent PPO on a two-agent CartPole to 150
per agent (one shared module, 1 runner x 2 envs, ``PPO_SETTINGS`` with 1000-step batches;
then env steps/s of sampling rounds alone with the trained weights), and BC on 4000
transitions recorded by our PPO at a mean return of 200: both halves read the same Parquet
files (Ray through ``input_read_schema``), greedy evaluation of 5 episodes after each
iteration, time to 150. ``--seeds 0,1,2`` runs both halves once per seed and ends with
the medians (a target not reached within the budget counts as the budget, and the ratio is
then a bound)::

    .venv/bin/python benchmarks/rllib.py --workload sac --seeds 0,1,2 --budget 240

Every run records the machine's 1-minute load average before and after each iteration
(the ``load average`` rows: the machine is shared, and a run is read with its load) and the
CPU seconds each side's whole process tree spent training (``tree_cpu_s``: our driver and
node processes; Ray's driver, GCS, raylet and workers), to each target and in all: a cost
that other programs' load does not inflate, beside the wall times.

Ray RLlib needs ``gymnasium``, ``dm-tree`` and ``lz4`` besides ``ray``; the Ray child runs
with ``RLLIB_BENCH_RAY_PYTHON`` (an interpreter of a separate environment with Ray, e.g.
``/work/rayenv/bin/python``; default: this one), and ``RLLIB_BENCH_PYTHONPATH`` is
prepended to its ``PYTHONPATH`` (for deps installed with ``pip --target``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

CHILD_ENV = "RUNTIME_BENCH_RLLIB_RAY_CHILD"
RUNNERS = 2
ENVS_PER_RUNNER = 4
PPO_SETTINGS = {
    "lr": 3e-4,
    "gamma": 0.99,
    "lambda_": 0.95,
    "train_batch_size": 2000,
    "minibatch_size": 128,
    "num_epochs": 10,
    "clip_param": 0.2,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
    "grad_clip": 0.5,
}
#: APPO's settings on both sides (ours are APPO's defaults here).
APPO_SETTINGS = {
    "lr": 5e-4,
    "gamma": 0.99,
    "train_batch_size": 1000,
    "minibatch_size": 250,
    "num_epochs": 2,
    "clip_param": 0.4,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.0,
    "grad_clip": 40.0,
}
APPO_TARGETS = [150.0, 300.0, 450.0]
#: SAC's settings on both sides (ours are SAC's defaults).
SAC_SETTINGS = {
    "actor_lr": 3e-4,
    "critic_lr": 1e-3,
    "alpha_lr": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "initial_alpha": 1.0,
    "twin_q": True,
    "n_step": 1,
    "num_steps_sampled_before_learning_starts": 1000,
}
SAC_BATCH = 256
MULTI_BATCH = 1000
#: Multi-agent sampling rounds after training (250 steps of each env; weights fixed).
MULTI_SAMPLE_ROUNDS = 5
#: The other workloads' targets (multi: per agent; bc: greedy evaluation).
TARGETS = {"appo": APPO_TARGETS, "sac": [-250.0], "multi": [150.0], "bc": [150.0]}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- our half


def run_runtime(
    targets: list[float], budget_s: float, sample_rounds: int, seed: int
) -> dict[str, Any]:
    """Our half: the default (synchronous) PPO, then the same run with ``sample_ahead``."""
    import runtime
    from runtime.rllib import PPOConfig

    runtime.init(num_cpus=RUNNERS)
    try:
        out: dict[str, Any] = {}
        for variant, sample_ahead in (("", False), ("ahead_", True)):
            config = (
                PPOConfig()
                .environment("CartPole-v1")
                .env_runners(
                    num_env_runners=RUNNERS,
                    num_envs_per_env_runner=ENVS_PER_RUNNER,
                    sample_ahead=sample_ahead,
                )
                .training(**PPO_SETTINGS)
                .debugging(seed=seed)
            )
            t0 = time.perf_counter()
            algo = config.build()
            build_s = time.perf_counter() - t0
            name = "runtime" + (" sample_ahead" if sample_ahead else "")
            try:
                reached = train_until(
                    name,
                    algo.train,
                    mean_of=lambda r: r["env_runners"]["episode_return_mean"],
                    steps_of=lambda r: r["num_env_steps_sampled_lifetime"],
                    targets=targets,
                    budget_s=budget_s,
                )
                out.update({variant + k: v for k, v in reached.items()})
                if not sample_ahead:
                    # The first build starts the runners' processes' imports; later ones
                    # find them warm, so only the first is reported.
                    out["build_s"] = build_s
                    # Then sampling alone: rounds of 250 steps per env on every runner.
                    group, weights = algo.env_runner_group, algo.get_weights()
                    t0 = time.perf_counter()
                    steps = sum(
                        int(b["env_steps"])
                        for _ in range(sample_rounds)
                        for b in group.sample(weights, 250)
                    )
                    out["sample_steps_per_s"] = steps / (time.perf_counter() - t0)
                    log(f"[runtime] sampling: {out['sample_steps_per_s']:,.0f} env steps/s")
            finally:
                algo.stop()
    finally:
        runtime.shutdown()
    return out


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process, the children it reaped, and
    every live descendant (our node processes; Ray's GCS, raylet and workers): a side's
    cost that other programs' load on the machine does not inflate, unlike wall time."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    times: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15).
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    me = os.getpid()
    total = times.get(me, (0, 0))[1]  # children already reaped
    for pid, (own, _) in times.items():
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me:
            total += own
    return total / tick


def train_until(
    name: str,
    train: Any,
    *,
    mean_of: Any,
    steps_of: Any,
    targets: list[float],
    budget_s: float,
) -> dict[str, Any]:
    """Call ``train()`` until every target is reached or the budget is spent."""
    out: dict[str, Any] = {}
    start = time.perf_counter()
    pending = sorted(targets)
    steps, mean = 0, math.nan
    loads = [os.getloadavg()[0]]
    cpu0 = tree_cpu_s()
    while pending and time.perf_counter() - start < budget_s:
        result = train()
        steps = int(steps_of(result))
        mean = float(mean_of(result))
        elapsed = time.perf_counter() - start
        loads.append(os.getloadavg()[0])
        log(
            f"[{name}] {elapsed:6.1f} s  {steps:7d} steps  mean return {mean:6.1f}"
            f"  (load {loads[-1]:.1f})"
        )
        while pending and mean >= pending[0]:
            target = pending.pop(0)
            out[f"time_to_{target:g}_s"] = elapsed
            out[f"steps_to_{target:g}"] = steps
            out[f"cpu_to_{target:g}_s"] = tree_cpu_s() - cpu0
    total = time.perf_counter() - start
    out["train_steps_per_s"] = steps / total if total else 0.0
    out["last_return"] = mean  # where it stood at the end (all targets or the budget)
    out["train_s"] = total
    out["train_cpu_s"] = tree_cpu_s() - cpu0
    # The machine's 1-minute load average at the start and after each iteration: a run is
    # read with the load it ran under (the machine is shared).
    out["load_min"], out["load_max"] = min(loads), max(loads)
    return out


def min_agent_return(result: dict[str, Any]) -> float:
    """The lowest of the agents' mean returns (NaN before any episode ended)."""
    per_agent = result.get("env_runners", {}).get("agent_episode_returns_mean") or {}
    return float(min(per_agent.values())) if per_agent else math.nan


def run_workload(
    workload: str, budget_s: float, seed: int, data: str | None = None
) -> dict[str, Any]:
    """One of the other workloads (our half): see the module docstring."""
    import runtime
    from runtime import rllib
    from runtime.rllib.env.multi_agent_env import make_multi_agent

    runtime.init(num_cpus=RUNNERS)
    try:
        if workload == "sac":
            config: Any = rllib.SACConfig().environment("Pendulum-v1")
            config.env_runners(num_env_runners=1, rollout_fragment_length=16)
            config.training(**SAC_SETTINGS, train_batch_size=SAC_BATCH)
            targets, mean_of = TARGETS["sac"], None
        elif workload == "appo":
            config = rllib.APPOConfig().environment("CartPole-v1")
            config.env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
            config.training(**APPO_SETTINGS)
            targets, mean_of = APPO_TARGETS, None
        elif workload == "multi":
            env = make_multi_agent("CartPole-v1")
            config = rllib.PPOConfig().environment(env, env_config={"num_agents": 2})
            config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
            config.training(**(PPO_SETTINGS | {"train_batch_size": MULTI_BATCH}))
            targets, mean_of = TARGETS["multi"], min_agent_return
        else:
            return run_bc(budget_s, seed, data)  # records first when ``data`` is None
        t0 = time.perf_counter()
        algo = config.debugging(seed=seed).build()
        build_s = time.perf_counter() - t0
        try:
            out = {"build_s": build_s} | train_until(
                f"runtime {workload}",
                algo.train,
                mean_of=mean_of or (lambda r: r["env_runners"]["episode_return_mean"]),
                steps_of=lambda r: r["num_env_steps_sampled_lifetime"],
                targets=targets,
                budget_s=budget_s,
            )
            if workload == "multi":  # then sampling alone, with the trained weights
                group, weights = algo.env_runner_group, algo.get_weights()
                t0 = time.perf_counter()
                steps = sum(
                    int(b["env_steps"])
                    for _ in range(MULTI_SAMPLE_ROUNDS)
                    for b in group.sample(weights, 250)
                )
                out["sample_steps_per_s"] = steps / (time.perf_counter() - t0)
                log(f"[runtime multi] sampling: {out['sample_steps_per_s']:,.0f} env steps/s")
            return out
        finally:
            algo.stop()
    finally:
        runtime.shutdown()


def record_expert(path: str, seed: int) -> None:
    """Record 4000 transitions of our PPO policy once it reaches a mean return of 200."""
    from runtime.rllib import PPOConfig

    expert = PPOConfig().environment("CartPole-v1").debugging(seed=seed)
    expert.env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
    algo = expert.build()
    try:
        while algo.train()["env_runners"]["episode_return_mean"] < 200:
            pass
        algo.config.offline_data(output=path)
        for _ in range(2):
            algo.train()
    finally:
        algo.stop()


def run_bc(budget_s: float, seed: int, data: str | None) -> dict[str, Any]:
    """BC from the transitions under ``data`` (recorded here when None) to 150 greedy."""
    from runtime.rllib import BCConfig

    path = data or tempfile.mkdtemp(prefix="rllib-bench-bc-")
    try:
        if not os.listdir(path):  # nothing recorded yet (a side-by-side run records once)
            record_expert(path, seed)
        config = BCConfig().environment("CartPole-v1").offline_data(input_=path)
        bc = config.evaluation(evaluation_duration=5).debugging(seed=seed).build()
        try:

            def train_and_evaluate() -> dict[str, Any]:
                result = bc.train()
                result["greedy"] = bc.evaluate()["env_runners"]["episode_return_mean"]
                return result

            return train_until(
                "runtime bc",
                train_and_evaluate,
                mean_of=lambda r: r["greedy"],
                steps_of=lambda r: r["num_env_steps_trained_lifetime"],
                targets=TARGETS["bc"],
                budget_s=budget_s,
            )
        finally:
            bc.stop()
    finally:
        if data is None:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- Ray's half


def run_ray(targets: list[float], budget_s: float, sample_rounds: int, seed: int) -> dict[str, Any]:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    # Logical CPUs: 1 per runner plus the driver's learner (the machine has the same cores).
    ray.init(num_cpus=RUNNERS + 1, include_dashboard=False, log_to_driver=False)
    try:
        settings = dict(PPO_SETTINGS)
        settings["train_batch_size_per_learner"] = settings.pop("train_batch_size")
        config = (
            PPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
            .training(**settings, use_kl_loss=False, vf_clip_param=1e6)
            .rl_module(
                model_config=DefaultModelConfig(
                    fcnet_hiddens=[64, 64], fcnet_activation="tanh", vf_share_layers=False
                )
            )
            .debugging(seed=seed)
        )
        t0 = time.perf_counter()
        algo = config.build_algo()
        build_s = time.perf_counter() - t0
        try:
            reached = train_until(
                "ray",
                algo.train,
                mean_of=lambda r: r["env_runners"]["episode_return_mean"],
                steps_of=lambda r: r["env_runners"]["num_env_steps_sampled_lifetime"],
                targets=targets,
                budget_s=budget_s,
            )
            # Then sampling alone (after training, as on our side).
            group = algo.env_runner_group
            per_runner = 250 * ENVS_PER_RUNNER

            def sample(runner: Any) -> int:
                episodes = runner.sample(num_timesteps=per_runner)
                return sum(len(e) for e in episodes)

            t0 = time.perf_counter()
            steps = 0
            for _ in range(sample_rounds):
                steps += sum(group.foreach_env_runner(sample, local_env_runner=False))
            sample_rate = steps / (time.perf_counter() - t0)
            log(f"[ray] sampling: {sample_rate:,.0f} env steps/s")
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    return {
        "version": ray.__version__,
        "build_s": build_s,
        "sample_steps_per_s": sample_rate,
        **reached,
    }


def run_ray_workload(
    workload: str, budget_s: float, seed: int, data: str | None = None
) -> dict[str, Any]:
    """Ray's half of ``--workload appo|sac|multi|bc`` (see the module docstring)."""
    import ray
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    def steps_of(r: dict[str, Any]) -> int:
        # An asynchronous (APPO) iteration may come back before any step was counted.
        runners = r.get("env_runners", {})
        return int(runners.get("num_env_steps_sampled_lifetime") or 0) or int(
            r.get("num_env_steps_sampled_lifetime") or 0
        )

    def mean_of(r: dict[str, Any]) -> float:
        return float(r.get("env_runners", {}).get("episode_return_mean", math.nan))

    mlp = DefaultModelConfig(fcnet_hiddens=[64, 64], fcnet_activation="tanh", vf_share_layers=False)
    config: Any
    if workload == "appo":
        from ray.rllib.algorithms.appo import APPOConfig

        config = APPOConfig().environment("CartPole-v1").rl_module(model_config=mlp)
        config.env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
        config.training(**per_learner(APPO_SETTINGS))
    elif workload == "sac":
        from ray.rllib.algorithms.sac import SACConfig

        config = SACConfig().environment("Pendulum-v1")
        config.env_runners(num_env_runners=1, rollout_fragment_length=16)
        # One update per sampled env step as ours: Ray's training_intensity is trained over
        # sampled steps against a "native ratio" that counts one runner more than samples
        # (256 / (16 x 2)), hence 128 for 16 updates per 16-step round. Uniform replay as
        # ours (Ray's default is prioritized).
        config.training(
            **SAC_SETTINGS,
            train_batch_size_per_learner=SAC_BATCH,
            training_intensity=SAC_BATCH // 2,
            replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 100_000},
        )
        config.rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[256, 256], fcnet_activation="relu")
        )
        config.reporting(min_sample_timesteps_per_iteration=1000)
    elif workload == "multi":
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.env.multi_agent_env import make_multi_agent

        env = make_multi_agent("CartPole-v1")
        config = PPOConfig().environment(env, env_config={"num_agents": 2})
        config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
        settings = per_learner(PPO_SETTINGS | {"train_batch_size": MULTI_BATCH})
        config.training(**settings, use_kl_loss=False, vf_clip_param=1e6)
        config.rl_module(model_config=mlp)
        # One module shared by both agents, as our default multi-agent run has.
        config.multi_agent(policies={"shared"}, policy_mapping_fn=lambda *_a, **_k: "shared")
        mean_of = min_agent_return
    elif workload == "bc":
        from ray.rllib.algorithms.bc import BCConfig

        # Our recording's columns, named for Ray's reader (its ``new_obs`` is our next_obs);
        # 8 updates of 256 transitions per iteration (ours: 2000 in minibatches of 256).
        config = BCConfig().environment("CartPole-v1").rl_module(model_config=mlp)
        config.offline_data(
            input_=[data],
            input_read_schema={"new_obs": "next_obs"},
            dataset_num_iters_per_learner=8,
        )
        config.training(lr=1e-3, train_batch_size_per_learner=256)
        config.evaluation(
            evaluation_interval=1,
            evaluation_num_env_runners=0,
            evaluation_duration=5,
            evaluation_duration_unit="episodes",
            evaluation_config={"explore": False},
        )

        def mean_of(r: dict[str, Any]) -> float:
            evaluation = r.get("evaluation", {}).get("env_runners", {})
            return float(evaluation.get("episode_return_mean", math.nan))

        def steps_of(r: dict[str, Any]) -> int:
            learners = r.get("learners", {}).get("__all_modules__", {})
            return int(learners.get("num_env_steps_trained_lifetime") or 0)

    else:
        raise ValueError(f"no Ray half for workload {workload!r}")

    # Logical CPUs: 1 per runner plus the driver's learner (the machine has the same cores).
    ray.init(num_cpus=RUNNERS + 1, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        algo = config.debugging(seed=seed).build_algo()
        build_s = time.perf_counter() - t0
        try:
            reached = train_until(
                f"ray {workload}",
                algo.train,
                mean_of=mean_of,
                steps_of=steps_of,
                targets=TARGETS[workload],
                budget_s=budget_s,
            )
            if workload == "multi":  # then sampling alone, as on our side
                per_runner = 250 * 2  # 250 steps of each of the runner's 2 envs

                def sample(runner: Any) -> int:
                    return sum(len(e) for e in runner.sample(num_timesteps=per_runner))

                t0 = time.perf_counter()
                steps = 0
                for _ in range(MULTI_SAMPLE_ROUNDS):
                    steps += sum(
                        algo.env_runner_group.foreach_env_runner(sample, local_env_runner=False)
                    )
                reached["sample_steps_per_s"] = steps / (time.perf_counter() - t0)
                log(f"[ray multi] sampling: {reached['sample_steps_per_s']:,.0f} env steps/s")
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    return {"version": ray.__version__, "build_s": build_s, **reached}


def per_learner(settings: dict[str, Any]) -> dict[str, Any]:
    """Our settings in Ray's new-stack names (``train_batch_size_per_learner``)."""
    out = dict(settings)
    out["train_batch_size_per_learner"] = out.pop("train_batch_size")
    return out


def run_ray_isolated(argv: list[str], timeout: float) -> dict[str, Any]:
    python = os.environ.get("RLLIB_BENCH_RAY_PYTHON") or sys.executable
    if python == sys.executable and importlib.util.find_spec("ray") is None:
        return {"skipped": "ray is not installed (set RLLIB_BENCH_RAY_PYTHON)"}
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return {"skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-rllib-") as tmp:
        out = os.path.join(tmp, "ray.json")
        cmd = [
            *prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
            python, os.path.abspath(__file__), "--only", "ray", "--json", out, *argv,
        ]  # fmt: skip
        env = dict(os.environ)
        env.update(
            {
                CHILD_ENV: "1",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        extra = os.environ.get("RLLIB_BENCH_PYTHONPATH")
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
        log(f"[ray] in a loopback-only network namespace: {shlex.join(cmd)}")
        try:
            subprocess.run(cmd, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"skipped": f"the Ray half ran past {timeout:.0f} s"}
        if not os.path.exists(out):
            return {"skipped": "the Ray child wrote no results (see its stderr above)"}
        with open(out) as f:
            report: dict[str, Any] = json.load(f)
        return report


# --------------------------------------------------------------------------- the table


ROWS = [
    ("sampling, 2 runners x 4 envs", "sample_steps_per_s", "steps/s", True),
    ("build (start runners)", "build_s", "s", False),
    ("time to mean return 150", "time_to_150_s", "s", False),
    ("env steps to mean return 150", "steps_to_150", "steps", False),
    ("time to mean return 450", "time_to_450_s", "s", False),
    ("env steps to mean return 450", "steps_to_450", "steps", False),
    ("PPO end-to-end env steps/s", "train_steps_per_s", "steps/s", True),
]
#: Rows of our ``sample_ahead`` run (same settings; sampling overlaps learning).
AHEAD_ROWS = [(f"sample_ahead: {label}", "ahead_" + key, u, h) for label, key, u, h in ROWS[2:]]
APPO_ROWS = [
    ("build (start runners)", "build_s", "s", False),
    *[
        row
        for target in ("150", "300", "450")
        for row in (
            (f"time to mean return {target}", f"time_to_{target}_s", "s", False),
            (f"env steps to mean return {target}", f"steps_to_{target}", "steps", False),
        )
    ],
    ("APPO end-to-end env steps/s", "train_steps_per_s", "steps/s", True),
]


def target_rows(what: str, targets: list[float], steps: str = "env steps") -> list[Any]:
    return [
        row
        for t in targets
        for row in (
            (f"time to {what} {t:g}", f"time_to_{t:g}_s", "s", False),
            (f"{steps} to {what} {t:g}", f"steps_to_{t:g}", "steps", False),
        )
    ]


#: Where training stood when it stopped (every target reached, or the budget spent).
END_ROWS = [
    ("mean return when stopped", "last_return", "", None),
    ("training time until stopped", "train_s", "s", None),
    ("load average (1 min) during training, lowest", "load_min", "", None),
    ("load average (1 min) during training, highest", "load_max", "", None),
]
WORKLOAD_ROWS = {
    "appo": APPO_ROWS + END_ROWS,
    "sac": [
        ("build (start runners)", "build_s", "s", False),
        *target_rows("mean return", TARGETS["sac"]),
        ("CPU time (all the side's processes) to mean return -250", "cpu_to_-250_s", "s", False),
        ("CPU time (all the side's processes) until stopped", "train_cpu_s", "s", None),
        ("SAC end-to-end env steps/s", "train_steps_per_s", "steps/s", True),
        *END_ROWS,
    ],
    "multi": [
        ("sampling, 1 runner x 2 envs (env steps)", "sample_steps_per_s", "steps/s", True),
        ("build (start runners)", "build_s", "s", False),
        *target_rows("mean return per agent", TARGETS["multi"]),
        ("end-to-end env steps/s (both agents' steps count once)", "train_steps_per_s",
         "steps/s", True),
        *END_ROWS,
    ],
    "bc": [
        *target_rows("greedy return", TARGETS["bc"], "transitions trained"),
        ("BC transitions trained/s (with evaluation)", "train_steps_per_s", "steps/s", True),
        *END_ROWS,
    ],
}  # fmt: skip


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def render(ours: dict[str, Any], ray: dict[str, Any] | None, rows: list[Any] | None = None) -> str:
    lines = [
        "| metric | runtime.rllib | Ray RLlib | ratio (>1: ours better) |",
        "|---|---|---|---|",
    ]
    for label, key, unit, higher in rows or ROWS + AHEAD_ROWS:
        a = ours.get(key)
        b = (ray or {}).get(key.removeprefix("ahead_"))
        ratio = "-"
        if a and b and higher is not None:
            ratio = f"{(a / b if higher else b / a):.2f}x"
        lines.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {ratio} |")
    if ray and "skipped" in ray:
        lines.append(f"\nRay half skipped: {ray['skipped']}")
    elif ray and "version" in ray:
        lines.append(f"\nRay {ray['version']}")
    return "\n".join(lines)


def median_of(reports: list[dict[str, Any]], key: str, budget: float) -> tuple[float | None, str]:
    """The median of ``key`` over the seeds that ran, and a note: a time to a target not
    reached counts as the budget (the median is then a lower bound, marked ``>``)."""
    ran = [r for r in reports if r and "skipped" not in r]
    if not ran:
        return None, ""
    if key.startswith("cpu_to_"):  # CPU seconds to a target: only where it was reached
        values = [float(r[key]) for r in ran if r.get(key) is not None]
        note = f" ({len(values)}/{len(ran)} reached)" if len(values) < len(ran) else ""
        return (statistics.median(values), note) if values else (None, "")
    if key.startswith("time_to_"):
        values = [float(r.get(key, math.inf)) for r in ran]
        reached = sum(v < math.inf for v in values)
        med = statistics.median(values)
        note = f" ({reached}/{len(ran)} reached)" if reached < len(ran) else ""
        return (budget, ">" + note) if med == math.inf else (med, note)
    values = [float(r[key]) for r in ran if r.get(key) is not None]
    return (statistics.median(values), "") if values else (None, "")


def render_medians(
    ours: list[dict[str, Any]], ray: list[dict[str, Any]], rows: list[Any], budget: float
) -> str:
    """Medians over the seeds, both halves; ratios of the medians (``>``/``<``: a bound)."""
    lines = [
        f"| median over {len(ours)} seeds | runtime.rllib | Ray RLlib | ratio (>1: ours better) |",
        "|---|---|---|---|",
    ]
    for label, key, unit, higher in rows:
        (a, na), (b, nb) = median_of(ours, key, budget), median_of(ray, key, budget)
        ratio = "-"
        if a and b and higher is not None and not (na.startswith(">") and nb.startswith(">")):
            bound = ">" if nb.startswith(">") else "<" if na.startswith(">") else ""
            ratio = f"{bound}{(a / b if higher else b / a):.2f}x"
        cells = [
            ("> " if n.startswith(">") else "") + _fmt(v, unit) + n.removeprefix(">")
            for v, n in ((a, na), (b, nb))
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min), {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="target 150 only; fewer rounds")
    parser.add_argument("--only", choices=("runtime", "ray"), default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds of training per half")
    parser.add_argument("--seed", type=int, default=0, help="seed of both halves")
    parser.add_argument("--seeds", default=None, help="e.g. 0,1,2: one run per seed, medians")
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)  # the Ray child's BC data
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--workload",
        choices=("ppo", "sac", "appo", "multi", "bc"),
        default="ppo",
        help="ppo (default), appo, sac, multi, bc: each side by side with Ray RLlib",
    )
    args = parser.parse_args(argv)
    if args.only == "ray" and os.environ.get(CHILD_ENV) == "1":
        return ray_child(args)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    runs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for seed in seeds:
        log(f"== {args.workload}, seed {seed}; {load_note()}")
        ours, ray = one_seed(args, seed)
        runs.append((ours, ray))
        print(f"\n{args.workload}, seed {seed} (under load: {load_note()})")
        print(render(ours, ray, WORKLOAD_ROWS.get(args.workload)), flush=True)
    if len(seeds) > 1:
        rows = WORKLOAD_ROWS.get(args.workload) or ROWS
        print(f"\n{args.workload}, seeds {args.seeds} (under load: {load_note()})")
        print(
            render_medians([o for o, _ in runs], [r or {} for _, r in runs], rows, budget_of(args))
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                [
                    {"seed": s, "runtime": o, "ray": r}
                    for s, (o, r) in zip(seeds, runs, strict=True)
                ],
                f,
            )
    return 0


def budget_of(args: argparse.Namespace) -> float:
    if args.budget:
        return float(args.budget)
    if args.workload == "ppo":
        return 120.0 if args.quick else 300.0
    return 120.0 if args.workload == "appo" else 300.0


def ray_child(args: argparse.Namespace) -> int:
    """The Ray half, inside the namespace ``run_ray_isolated`` made: one seed, a JSON report."""
    budget = budget_of(args)
    try:
        if args.workload == "ppo":
            targets = [150.0] if args.quick else [150.0, 450.0]
            report = run_ray(targets, budget, 3 if args.quick else 10, args.seed)
        else:
            report = run_ray_workload(args.workload, budget, args.seed, args.data)
    except Exception as exc:  # e.g. ray.rllib's imports failing
        report = {"skipped": f"{type(exc).__name__}: {exc}"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def one_seed(args: argparse.Namespace, seed: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Our half, then Ray's in its namespace (or one half: ``--only``), for one seed."""
    budget = budget_of(args)
    argv = ["--workload", args.workload, "--budget", str(budget), "--seed", str(seed)]
    argv += ["--quick"] if args.quick else []
    data = tempfile.mkdtemp(prefix="rllib-bench-bc-") if args.workload == "bc" else None
    try:
        ours: dict[str, Any] = {}
        if args.only != "ray":
            t0 = time.perf_counter()
            if args.workload == "ppo":
                targets = [150.0] if args.quick else [150.0, 450.0]
                ours = run_runtime(targets, budget, 3 if args.quick else 10, seed)
            else:
                ours = run_workload(args.workload, budget, seed, data)
            log(f"[runtime {args.workload}] {time.perf_counter() - t0:.1f} s in all")
        if data is not None:
            if not os.listdir(data):  # --only ray: record with our PPO first
                run_workload("bc", 0.0, seed, data)
            argv += ["--data", data]
        ray = run_ray_isolated(argv, budget * 2 + 300) if args.only != "runtime" else None
    finally:
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
    return ours, ray


if __name__ == "__main__":
    sys.exit(main())
