"""Tune benchmark, side by side: this runtime's Tune and Ray Tune 2.60, same workloads.

Four workloads, each timed from the experiment's start to its results (cluster start-up
excluded), best of ``--repeat`` runs:

- 100 trivial trials, one report each (the per-trial overhead of the controller);
- 20 trials x 50 iterations under ASHA (the per-result round trip and a scheduler; ASHA's
  decisions depend on the order results arrive, so the last column shows how many results
  each side ran in all);
- the same 20 x 50 without a scheduler (FIFO: exactly 1,000 results on both sides);
- 50 OptunaSearch trials on a 2-D quadratic (a searcher in the loop, TPE).

Both clusters get 2 CPUs and trials ask for 1 CPU each (Ray's default), so two trials run
at a time; both reuse trial actors (``reuse_actors=True`` is set for Ray). The Ray half
runs in a child process inside a network namespace where only loopback is up
(``unshare -n``); without Ray, only this runtime's column is printed.

Usage (from the repository root)::

    .venv/bin/python benchmarks/tune.py           # both halves, about 2-4 minutes
    .venv/bin/python benchmarks/tune.py --quick   # one run per workload
    .venv/bin/python benchmarks/tune.py --only runtime
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

NUM_CPUS = 2
CHILD_ENV = "RUNTIME_BENCH_TUNE_RAY_CHILD"
WORKLOADS = [
    ("100 trivial trials", 100),
    ("20 trials x 50 iterations, ASHA", 20),
    ("20 trials x 50 iterations, FIFO", 20),
    ("50 OptunaSearch trials, quadratic", 50),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- trainables


def make_trainables(report: Callable[[dict[str, Any]], None]) -> dict[str, Callable[..., Any]]:
    def trivial(config: dict[str, Any]) -> None:
        report({"score": config["x"]})

    def curve(config: dict[str, Any]) -> None:
        for t in range(1, 51):
            report({"score": config["q"] * t})

    def quadratic(config: dict[str, Any]) -> None:
        report({"loss": (config["x"] - 3) ** 2 + (config["y"] + 1) ** 2})

    return {"trivial": trivial, "curve": curve, "quadratic": quadratic}


# --------------------------------------------------------------------------- the two halves


def _iterations_ours(grid: Any) -> int:
    return sum(int(r.metrics.get("training_iteration", 0)) for r in grid)


def run_ours(storage: str) -> dict[str, Callable[[], int]]:
    import runtime
    from runtime import tune

    runtime.init(num_cpus=NUM_CPUS)
    fns = make_trainables(tune.report)

    def trivial() -> int:
        grid = tune.run(
            fns["trivial"], config={"x": tune.uniform(0, 1)}, num_samples=100,
            storage_path=storage, verbose=0,
        )  # fmt: skip
        return _iterations_ours(grid)

    def asha() -> int:
        grid = tune.run(
            fns["curve"], config={"q": tune.uniform(0, 1)}, num_samples=20,
            metric="score", mode="max",
            scheduler=tune.ASHAScheduler(max_t=50, grace_period=1, reduction_factor=4),
            storage_path=storage, verbose=0,
        )  # fmt: skip
        return _iterations_ours(grid)

    def fifo() -> int:
        grid = tune.run(
            fns["curve"], config={"q": tune.uniform(0, 1)}, num_samples=20,
            storage_path=storage, verbose=0,
        )  # fmt: skip
        return _iterations_ours(grid)

    def optuna() -> int:
        grid = tune.run(
            fns["quadratic"], config={"x": tune.uniform(-5, 10), "y": tune.uniform(-5, 5)},
            num_samples=50, metric="loss", mode="min", search_alg=tune.OptunaSearch(seed=0),
            storage_path=storage, verbose=0,
        )  # fmt: skip
        return _iterations_ours(grid)

    return dict(zip([w[0] for w in WORKLOADS], (trivial, asha, fifo, optuna), strict=True))


def run_ray(storage: str) -> dict[str, Callable[[], int]]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    fns = make_trainables(tune.report)

    def fit(fn: Any, space: dict[str, Any], **tune_config: Any) -> int:
        tuner = tune.Tuner(
            fn,
            param_space=space,
            tune_config=tune.TuneConfig(reuse_actors=True, **tune_config),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        return sum(int(r.metrics.get("training_iteration", 0)) for r in tuner.fit())

    def trivial() -> int:
        return fit(fns["trivial"], {"x": tune.uniform(0, 1)}, num_samples=100)

    def asha() -> int:
        return fit(
            fns["curve"], {"q": tune.uniform(0, 1)}, num_samples=20, metric="score",
            mode="max", scheduler=ASHAScheduler(max_t=50, grace_period=1, reduction_factor=4),
        )  # fmt: skip

    def fifo() -> int:
        return fit(fns["curve"], {"q": tune.uniform(0, 1)}, num_samples=20)

    def optuna() -> int:
        return fit(
            fns["quadratic"], {"x": tune.uniform(-5, 10), "y": tune.uniform(-5, 5)},
            num_samples=50, metric="loss", mode="min", search_alg=OptunaSearch(seed=0),
        )  # fmt: skip

    return dict(zip([w[0] for w in WORKLOADS], (trivial, asha, fifo, optuna), strict=True))


def measure(backend: str, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-tune-{backend}-") as storage:
        workloads = run_ours(storage) if backend == "runtime" else run_ray(storage)
        for name, fn in workloads.items():
            times = []
            try:
                for _ in range(repeat):
                    start = time.perf_counter()
                    results_seen = fn()  # results reported, summed over trials
                    times.append(time.perf_counter() - start)
                results[name] = {"seconds": min(times), "results": results_seen}
                log(f"[{backend}] {name}: {min(times):.2f} s")
            except Exception as exc:  # one failed workload does not hide the others
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"[{backend}] {name}: error {exc!r}")
    return {"backend": backend, "results": results}


def run_ray_isolated(repeat: int) -> dict[str, Any]:
    """The Ray half in a child process inside a loopback-only network namespace."""
    if importlib.util.find_spec("ray") is None:
        return {"backend": "ray", "skipped": "ray is not importable"}
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return {"backend": "ray", "skipped": "`unshare` or `ip` not found: cannot isolate Ray"}
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    with tempfile.TemporaryDirectory(prefix="bench-tune-ray-") as tmp:
        out = os.path.join(tmp, "ray.json")
        cmd = [
            *prefix, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
            sys.executable, os.path.abspath(__file__), "--only", "ray", "--json", out,
            "--repeat", str(repeat),
        ]  # fmt: skip
        env = dict(
            os.environ,
            **{
                CHILD_ENV: "1",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AIR_NEW_OUTPUT": "0",
                "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
            },
        )
        try:
            subprocess.run(cmd, env=env, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            return {"backend": "ray", "skipped": "the Ray half ran past 600 s"}
        if not os.path.exists(out):
            return {"backend": "ray", "skipped": "the Ray child wrote no results"}
        with open(out) as f:
            report: dict[str, Any] = json.load(f)
        return report


def table(ours: dict[str, Any], ray: dict[str, Any] | None) -> str:
    rows = [
        ("workload", "runtime", "Ray Tune 2.60", "ray/ours", "ms/trial ours", "ms/trial ray",
         "results ours/ray"),
    ]  # fmt: skip
    for name, trials in WORKLOADS:
        mine = ours["results"].get(name, {})
        theirs = (ray or {}).get("results", {}).get(name, {})
        a, b = mine.get("seconds"), theirs.get("seconds")
        rows.append(
            (
                name,
                f"{a:.2f} s" if a is not None else mine.get("error", "-"),
                f"{b:.2f} s" if b is not None else theirs.get("error", "-"),
                f"{b / a:.1f}x" if a and b else "-",
                f"{1000 * a / trials:.1f}" if a else "-",
                f"{1000 * b / trials:.1f}" if b else "-",
                f"{mine.get('results', '-')}/{theirs.get('results', '-')}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if ray is not None and "skipped" in ray:
        lines.append(f"(Ray column skipped: {ray['skipped']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run per workload")
    parser.add_argument("--repeat", type=int, default=None, help="runs per workload (best)")
    parser.add_argument("--only", choices=("runtime", "ray"), default=None)
    parser.add_argument("--json", default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.only == "ray":
        report = measure("ray", repeat)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f)
        return 0
    ours = measure("runtime", repeat)
    ray = None if args.only == "runtime" else run_ray_isolated(repeat)
    print(table(ours, ray))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runtime": ours, "ray": ray}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
