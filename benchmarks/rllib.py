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

``--workload sac|multi|bc`` runs one of the other workloads of issue 21, our half only
(no Ray half is written for them yet): SAC on Pendulum-v1 to -250 (1 runner), multi-agent
PPO on a two-agent CartPole to 150 per agent (1 runner x 2 envs), and BC on 4000 recorded
transitions of a PPO policy at 200 (greedy evaluation after each iteration)::

    .venv/bin/python benchmarks/rllib.py --workload sac --seed 0

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
    steps = 0
    while pending and time.perf_counter() - start < budget_s:
        result = train()
        steps = int(steps_of(result))
        mean = float(mean_of(result))
        elapsed = time.perf_counter() - start
        log(f"[{name}] {elapsed:6.1f} s  {steps:7d} steps  mean return {mean:6.1f}")
        while pending and mean >= pending[0]:
            target = pending.pop(0)
            out[f"time_to_{target:g}_s"] = elapsed
            out[f"steps_to_{target:g}"] = steps
    total = time.perf_counter() - start
    out["train_steps_per_s"] = steps / total if total else 0.0
    return out


def run_workload(workload: str, budget_s: float, seed: int) -> dict[str, Any]:
    """One of the other workloads (our half): see the module docstring."""
    import runtime
    from runtime import rllib
    from runtime.rllib.env.multi_agent_env import make_multi_agent

    runtime.init(num_cpus=RUNNERS)
    try:
        if workload == "sac":
            config: Any = rllib.SACConfig().environment("Pendulum-v1")
            config.env_runners(num_env_runners=1)
            targets, mean_of = [-250.0], None
        elif workload == "appo":
            config = rllib.APPOConfig().environment("CartPole-v1")
            config.env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
            config.training(**APPO_SETTINGS)
            targets, mean_of = APPO_TARGETS, None
        elif workload == "multi":
            env = make_multi_agent("CartPole-v1")
            config = rllib.PPOConfig().environment(env, env_config={"num_agents": 2})
            config.env_runners(num_env_runners=1, num_envs_per_env_runner=2)
            config.training(train_batch_size=1000)
            targets = [150.0]

            def mean_of(result: dict[str, Any]) -> float:
                per_agent = result["env_runners"].get("agent_episode_returns_mean") or {"": 0}
                return float(min(per_agent.values()))

        else:
            return run_bc(budget_s, seed)
        t0 = time.perf_counter()
        algo = config.debugging(seed=seed).build()
        build_s = time.perf_counter() - t0
        try:
            return {"build_s": build_s} | train_until(
                f"runtime {workload}",
                algo.train,
                mean_of=mean_of or (lambda r: r["env_runners"]["episode_return_mean"]),
                steps_of=lambda r: r["num_env_steps_sampled_lifetime"],
                targets=targets,
                budget_s=budget_s,
            )
        finally:
            algo.stop()
    finally:
        runtime.shutdown()


def run_bc(budget_s: float, seed: int) -> dict[str, Any]:
    """Record 4000 transitions of a PPO policy at a mean return of 200; BC to 150 greedy."""
    from runtime.rllib import BCConfig, PPOConfig

    path = tempfile.mkdtemp(prefix="rllib-bench-bc-")
    try:
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
                targets=[150.0],
                budget_s=budget_s,
            )
        finally:
            bc.stop()
    finally:
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


def run_ray_appo(budget_s: float, seed: int) -> dict[str, Any]:
    """Ray's half of the APPO workload (see the module docstring)."""
    import ray
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    ray.init(num_cpus=RUNNERS + 1, include_dashboard=False, log_to_driver=False)
    try:
        settings = dict(APPO_SETTINGS)
        settings["train_batch_size_per_learner"] = settings.pop("train_batch_size")
        config = (
            APPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=RUNNERS, num_envs_per_env_runner=ENVS_PER_RUNNER)
            .training(**settings)
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
            # An APPO iteration may come back before any episode ended or any step was
            # counted: the keys are then missing (NaN / 0 here).
            reached = train_until(
                "ray appo",
                algo.train,
                mean_of=lambda r: r.get("env_runners", {}).get("episode_return_mean", math.nan),
                steps_of=lambda r: (
                    r.get("env_runners", {}).get("num_env_steps_sampled_lifetime")
                    or r.get("num_env_steps_sampled_lifetime")
                    or 0
                ),
                targets=APPO_TARGETS,
                budget_s=budget_s,
            )
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    return {"version": ray.__version__, "build_s": build_s, **reached}


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
        if a and b:
            ratio = f"{(a / b if higher else b / a):.2f}x"
        lines.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {ratio} |")
    if ray and "skipped" in ray:
        lines.append(f"\nRay half skipped: {ray['skipped']}")
    elif ray and "version" in ray:
        lines.append(f"\nRay {ray['version']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="target 150 only; fewer rounds")
    parser.add_argument("--only", choices=("runtime", "ray"), default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds of training per half")
    parser.add_argument("--seed", type=int, default=0, help="seed of both halves")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--workload",
        choices=("ppo", "sac", "appo", "multi", "bc"),
        default="ppo",
        help="ppo: the side-by-side run; the others: our half only",
    )
    args = parser.parse_args(argv)
    if args.workload == "appo":
        return appo_side_by_side(args)
    if args.workload != "ppo":
        report = run_workload(args.workload, args.budget or 300.0, args.seed)
        print(json.dumps(report, indent=2))
        return 0
    targets = [150.0] if args.quick else [150.0, 450.0]
    budget = args.budget or (120.0 if args.quick else 300.0)
    rounds = 3 if args.quick else 10
    passthrough = (["--quick"] if args.quick else []) + ["--budget", str(budget)]
    passthrough += ["--seed", str(args.seed)]

    if args.only == "ray" and os.environ.get(CHILD_ENV) == "1":
        try:
            report = run_ray(targets, budget, rounds, args.seed)
        except Exception as exc:  # e.g. ray.rllib's imports failing
            report = {"skipped": f"{type(exc).__name__}: {exc}"}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0

    ours = run_runtime(targets, budget, rounds, args.seed) if args.only != "ray" else {}
    ray = run_ray_isolated(passthrough, budget * 2 + 300) if args.only != "runtime" else None
    print(render(ours, ray))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray}, f, indent=2)
    return 0


def appo_side_by_side(args: argparse.Namespace) -> int:
    """``--workload appo``: our APPO, then Ray's in its namespace (or one half: ``--only``)."""
    budget = args.budget or 120.0
    if args.only == "ray" and os.environ.get(CHILD_ENV) == "1":
        try:
            report = run_ray_appo(budget, args.seed)
        except Exception as exc:
            report = {"skipped": f"{type(exc).__name__}: {exc}"}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0
    ours: dict[str, Any] = {}
    if args.only != "ray":
        t0 = time.perf_counter()
        ours = run_workload("appo", budget, args.seed)
        log(f"[runtime appo] {time.perf_counter() - t0:.1f} s in all")
    argv = ["--workload", "appo", "--budget", str(budget), "--seed", str(args.seed)]
    ray = run_ray_isolated(argv, budget * 2 + 300) if args.only != "runtime" else None
    print(render(ours, ray, APPO_ROWS))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
